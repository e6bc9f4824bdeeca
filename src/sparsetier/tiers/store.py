"""Tiered weights under a memory budget: plan, load the resident part, stream the rest.

`TieredWeights.load(source, budget)` runs before the model is built: it plans the placement,
reads the pinned weights into memory it owns (never through the page cache), points every streamed
tensor at a placeholder, and starts the reader. `install(model)` runs after: it replaces
`model.blocks` by a sequence that streams as the model iterates, swaps split weights for
`SplitWeight`s, and the head and embedding for their streamed stand-ins. The model files are not
changed: any model with `blocks`, `embed` and `output` attributes works.
"""

from __future__ import annotations

import dataclasses
import math
import mmap
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import SparsetierError
from ..progress import byte_bar
from ..sparsity.predictor import Predictor
from ..weights.tensor import FileRegion, QuantTensor
from .budget import Accounting, fmt_size, parse_size
from .bundles import FFN_NAMES, bundles_path, prepare_bundles
from .limit import LimitBudget
from .neurons import (
    NeuronPlan,
    NeuronStore,
    StreamedNeuronFFN,
    activation_frequency,
    fixed_bytes,
    plan_neurons,
)
from .plan import EMBED, HEAD, BudgetTooSmall, Piece, Plan, TensorInfo, layer_of, make_plan
from .prefetch import Prefetcher
from .storage import ModelFile, drop_page_cache
from .streamed import DiskRows, SplitWeight, StreamedBlocks, StreamedHead, UnitBinding, placeholder


def tensor_infos(weights: dict[str, QuantTensor]) -> list[TensorInfo]:
    """The planner's view of a model's tensors (each must know its file region)."""
    out = []
    for name, t in weights.items():
        if t.source is None:
            raise SparsetierError("--memory-budget needs a GGUF model file (weights with a file region)")
        matrix = len(t.shape) >= 2
        rows = math.prod(t.shape[:-1]) if matrix else 1
        out.append(TensorInfo(name, t.source.offset, t.source.nbytes, rows, layer_of(name), matrix))
    return out


@dataclass
class _Parts:
    """One tensor's pieces after loading: pinned ones with their data, streamed ones bound later."""

    tensor: QuantTensor
    pinned: list[tuple[int, int, QuantTensor]]
    streamed: list[tuple[int, int, QuantTensor, Piece, int]]  # (row0, row1, part, piece, unit index)


class TieredWeights:
    def __init__(self, plan: Plan, file: ModelFile, accounting: Accounting, parts: dict[str, _Parts]):
        self.plan, self.file, self.accounting, self.parts = plan, file, accounting, parts
        self.stream: Prefetcher | None = None
        self.bindings: dict[int, UnitBinding] = {}
        self.embed_rows: DiskRows | None = None
        self.limit: LimitBudget | None = None  # how a process memory limit became the budget, if one did
        self.neurons: NeuronStore | None = None  # FFN neuron bundles, when neurons stream
        self.predictors: list[Predictor] | None = None

    @classmethod
    def load(
        cls,
        source: Any,
        budget: int | str,
        *,
        slots: int = 2,
        progress: bool = False,
        predictors: list[Predictor] | None = None,
        cache_policy: str = "lfu",
    ) -> TieredWeights:
        """Plan `source` (a weights.loader.ModelSource) under `budget` (bytes, "1G", "25%") and
        load its resident part. With `predictors` (one per layer) the FFNs stream as neuron
        bundles, only the predicted-active ones per token (`neurons.py`)."""
        weights: dict[str, QuantTensor] = source.weights
        held = sum(p.fc1.nbytes + p.fc2.nbytes for p in predictors or [])  # they count as weights
        plan, neuron_plan = plan_tiers(
            source,
            budget,
            slots=slots,
            neurons=predictors is not None,
            progress=progress,
            predictor_bytes=held,
        )
        budget_bytes = plan.budget
        end = max(w.source.offset + w.source.nbytes for w in weights.values())  # plan_tiers checked them
        file = ModelFile(source.path, end=end)
        accounting = Accounting(budget_bytes)
        try:
            parts = _load_pinned(plan, weights, file, accounting, progress)
            store = cls(plan, file, accounting, parts)
            if plan.units:
                accounting.reserve("stream buffers", plan.stream_buffer_bytes)
                store.stream = Prefetcher(file, plan.units, plan.slot_bytes, plan.slots)
            store._bind_units()
            if neuron_plan is not None:
                accounting.reserve("neuron predictors", held)
                path = bundles_path(source.path)
                store.neurons = NeuronStore(path, neuron_plan, accounting, cache_policy)
                store.predictors = predictors
        except BaseException:
            file.close()
            raise
        file.drop_scratch()
        _drop_mapped_pages(source)
        return store

    def _bind_units(self) -> None:
        targets: dict[int, list[tuple[QuantTensor, Piece]]] = {}
        for p in self.parts.values():
            for _, _, part, piece, k in p.streamed:
                targets.setdefault(k, []).append((part, piece))
        self.bindings = {k: UnitBinding(self.plan.units[k], ts) for k, ts in targets.items()}

    # -- installing into a built model --------------------------------------------------

    def install(self, model: Any) -> None:
        """Make `model` use the tiers: streamed blocks, split weights, streamed head/embedding,
        and FFNs that read their predicted neurons from the neuron store."""
        if self.neurons is not None:
            for i, (blk, pred) in enumerate(zip(model.blocks, self.predictors, strict=True)):
                blk.ffn = StreamedNeuronFFN(blk.ffn, pred, self.neurons, i)
        for p in self.parts.values():
            if len(p.pinned) + len(p.streamed) > 1 and p.tensor.name not in (EMBED, HEAD):
                _replace_everywhere(model.blocks, p.tensor, self._split(p))
        layer_bindings = {u.layer: self.bindings[u.index] for u in self.plan.units if u.layer is not None}
        if layer_bindings:
            model.blocks = StreamedBlocks(list(model.blocks), layer_bindings, self.stream)
        head_name = EMBED if self.plan.tied else HEAD
        head = self.parts.get(head_name)
        # in row chunks (some streamed, or all pinned but in pieces): the tensor itself is a placeholder
        if head is not None and (head.streamed or len(head.pinned) > 1):
            model.output = StreamedHead(
                head_name,
                head.tensor.shape,
                head.pinned,
                [(r0, r1, part, self.bindings[k]) for r0, r1, part, _, k in head.streamed],
                self.stream,
            )
        embed = self.parts.get(EMBED)
        if embed is not None and (embed.streamed or len(embed.pinned) > 1 or self.plan.embed_on_demand):
            t = embed.tensor
            src = t.source
            self.embed_rows = DiskRows(
                EMBED, t.qtype, t.shape, src.offset, src.nbytes // t.shape[0], self.file, embed.pinned
            )
            model.embed = self.embed_rows

    def _split(self, p: _Parts) -> SplitWeight:
        rows = sorted(
            [(r0, r1, w) for r0, r1, w in p.pinned] + [(r0, r1, w) for r0, r1, w, _, _ in p.streamed]
        )
        return SplitWeight(p.tensor.name, p.tensor.shape, rows)

    # -- reporting ----------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """Resident bytes per tier and what has streamed so far (plain data)."""
        plan = self.plan
        stats = self.stream.stats if self.stream else None
        return {
            "budget_bytes": plan.budget,
            "resident_bytes": self.accounting.resident,
            "tiers": dict(self.accounting.tiers),
            "weight_bytes": plan.weight_bytes,
            "streamed_bytes_per_token": plan.streamed_bytes_per_token,
            "disk_bytes_read": self.file.bytes_read,
            "disk_reads": self.file.reads,
            "units_streamed": stats.units if stats else 0,
            "stream_wait_s": stats.wait_s if stats else 0.0,
            "stream_read_s": stats.read_s if stats else 0.0,
            "direct_io": self.file.direct,
            "limit": dataclasses.asdict(self.limit) if self.limit else None,
            "neurons": self.neurons.report() if self.neurons else None,
        }

    def summary(self) -> str:
        r = self.report()
        tiers = ", ".join(f"{k} {fmt_size(v)}" for k, v in r["tiers"].items() if v)
        lim = self.limit
        origin = (
            f" (memory limit {fmt_size(lim.limit)} less {fmt_size(lim.held)} held, KV cache "
            f"{fmt_size(lim.kv)}, working buffers {fmt_size(lim.work)}, margin {fmt_size(lim.margin)})"
            if lim
            else ""
        )
        return (
            f"memory budget {fmt_size(r['budget_bytes'])}{origin}: "
            f"resident {fmt_size(r['resident_bytes'])} ({tiers}); "
            f"streams {fmt_size(r['streamed_bytes_per_token'])}/token of {fmt_size(r['weight_bytes'])} "
            f"(read so far {fmt_size(r['disk_bytes_read'])}, waited {r['stream_wait_s']:.2f} s for reads)"
            + (f"; {self.neurons.plan.summary()}" if self.neurons else "")
        )

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
        if self.neurons is not None:
            self.neurons.close()
        self.file.close()


def plan_tiers(
    source: Any,
    budget: int | str,
    *,
    slots: int = 2,
    neurons: bool = False,
    progress: bool = False,
    predictor_bytes: int = 0,
) -> tuple[Plan, NeuronPlan | None]:
    """The placement of a model under `budget`: the layer/head plan and, with `neurons`, which
    FFN neuron bundles stay resident (writing the bundle file first if needed; the predictors'
    `predictor_bytes` come out of the budget too)."""
    infos = tensor_infos(source.weights)
    total = sum(t.nbytes for t in infos)
    budget_bytes = parse_size(budget, whole=total)
    layout, fixed = None, 0
    if neurons:
        layout = prepare_bundles(source, progress)
        ffn = {f"blk.{x.layer}.{n}.weight" for x in layout for n in FFN_NAMES}
        infos = [t for t in infos if t.name not in ffn]  # the FFNs leave the layer stream
        fixed = fixed_bytes(layout) + predictor_bytes
    try:
        plan = make_plan(infos, max(0, budget_bytes - fixed), tied=source.config.tie_embeddings, slots=slots)
    except BudgetTooSmall as e:
        if not fixed:
            raise
        extra = f", plus {fmt_size(fixed)} of down scales, neuron working buffers and predictors"
        raise BudgetTooSmall(budget_bytes, e.minimum + fixed, e.detail + extra) from None
    plan.weight_bytes, plan.budget, plan.minimum_budget = total, budget_bytes, plan.minimum_budget + fixed
    if layout is None:
        return plan, None
    room = budget_bytes - fixed - plan.resident_bytes
    return plan, plan_neurons(layout, room, activation_frequency(source.path))


def _load_pinned(
    plan: Plan, weights: dict[str, QuantTensor], file: ModelFile, accounting: Accounting, progress: bool
) -> dict[str, _Parts]:
    """Read every pinned piece into memory we own; point streamed tensors at placeholders."""
    pieces: dict[str, list[tuple[Piece, int | None]]] = {}
    for p in plan.pinned:
        pieces.setdefault(p.tensor, []).append((p, None))
    for u in plan.units:
        for p in u.pieces:
            pieces.setdefault(p.tensor, []).append((p, u.index))
    parts: dict[str, _Parts] = {}
    with byte_bar(plan.pinned_bytes, "loading", progress) as bar:
        for name, t in weights.items():
            mine = sorted(pieces.get(name, []), key=lambda pu: pu[0].row0)
            if not mine:  # an untied embedding read on demand: never resident
                t.data = placeholder(t.data)
                parts[name] = _Parts(t, [], [])
                continue
            whole = len(mine) == 1
            entry = _Parts(t, [], [])
            for piece, unit in mine:
                rows = piece.row1 - piece.row0
                shape = t.data.shape if whole else (rows, t.data.shape[-1])
                part = t
                if not whole:
                    region = FileRegion(file.path, piece.offset, piece.nbytes)
                    label = f"{name}[{piece.row0}:{piece.row1}]"
                    part = QuantTensor(label, t.qtype, (rows, *t.shape[1:]), t.data, region)
                if unit is None:
                    accounting.reserve("pinned", piece.nbytes)
                    buf = torch.empty(piece.nbytes, dtype=torch.uint8)
                    file.read(piece.offset, memoryview(buf.numpy()))
                    part.data = buf.view(t.data.dtype).view(shape)
                    entry.pinned.append((piece.row0, piece.row1, part))
                    bar.update(piece.nbytes)
                else:
                    part.data = torch.zeros(1, dtype=t.data.dtype).expand(shape)  # see streamed.placeholder
                    entry.streamed.append((piece.row0, piece.row1, part, piece, unit))
            if not whole:  # the parts hold the rows now; the tensor itself must not be used
                t.data = placeholder(t.data)
            parts[name] = entry
    return parts


def _drop_mapped_pages(source: Any) -> None:
    """Opening a GGUF faults in its header through the memory map, and the kernel reads ahead
    around it (16 MB here): unmap those pages and evict them, so the page cache holds nothing of
    the model (the metadata pages come back on demand if anything reads them later)."""
    gguf = getattr(source, "gguf", None)
    mapping = getattr(getattr(gguf, "reader", None), "data", None)
    mm = getattr(mapping, "_mmap", None)  # numpy's memmap keeps the mmap object here
    if mm is not None and hasattr(mm, "madvise"):
        mm.madvise(mmap.MADV_DONTNEED)
    drop_page_cache(source.path)


def _replace_everywhere(blocks: Any, old: QuantTensor, new: Any) -> None:
    """Swap `old` for `new` wherever a block (or a part of a block, such as its FFN) holds it."""
    found = False
    for blk in blocks:
        for holder in (blk, *(v for v in vars(blk).values() if hasattr(v, "__dict__"))):
            for k, v in vars(holder).items():
                if v is old:
                    setattr(holder, k, new)
                    found = True
    if not found:
        raise SparsetierError(f"cannot place {old.name}: no block holds it")
