"""Sparse decode from disk: each FFN reads only its predicted-active neuron bundles.

With neuron predictors (`--predictors`, issue 6) and a memory budget, the FFN weights leave the
layer stream: per token and layer the predictor picks the neurons, and `NeuronStore.fetch` finds
their bundles (`bundles.py`) in one of three places:

- pinned: the hottest neurons by the sparsity profile's activation frequency, resident for good;
- the cold-neuron cache (`neuron_cache.py`), bundles read recently (LFU by default);
- the bundle file: the missing ones, in runs that join neighbours less than 32 KB apart, cut into
  requests of at most 1 MiB and read in parallel with O_DIRECT into a staging buffer.

It assembles them into one layer's working buffers: the active rows of gate and up (plain GGML
rows, so the ordinary GEMV reads them) and the active channels of a column-layout down (written
into a layer-sized record buffer whose other channels are never read), then the FFN computes exactly
what the in-memory `PredictedFFN` computes (tests/tiers/test_neurons.py checks the logits). Prefill
(many tokens) fetches every neuron of the layer, as the in-memory model computes prefill densely.

The budget pays for the attention/head plan first (each of those bytes is read every token), then
the down scales and working buffers, then splits what is left between pinned neurons and the cache
(`plan_neurons`).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from .. import kernels
from ..kernels import sparse
from ..models.layers import DenseFFN
from ..sparsity.predictor import PredictedFFN, Predictor
from ..weights.quant import GGMLType
from ..weights.tensor import QuantTensor
from .budget import Accounting, fmt_size
from .bundles import LayerBundles, aligned_run, down_weight, runs
from .neuron_cache import NeuronCache
from .storage import ALIGN, AlignedBuffer, ModelFile

STAGING_BYTES = 16 << 20  # read staging: runs are read into it in batches
REQUEST_BYTES = 1 << 20  # longest single read request
READERS = 8  # requests in flight (this virtual disk serves 8 small requests ~3x faster than 1)
CACHE_SHARE = 0.5  # of the neuron memory: the cold-neuron cache (the rest pins hot neurons)


@dataclass
class NeuronPlan:
    """Which neuron bundles stay resident (plain data)."""

    layers: list[LayerBundles]
    pinned: list[list[int]]  # per layer: hot neurons kept resident
    cache: int  # cold-neuron cache: bundles per layer
    expected_active: float | None  # neurons active per token and layer (profile), if known
    expected_read: float | None  # bytes read per token for neurons, before cache hits

    @property
    def scales_bytes(self) -> int:
        return sum(x.scales_bytes for x in self.layers)

    @property
    def work_bytes(self) -> int:
        return work_bytes(self.layers)

    @property
    def pinned_bytes(self) -> int:
        return sum(len(p) * x.bundle_bytes for p, x in zip(self.pinned, self.layers, strict=True))

    @property
    def cache_bytes(self) -> int:
        return self.cache * sum(x.bundle_bytes for x in self.layers)

    @property
    def resident_bytes(self) -> int:
        return self.scales_bytes + self.work_bytes + self.pinned_bytes + self.cache_bytes

    def summary(self) -> str:
        n = sum(x.neurons for x in self.layers)
        pinned = sum(len(p) for p in self.pinned)
        text = (
            f"neurons: {pinned} of {n} pinned ({fmt_size(self.pinned_bytes)}), cache of {self.cache} bundles "
            f"per layer ({fmt_size(self.cache_bytes)}), down scales {fmt_size(self.scales_bytes)}, working "
            f"buffers {fmt_size(self.work_bytes)}"
        )
        if self.expected_read is not None:
            text += (
                f"; ~{self.expected_active:.0f} active per layer and token (profile): "
                f"reads <= {fmt_size(self.expected_read)}/token before cache hits"
            )
        return text


def work_bytes(layers: list[LayerBundles]) -> int:
    """Gate rows, up rows and down records of a whole layer (every neuron active: prefill), plus
    the read staging."""
    if not layers:
        return 0
    n = max(x.neurons for x in layers)
    widest = (
        max(x.gate_bytes for x in layers)
        + max(x.up_bytes for x in layers)
        + max(x.down_bytes for x in layers)
    )
    return n * widest + _staging_bytes(layers)


def _batch_bytes(layers: list[LayerBundles]) -> int:
    """Bytes of one batch of reads: STAGING_BYTES, or less for a small model (a whole layer)."""
    biggest = max(REQUEST_BYTES, max(x.nbytes for x in layers))
    return min(STAGING_BYTES, biggest + 2 * ALIGN)


def _staging_bytes(layers: list[LayerBundles]) -> int:
    # the tail lets the view of a batch's last bundle run past the batch
    return _batch_bytes(layers) + max(x.bundle_bytes for x in layers)


def fixed_bytes(layers: list[LayerBundles]) -> int:
    """What neuron streaming needs before any neuron is resident."""
    return sum(x.scales_bytes for x in layers) + work_bytes(layers)


def plan_neurons(
    layers: list[LayerBundles], room: int, freq: torch.Tensor | None, cache_share: float = CACHE_SHARE
) -> NeuronPlan:
    """Spend `room` bytes on neurons: without a profile all on the cache; with one, the hottest
    neurons (activation frequency, across layers) pinned with (1 - cache_share) of it."""
    room = max(0, room)
    per_layer = sum(x.bundle_bytes for x in layers)
    pinned: list[list[int]] = [[] for _ in layers]
    expected_active = expected_read = None
    if freq is not None and freq.shape == (len(layers), layers[0].neurons if layers else 0):
        pin_room = int(room * (1 - cache_share))
        sizes = torch.tensor([x.bundle_bytes for x in layers], dtype=torch.long)
        order = torch.argsort(freq.reshape(-1), descending=True)
        cost = sizes.repeat_interleave(layers[0].neurons)[order]
        take = order[: int((cost.cumsum(0) <= pin_room).sum())]
        for flat in sorted(take.tolist()):
            pinned[flat // layers[0].neurons].append(flat % layers[0].neurons)
        room -= sum(len(p) * x.bundle_bytes for p, x in zip(pinned, layers, strict=True))
        expected_active = float(freq.sum(1).mean())
        unpinned = freq.clone()
        for i, p in enumerate(pinned):
            unpinned[i, p] = 0
        expected_read = float((unpinned.sum(1) * sizes).sum())
    cache = room // per_layer if per_layer else 0
    most_cold = max((x.neurons - len(p) for x, p in zip(layers, pinned, strict=True)), default=0)
    return NeuronPlan(layers, pinned, min(cache, most_cold), expected_active, expected_read)


def activation_frequency(model_path: str) -> torch.Tensor | None:
    """Per layer and neuron, how often it fires (the sparsity profile's), or None without a profile."""
    from ..errors import SparsetierError
    from ..sparsity.profile import load_profile

    try:  # not hashing the model: a stale profile only makes the pinned set less hot
        return load_profile(model_path, check=False).neuron_freq
    except SparsetierError:
        return None


def _sizes_divisible(x: LayerBundles, word: int) -> bool:
    return all(n % word == 0 for n in (x.gate_bytes, x.up_bytes, x.down_bytes, x.offset))


@dataclass
class NeuronStats:
    steps: int = 0
    wanted: int = 0  # bundles decode asked for
    pinned_hits: int = 0
    cache_hits: int = 0
    read: int = 0  # bundles read from disk
    requests: int = 0
    read_s: float = 0.0


class NeuronStore:
    """Per layer: resident down scales, pinned hot bundles and a cache slab; one layer's working
    buffers shared by all layers (decode runs one layer at a time)."""

    def __init__(
        self,
        path: str,
        plan: NeuronPlan,
        accounting: Accounting,
        policy: str = "lfu",
    ):
        self.plan, self.layers = plan, plan.layers
        self.file = ModelFile(path)
        self.stats = NeuronStats()
        n = max(x.neurons for x in self.layers)
        self.cache = NeuronCache(len(self.layers), n, plan.cache, policy)
        self._pool = ThreadPoolExecutor(READERS, thread_name_prefix="neurons")
        try:
            accounting.reserve("neuron working buffers", plan.work_bytes)
            self._batch = _batch_bytes(self.layers)
            self.staging = AlignedBuffer(_staging_bytes(self.layers))
            # copies move words, not bytes (8x fewer elements): every size and offset is a multiple
            self._word = next(w for w in (8, 4, 2, 1) if all(_sizes_divisible(x, w) for x in self.layers))
            self._wtype = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.uint8}[self._word]
            widest = max(x.bundle_bytes for x in self.layers) // self._word
            self._staged = self.staging.tensor.view(self._wtype).unfold(0, widest, 1)
            self._gate = torch.empty(n * max(x.gate_bytes for x in self.layers), dtype=torch.uint8)
            self._up = torch.empty(n * max(x.up_bytes for x in self.layers), dtype=torch.uint8)
            self._down = torch.zeros(n * max(x.down_bytes for x in self.layers), dtype=torch.uint8)
            accounting.reserve("down scales", plan.scales_bytes)
            self.scales = []
            for x in self.layers:
                buf = torch.empty(x.scales_bytes, dtype=torch.uint8)
                self.file.read(x.scales_offset, memoryview(buf.numpy()))
                self.scales.append(buf.view(x.scale_units, -1))
            accounting.reserve("pinned neurons", plan.pinned_bytes)
            accounting.reserve("neuron cache", plan.cache_bytes)
            self.slabs, self.pinned_slot = [], []
            for x, hot in zip(self.layers, plan.pinned, strict=True):
                slab = torch.empty(len(hot) + plan.cache, x.bundle_bytes, dtype=torch.uint8)
                where = torch.full((x.neurons,), -1, dtype=torch.long)
                ids = torch.tensor(hot, dtype=torch.long)
                where[ids] = torch.arange(len(hot))
                for pos, rows in self._read(x, ids):
                    slab.view(self._wtype)[pos] = rows
                self.slabs.append(slab)
                self.pinned_slot.append(where)
            self.file.drop_scratch()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.file.close()

    # -- reading ------------------------------------------------------------------------

    def _read(self, layer: LayerBundles, neurons: torch.Tensor):
        """Yield (positions in `neurons`, their bundles [m, bundle_bytes / word] as words) for sorted
        `neurons`, read from the file in batches that fit the staging buffer."""
        if neurons.numel() == 0:
            return
        bb = layer.bundle_bytes
        per_request = max(1, REQUEST_BYTES // bb)
        pieces = []  # (first, end) of each request, in neuron order
        for first, end in runs(neurons, bb):
            pieces += [(a, min(end, a + per_request)) for a in range(first, end, per_request)]
        batch: list[tuple[int, int, int, int, int]] = []  # (first, end, file offset, length, at)
        used = 0
        for first, end in pieces:
            start, length, inner = aligned_run(layer, first, end)
            if batch and used + length > self._batch:
                yield from self._flush(layer, neurons, batch)
                batch, used = [], 0
            batch.append((first, end, start, length, used + inner))
            used += length
        yield from self._flush(layer, neurons, batch)

    def _flush(self, layer: LayerBundles, neurons: torch.Tensor, batch: list):
        t0 = time.perf_counter()
        view = self.staging.view
        at = 0
        futures = []
        for _, _, start, length, _ in batch:
            futures.append(self._pool.submit(self.file.read_aligned, start, view[at : at + length]))
            at += length
        for f in futures:
            f.exception()
        for f in futures:
            f.result()
        self.stats.requests += len(batch)
        self.stats.read_s += time.perf_counter() - t0
        # requests cover consecutive stretches of `neurons`, in order: one vector op for all
        first = torch.tensor([b[0] for b in batch])
        inner = torch.tensor([b[4] for b in batch])
        lo = torch.searchsorted(neurons, first)
        hi = torch.searchsorted(neurons, torch.tensor([b[1] for b in batch]))
        request = torch.repeat_interleave(torch.arange(len(batch)), hi - lo)
        pos_t = torch.arange(int(lo[0]), int(hi[-1]))
        offs_t = inner[request] + (neurons[pos_t] - first[request]) * layer.bundle_bytes
        self.stats.read += pos_t.numel()
        yield pos_t, self._staged[offs_t // self._word, : layer.bundle_bytes // self._word]

    # -- what the FFN asks for ----------------------------------------------------------

    def fetch(
        self, layer: int, neurons: torch.Tensor, decode: bool = True
    ) -> tuple[QuantTensor, QuantTensor, sparse.ColumnWeight]:
        """Gate rows, up rows (as [k, dim] weights) and a down ColumnWeight holding the channels
        `neurons` (sorted int64) of one layer. `decode=False` (prefill) leaves the cache as it is."""
        x = self.layers[layer]
        k = neurons.numel()
        gate = self._gate[: k * x.gate_bytes].view(k, x.gate_bytes)
        up = self._up[: k * x.up_bytes].view(k, x.up_bytes)
        down = down_weight(x, self._down[: x.neurons * x.down_bytes], self.scales[layer])

        w, wt = self._word, self._wtype
        g, u = x.gate_bytes // w, x.up_bytes // w

        def put(pos: torch.Tensor, rows: torch.Tensor) -> None:  # rows: bundles in words
            gate.view(wt)[pos] = rows[:, :g]
            up.view(wt)[pos] = rows[:, g : g + u]
            sparse.put_channel_records(down, neurons[pos], rows[:, g + u :])

        if layer == 0:  # once per pass: the bundle file must still be the one we opened
            self.file.check_unchanged()
        slab = self.slabs[layer].view(wt)
        n_pinned = len(self.plan.pinned[layer])
        where = self.pinned_slot[layer][neurons]
        cold = (where < 0).nonzero().squeeze(1)
        if decode:
            self.stats.steps += 1
            self.stats.wanted += k
            self.stats.pinned_hits += k - cold.numel()
            cached = self.cache.lookup(layer, neurons[cold])
            hit = cached >= 0
            where[cold[hit]] = cached[hit] + n_pinned
            self.stats.cache_hits += int(hit.sum())
        else:  # prefill: use what the cache holds, but do not count it as use
            cached = self.cache.slot[layer, neurons[cold]]
            hit = cached >= 0
            where[cold[hit]] = cached[hit] + n_pinned
        present = (where >= 0).nonzero().squeeze(1)
        if present.numel():
            put(present, slab[where[present]])
        missing = (where < 0).nonzero().squeeze(1)
        for pos, rows in self._read(x, neurons[missing]):
            put(missing[pos], rows)
            if decode:
                admitted, slots = self.cache.admit(layer, neurons[missing[pos]], neurons)
                if admitted.numel():
                    slab[slots + n_pinned] = rows[: admitted.numel()]
        name = f"blk.{layer}.ffn_"
        return (
            QuantTensor(name + "gate.weight", GGMLType(x.gate_type), (k, x.dim), gate),
            QuantTensor(name + "up.weight", GGMLType(x.up_type), (k, x.dim), up),
            down,
        )

    def report(self) -> dict[str, float]:
        s = self.stats
        cold = s.wanted - s.pinned_hits
        return {
            "neuron_steps": s.steps,
            "neurons_per_step": s.wanted / s.steps if s.steps else 0.0,
            "pinned_hit_rate": s.pinned_hits / s.wanted if s.wanted else 0.0,
            "cache_hit_rate": s.cache_hits / cold if cold else 0.0,
            "bundles_read": s.read,
            "neuron_disk_bytes": self.file.bytes_read,
            "neuron_requests": s.requests,
            "neuron_read_s": s.read_s,
        }


class StreamedNeuronFFN(PredictedFFN):
    """`PredictedFFN` whose weights come from a NeuronStore instead of memory."""

    def __init__(self, ffn: DenseFFN, predictor: Predictor, store: NeuronStore, layer: int):
        super().__init__(ffn, predictor, columns=False)  # the FFN's own tensors are placeholders
        self.store, self.layer = store, layer
        self.neurons = store.layers[layer].neurons

    def _compute(self, x: torch.Tensor, idx: torch.Tensor, decode: bool) -> torch.Tensor:
        gate, up, down = self.store.fetch(self.layer, idx, decode)
        g, u = kernels.linear_multi(x, [gate, up])
        h = self._act(g, u)
        full = torch.zeros(*h.shape[:-1], self.neurons)
        full[..., idx] = h
        return sparse.col_linear(full, down, index=idx)

    def _row(self, x: torch.Tensor) -> torch.Tensor:
        idx = self.predictor.predict(x)[0].nonzero().squeeze(1)
        self.seen += self.neurons
        self.computed += idx.numel()
        if idx.numel() == 0:
            return torch.zeros(self.store.layers[self.layer].dim)
        return self._compute(x, idx, True)[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        cols = x.shape[-1]
        if x.numel() > kernels.PREFILL_MIN_TOKENS * cols:  # prefill: every neuron, like PredictedFFN
            rows = x.reshape(-1, cols)
            out = self._compute(rows, torch.arange(self.neurons), False)
            return out.reshape(*x.shape[:-1], out.shape[-1])
        return super().__call__(x)
