"""Input-sparse matrix-vector products on a column-major copy of GGML weights.

Activation sparsity zeroes input channels of a projection. GGML stores weights row-major
(blocks along the input), so a zero input channel still costs its bytes in every row. A
`ColumnWeight` holds the same quants and scales rearranged so that each input channel's
weights for all outputs are one contiguous record (`csrc/sparse.cpp` documents the bytes):
a product reads only the records of the channels that are active. The rearrangement is
lossless (bit-identical dequantized values) and the same size as the GGML tensor, so it
replaces the row-major weight in memory rather than adding a copy.

    cw = to_columns(w)                        # QuantTensor -> ColumnWeight (at load)
    y = col_linear(x, cw, threshold)          # channels with |x| > threshold
    ys = col_linear_multi(x, [cw1, cw2], [t1, t2])
    y = col_linear(x, cw, index=active)       # exactly the listed channels
    w = col_dequantize(cw)                    # float [cols, rows] = W.T (tests, prefill)
    s = break_even(GGMLType.Q4_K, 1536, 8960) # lowest sparsity at which columns beat the GEMV

Without the C++ extension everything runs on the reference path (dequantize + masked
float product).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..weights.quant import FLOAT_TYPES, SUPPORTED_TYPES, GGMLType
from ..weights.tensor import QuantTensor
from . import PREFILL_MIN_TOKENS, _ext, is_exact

# Types with a column layout: the GGML block types (every supported type but the float ones).
COLUMN_TYPES = SUPPORTED_TYPES - frozenset(FLOAT_TYPES)
TILE = 64  # outputs per tile; rows are padded to a multiple
BLOCK_TILES = 32  # tiles per layout block (kBlockTiles in csrc/sparse.cpp)
# (record bytes per 64 outputs, channels per scale unit, scale bytes per output per unit)
_FORMAT = {
    GGMLType.Q4_0: (32, 32, 2),
    GGMLType.Q4_1: (32, 32, 4),
    GGMLType.Q5_0: (40, 32, 2),
    GGMLType.Q5_1: (40, 32, 4),
    GGMLType.Q8_0: (64, 32, 2),
    GGMLType.Q4_K: (32, 256, 16),
    GGMLType.Q5_K: (40, 256, 16),
    GGMLType.Q6_K: (48, 256, 18),
}
_DEQUANT_CHUNK_ELEMS = 4 << 20


@dataclass(eq=False)
class ColumnWeight:
    """A GGML weight [rows (out), cols (in)] in column layout: `records` uint8, one run per input
    channel in each block of 2048 outputs (`csrc/sparse.cpp`), `scales` uint8 [units, unit_bytes]."""

    name: str
    qtype: GGMLType
    shape: tuple[int, int]
    records: torch.Tensor
    scales: torch.Tensor

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def cols(self) -> int:
        return self.shape[1]

    @property
    def nbytes(self) -> int:
        return self.records.numel() + self.scales.numel()

    @property
    def record_bytes(self) -> int:
        """Bytes read per active input channel (the scales come on top, once per call)."""
        return self.records.numel() // self.cols

    def __repr__(self) -> str:
        return f"ColumnWeight({self.name}, {self.qtype.name}, {list(self.shape)}, {self.nbytes} bytes)"


def _block_spans(cw: ColumnWeight) -> list[tuple[int, int]]:
    """(byte offset of each layout block, one channel's record bytes in it)."""
    tile_bytes = _FORMAT[cw.qtype][0]
    tiles = cw.records.numel() // (cw.cols * tile_bytes)
    spans, base = [], 0
    for t0 in range(0, tiles, BLOCK_TILES):
        run = min(BLOCK_TILES, tiles - t0) * tile_bytes
        spans.append((base, run))
        base += run * cw.cols
    return spans


def channel_records(cw: ColumnWeight) -> torch.Tensor:
    """Each input channel's whole record (its runs of every block, in order): [cols, record_bytes]."""
    parts = [cw.records[b : b + run * cw.cols].view(cw.cols, run) for b, run in _block_spans(cw)]
    return torch.cat(parts, dim=1)


def put_channel_records(cw: ColumnWeight, index: torch.Tensor, records: torch.Tensor) -> None:
    """Write whole records [len(index), record_bytes] (as `channel_records` gives) of channels
    `index`. `records` may hold them as wider integers (fewer elements to copy): every run of the
    layout is a multiple of 8 bytes."""
    size = records.element_size()
    dst = cw.records.view(records.dtype)
    at = 0
    for b, run in _block_spans(cw):
        b, run = b // size, run // size
        dst[b : b + run * cw.cols].view(cw.cols, run)[index] = records[:, at : at + run]
        at += run


def supports(w: QuantTensor) -> bool:
    """Whether `w` can be turned into a column layout (a 2-D block-quantized matrix)."""
    if w.qtype not in COLUMN_TYPES or len(w.shape) != 2 or w.data.dim() != 2:
        return False
    return w.cols % _FORMAT[w.qtype][1] == 0


def to_columns(w: QuantTensor) -> ColumnWeight:
    """Rearrange a GGML weight into the column layout (lossless; same size up to row padding)."""
    if not supports(w):
        raise ValueError(f"{w.name}: no column layout for {w.qtype.name} {list(w.shape)}")
    rows, cols = w.shape
    if _ext is None:
        raise RuntimeError("the column layout needs the C++ extension (sparsetier._C)")
    data = w.data if w.data.dtype == torch.uint8 else w.data.view(torch.uint8)
    recs, scales = _ext.to_columns(data.contiguous(), int(w.qtype), rows, cols)
    return ColumnWeight(w.name, w.qtype, (rows, cols), recs, scales)


def col_dequantize(
    cw: ColumnWeight, start: int = 0, end: int | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Input channels [start, end) as float [end - start, rows], i.e. rows of W.T."""
    end = cw.cols if end is None else end
    return _ext.col_dequantize(
        cw.records, cw.scales, int(cw.qtype), cw.rows, cw.cols, start, end, dtype == torch.bfloat16
    )


def _prefill(x: torch.Tensor, cw: ColumnWeight, threshold: float, bias: torch.Tensor | None) -> torch.Tensor:
    """Many rows: mask the inactive inputs, then dequantize channel chunks and use torch's GEMM
    (bf16 in fast mode, float32 in exact mode, as the dense prefill does)."""
    x2 = x.reshape(-1, cw.cols).float()
    if threshold >= 0:
        x2 = x2 * (x2.abs() > threshold)
    exact = is_exact()
    dtype = torch.float32 if exact else torch.bfloat16
    xin = x2.to(dtype)
    unit = _FORMAT[cw.qtype][1]
    chunk = max(unit, _DEQUANT_CHUNK_ELEMS // cw.rows // unit * unit)
    y = torch.zeros(x2.shape[0], cw.rows, dtype=torch.float32)
    for c0 in range(0, cw.cols, chunk):
        c1 = min(cw.cols, c0 + chunk)
        wt = col_dequantize(cw, c0, c1, dtype)
        y += (xin[:, c0:c1] @ wt).float()
    if bias is not None:
        y += bias
    return y.reshape(*x.shape[:-1], cw.rows)


def col_linear_multi(
    x: torch.Tensor,
    cws: list[ColumnWeight],
    thresholds: list[float],
    biases: list[torch.Tensor | None] | None = None,
    index: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """[x @ W.T (+ b)] over the active input channels only: |x| > threshold per weight (a
    negative threshold keeps every channel), or exactly the channels `index` (int64, shared
    by all weights). One parallel region covers all weights."""
    biases = biases if biases is not None else [None] * len(cws)
    cols = x.shape[-1]
    if x.numel() > PREFILL_MIN_TOKENS * cols:
        if index is not None:
            mask = torch.zeros(cols, dtype=torch.bool)
            mask[index] = True
            x = x * mask
            thresholds = [-1.0] * len(cws)
        return [_prefill(x, cw, t, b) for cw, t, b in zip(cws, thresholds, biases, strict=True)]
    return _ext.col_linear(
        x,
        [cw.records for cw in cws],
        [cw.scales for cw in cws],
        [int(cw.qtype) for cw in cws],
        [cw.rows for cw in cws],
        cols,
        [float(t) for t in thresholds],
        index,
        list(biases),
        is_exact(),
    )


def col_linear(
    x: torch.Tensor,
    cw: ColumnWeight,
    threshold: float = -1.0,
    bias: torch.Tensor | None = None,
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """x @ W.T (+ bias) over the channels with |x| > threshold (or the channels `index`)."""
    return col_linear_multi(x, [cw], [threshold], [bias], index)[0]


def bytes_read(reset: bool = False) -> int:
    """Weight bytes the sparse decode kernels have read since the last reset (records of active
    channels plus the scales of every unit with an active channel)."""
    return int(_ext.col_bytes_read(reset)) if _ext is not None else 0


_BREAK_EVEN: dict[tuple[int, int, int, int], float] = {}
_PROBE_BYTES = 128 << 20  # 4x the L3 here: the copies stream from DRAM, as a model's weights do


def break_even(
    qtype: GGMLType, rows: int, cols: int, levels: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
) -> float:
    """The lowest input sparsity at which the column kernel is >= 5% faster than the dense GEMV
    for this type and shape on this machine with torch's thread count (1.0: never), measured
    once per process on random weights cycled through ~128 MB (0.1-0.5 s). It moves with the
    shape far more than with sparsity (2 threads here: Q5_0 2048x640 wins from 30%, Q4_K 8960x1536
    from 40-50%, Q4_K 640x2048 only at 90%; `python -m sparsetier.kernels.bench sparse`), so it is
    measured, not assumed."""
    key = (int(qtype), rows, cols, torch.get_num_threads())
    if key in _BREAK_EVEN:
        return _BREAK_EVEN[key]
    from .synth import random_quant

    w = random_quant(qtype, rows, cols, seed=0)
    n = max(2, min(64, _PROBE_BYTES // w.nbytes))
    dense = [w] + [QuantTensor(w.name, qtype, w.shape, w.data.clone()) for _ in range(n - 1)]
    cw = to_columns(w)
    cols_ = [cw] + [
        ColumnWeight(cw.name, qtype, cw.shape, cw.records.clone(), cw.scales.clone()) for _ in range(n - 1)
    ]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, cols, generator=g)

    from . import linear

    def pass_seconds(fn) -> float:
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        return time.perf_counter() - t0

    found = 1.0
    for level in levels:
        xs = x * (torch.rand(cols, generator=g) >= level)
        # alternating passes, the best of each (a busy neighbour only adds time)
        t_dense = t_cols = float("inf")
        for _ in range(3):
            t_dense = min(t_dense, pass_seconds(lambda i: linear(x, dense[i])))
            t_cols = min(t_cols, pass_seconds(lambda i, xs=xs: col_linear(xs, cols_[i], 0.0)))
        if t_dense >= 1.05 * t_cols:
            found = level
            break
    _BREAK_EVEN[key] = found
    return found
