"""Neuron bundles on disk: each FFN neuron's gate row, up row and down column in one record.

Sparse decode needs, per layer, only the predicted-active neurons of the FFN. In the GGUF file a
neuron's weights are three pieces far apart (a row of gate, a row of up, and a column of down that
is spread over every row of down), so reading one neuron would take three requests, one of them
thousands of scattered bytes. LLM in a flash bundles them: this file holds, per layer, one record
per neuron, in neuron order:

    [gate row (GGML blocks) | up row (GGML blocks) | down column (the column layout's record)]

The down column is the column layout of `kernels/sparse.py` (csrc/sparse.cpp), taken apart per
channel: lossless (same quants), and what the column kernels read for an active channel. Its
scales (one per output and unit of 32 or 256 neurons) are shared by many neurons, so they are kept
per layer beside the bundles and stay resident. Active neurons with small gaps between them are
read as one request (`runs`): on this machine's virtual disk a request costs about as much time as
reading 40 KB (docs/tiers.md).

The file lives beside the model (X.gguf -> X.bundles), is made once (`write_bundles`, with a
progress bar) and is remade when the model file's size or modification time changes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import torch

from ..errors import SparsetierError
from ..kernels import sparse
from ..progress import byte_bar
from ..weights.quant import GGMLType
from ..weights.tensor import QuantTensor
from .storage import ALIGN, align_up, drop_page_cache

MAGIC = b"STBUNDL1"
VERSION = 1
HEADER_BYTES = 1 << 16  # magic, length, JSON; the layers start after it
GAP_BYTES = 32 << 10  # read through gaps up to this size rather than issue another request
FFN_NAMES = ("ffn_gate", "ffn_up", "ffn_down")


@dataclass(frozen=True)
class LayerBundles:
    """Where one layer's bundles are and how a bundle is cut."""

    layer: int
    neurons: int
    dim: int
    gate_type: int
    up_type: int
    down_type: int
    gate_bytes: int  # bytes of one gate row
    up_bytes: int
    down_bytes: int  # bytes of one down column record
    scales_offset: int  # file offset of the down scales (uint8 [scale_units, -1])
    scale_units: int
    scales_bytes: int
    offset: int  # file offset of neuron 0's bundle

    @property
    def bundle_bytes(self) -> int:
        return self.gate_bytes + self.up_bytes + self.down_bytes

    @property
    def nbytes(self) -> int:
        return self.neurons * self.bundle_bytes


def bundles_path(model_path: str) -> str:
    """Beside the model: X.gguf -> X.bundles (inside a Hugging Face folder: bundles.bin)."""
    if os.path.isdir(model_path):
        return os.path.join(model_path, "bundles.bin")
    return os.path.splitext(model_path)[0] + ".bundles"


def _identity(model_path: str) -> dict[str, int]:
    st = os.stat(model_path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def ffn_weights(weights: dict[str, QuantTensor], layer: int) -> tuple[QuantTensor, QuantTensor, QuantTensor]:
    return tuple(weights[f"blk.{layer}.{n}.weight"] for n in FFN_NAMES)  # type: ignore[return-value]


def supports(weights: dict[str, QuantTensor], n_layers: int) -> str | None:
    """Why the FFNs cannot be bundled, or None."""
    for i in range(n_layers):
        gate, up, down = ffn_weights(weights, i)
        for w in (gate, up):
            if not w.is_quantized:
                return f"{w.name} is {w.qtype.name}: neuron bundles need block-quantized gate and up"
        if not sparse.supports(down):
            return f"{down.name}: no column layout for {down.qtype.name} {list(down.shape)}"
    return None


def write_bundles(
    weights: dict[str, QuantTensor], n_layers: int, model_path: str, progress: bool = False
) -> str:
    """Write the bundle file of a model; returns its path."""
    why = supports(weights, n_layers)
    if why:
        raise SparsetierError(f"cannot stream neurons: {why}")
    path = bundles_path(model_path)
    tmp = path + ".tmp"
    total = sum(sum(w.nbytes for w in ffn_weights(weights, i)) for i in range(n_layers))
    layers = []
    try:
        with open(tmp, "wb") as f, byte_bar(total, "neuron bundles", progress) as bar:
            f.write(b"\0" * HEADER_BYTES)
            for i in range(n_layers):
                gate, up, down = ffn_weights(weights, i)
                cols = sparse.to_columns(down)
                scales = cols.scales.reshape(-1)
                downs = sparse.channel_records(cols)
                g = gate.data.reshape(gate.shape[0], -1)
                u = up.data.reshape(up.shape[0], -1)
                scales_at = f.tell()
                f.write(scales.numpy().tobytes())
                f.write(b"\0" * (align_up(f.tell()) - f.tell()))
                at = f.tell()
                f.write(torch.cat([g, u, downs], dim=1).numpy().tobytes())
                f.write(b"\0" * (align_up(f.tell()) - f.tell()))
                layers.append(
                    LayerBundles(
                        layer=i,
                        neurons=gate.shape[0],
                        dim=gate.shape[1],
                        gate_type=int(gate.qtype),
                        up_type=int(up.qtype),
                        down_type=int(down.qtype),
                        gate_bytes=g.shape[1],
                        up_bytes=u.shape[1],
                        down_bytes=downs.shape[1],
                        scales_offset=scales_at,
                        scale_units=cols.scales.shape[0],
                        scales_bytes=scales.numel(),
                        offset=at,
                    )
                )
                bar.update(gate.nbytes + up.nbytes + down.nbytes)
            head = json.dumps(
                {"version": VERSION, "model": _identity(model_path), "layers": [asdict(x) for x in layers]}
            ).encode()
            if len(head) + 16 > HEADER_BYTES:
                raise SparsetierError("too many layers for the bundle file header")
            f.seek(0)
            f.write(MAGIC + len(head).to_bytes(8, "little") + head)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    drop_page_cache(path)  # written once, read around the page cache from now on
    return path


def read_layout(path: str, model_path: str) -> list[LayerBundles] | None:
    """The layers of a bundle file made from this model file, or None (missing, stale, other version)."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
    except OSError:
        return None
    if head[:8] != MAGIC:
        return None
    n = int.from_bytes(head[8:16], "little")
    try:
        meta = json.loads(head[16 : 16 + n])
    except ValueError:
        return None
    if meta.get("version") != VERSION or meta.get("model") != _identity(model_path):
        return None
    layers = [LayerBundles(**x) for x in meta["layers"]]
    end = max((x.offset + x.nbytes for x in layers), default=0)
    if os.path.getsize(path) < end:
        return None
    return layers


def prepare_bundles(source: object, progress: bool = False) -> list[LayerBundles]:
    """The bundle layout of a loaded model source, writing the file first if it is missing or stale."""
    path = bundles_path(source.path)
    layout = read_layout(path, source.path)
    if layout is None:
        try:
            write_bundles(source.weights, source.config.n_layers, source.path, progress)
        except OSError as e:
            raise SparsetierError(f"cannot write the neuron bundle file {path}: {e.strerror}") from None
        layout = read_layout(path, source.path)
        if layout is None:
            raise SparsetierError(f"{path}: the neuron bundle file just written does not read back")
    return layout


def runs(neurons: torch.Tensor, bundle_bytes: int, gap_bytes: int = GAP_BYTES) -> list[tuple[int, int]]:
    """Sorted neuron ids -> (first, last + 1) runs, joining neighbours less than `gap_bytes` apart."""
    if neurons.numel() == 0:
        return []
    gap = max(1, gap_bytes // bundle_bytes + 1)  # neuron-id distance that still joins
    breaks = ((neurons[1:] - neurons[:-1]) > gap).nonzero().squeeze(1) + 1
    starts = torch.cat([torch.zeros(1, dtype=torch.long), breaks]).tolist()
    ends = torch.cat([breaks, torch.tensor([neurons.numel()])]).tolist()
    ids = neurons.tolist()
    return [(ids[s], ids[e - 1] + 1) for s, e in zip(starts, ends, strict=True)]


def aligned_run(layer: LayerBundles, first: int, end: int) -> tuple[int, int, int]:
    """(aligned file offset, aligned length, offset of neuron `first` inside) of a run."""
    start = layer.offset + first * layer.bundle_bytes
    a = start & ~(ALIGN - 1)
    return a, align_up(start + (end - first) * layer.bundle_bytes) - a, start - a


def down_weight(layer: LayerBundles, records: torch.Tensor, scales: torch.Tensor) -> sparse.ColumnWeight:
    """A ColumnWeight over `records` (one layer's worth, filled by `kernels.sparse.put_channel_records`)."""
    return sparse.ColumnWeight(
        f"blk.{layer.layer}.ffn_down.weight",
        GGMLType(layer.down_type),
        (layer.dim, layer.neurons),
        records,
        scales,
    )
