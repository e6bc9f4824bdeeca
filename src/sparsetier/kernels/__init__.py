"""Compute kernels on QuantTensor weights.

The model code calls only `linear` and `embedding` (plus, where it fuses, `linear_multi`
and, for activation sparsity, `linear_rows`). They run the C++ kernels of
`sparsetier._C` when it is built, and otherwise the plain PyTorch reference path
(`reference.py`: dequantize, then float math), which every fast path is tested against.

Two numeric modes (see docs/kernels.md):

* fast (default): activations are quantized to int8 on the fly (per 32, or per 256 for
  the k-quants, like ggml's Q8_0/Q8_K) and multiplied with integer dot products;
* exact: float32 activations times weights dequantized in registers, i.e. the reference
  numbers up to float summation order. `set_exact(True)` (or `with set_exact(True):`).

Batches of more than `PREFILL_MIN_TOKENS` rows (prefill) dequantize the weights in
chunks and use torch's GEMM (oneDNN/MKL) instead of the GEMV kernels.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..weights.quant import SUPPORTED_TYPES, GGMLType
from ..weights.tensor import QuantTensor
from . import reference

try:
    from .. import _C as _ext
except ImportError as e:  # not built (SPARSETIER_NO_EXT) or built for another torch
    _ext = None
    warnings.warn(
        f"sparsetier: C++ kernels unavailable ({e}); using the much slower PyTorch reference kernels. "
        "Rebuild with `pip install --no-build-isolation -e .`.",
        RuntimeWarning,
        stacklevel=2,
    )

__all__ = [
    "PREFILL_MIN_TOKENS",
    "add_rms_norm_",
    "attend_one",
    "dequantize",
    "embedding",
    "has_extension",
    "is_exact",
    "linear",
    "linear_multi",
    "linear_rows",
    "measure_read_bandwidth",
    "rms_norm",
    "rope_",
    "set_exact",
]

# Above this many activation rows, dequantize + torch GEMM beats the fused GEMV kernels
# (crossover measured at 12-16 rows in both modes, docs/kernels.md).
PREFILL_MIN_TOKENS = 16
# Prefill dequantizes at most this many weights at a time (into a reused buffer), so a
# 150k-row output head never becomes a giant temporary.
_PREFILL_CHUNK_ELEMS = 4 << 20
_tls = threading.local()

_KERNEL_TYPES = frozenset(SUPPORTED_TYPES)
_exact = False


class set_exact:  # noqa: N801 - used like a function
    """Choose the numeric mode: `set_exact(True)` switches to exact float32 math until
    `set_exact(False)`; `with set_exact(True): ...` switches for the block only."""

    def __init__(self, exact: bool = True) -> None:
        global _exact
        self._prev = _exact
        _exact = bool(exact)

    def __enter__(self) -> set_exact:
        return self

    def __exit__(self, *exc: object) -> None:
        global _exact
        _exact = self._prev


def is_exact() -> bool:
    """True when the kernels run in exact (float32 activation) mode."""
    return _exact


def has_extension() -> bool:
    """True when the C++ kernels are in use."""
    return _ext is not None


def _usable(x: torch.Tensor, w: QuantTensor) -> bool:
    # Cheap checks only (this runs ~10 times per layer per token): .is_cpu, not .device.
    return _ext is not None and w.qtype in _KERNEL_TYPES and x.is_cpu and w.data.is_cpu and w.data.dim() == 2


def linear(
    x: torch.Tensor, w: QuantTensor, bias: torch.Tensor | None = None, threshold: float = -1.0
) -> torch.Tensor:
    """y = x @ W.T (+ bias) for x [..., in_features] float32 -> [..., out_features] float32;
    inputs with |x| <= threshold count as 0 (activation sparsity on the dense kernel; < 0: none).

    `w` may also be a weight wrapper (sparse or streamed weights) that is not a QuantTensor:
    it brings its own `linear(x, bias)`."""
    if type(w) is not QuantTensor:
        return w.linear(x, bias)
    if not _usable(x, w):
        return reference.linear(_shrink(x, threshold), w, bias)
    cols = w.shape[-1]
    if x.numel() > PREFILL_MIN_TOKENS * cols:
        y = _prefill_linear(_shrink(x, threshold).reshape(-1, cols), w, bias)
        return y.reshape(*x.shape[:-1], w.shape[0])
    # The C++ side takes any leading dimensions (reshapes cost ~1.5 us each in Python).
    return _ext.linear(x, w.data, int(w.qtype), w.shape[0], cols, bias, _exact, threshold)


def _shrink(x: torch.Tensor, threshold: float) -> torch.Tensor:
    return torch.nn.functional.hardshrink(x, threshold) if threshold >= 0 else x


def linear_multi(
    x: torch.Tensor,
    ws: Sequence[QuantTensor],
    biases: Sequence[torch.Tensor | None] | None = None,
    thresholds: Sequence[float] | None = None,
) -> list[torch.Tensor]:
    """[x @ W.T (+ b) for W in ws] for weights sharing one input (q/k/v, gate/up): the
    activations are quantized once (per distinct threshold) and one parallel region covers
    all rows."""
    if biases is None:
        biases = [None] * len(ws)
    if thresholds is None:
        thresholds = [-1.0] * len(ws)
    if type(ws[0]) is not QuantTensor and hasattr(ws[0], "linear_multi"):
        return ws[0].linear_multi(x, ws, biases)  # sparse weights fuse their own group
    cols = x.shape[-1]
    if x.numel() > PREFILL_MIN_TOKENS * cols or not all(type(w) is QuantTensor and _usable(x, w) for w in ws):
        return [linear(x, w, b, t) for w, b, t in zip(ws, biases, thresholds, strict=True)]
    datas, qtypes, rows = [w.data for w in ws], [int(w.qtype) for w in ws], [w.shape[0] for w in ws]
    return _ext.linear_multi(x, datas, qtypes, rows, cols, list(biases), _exact, list(thresholds))


def linear_rows(
    x: torch.Tensor, w: QuantTensor, rows: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Only the output features `rows` (1-D int64): x @ W[rows].T (+ bias[rows]) ->
    [..., len(rows)]. For activation sparsity: reads just those weight rows."""
    if not _usable(x, w):
        sub = QuantTensor(w.name, w.qtype, (rows.numel(), w.cols), w.data[rows.reshape(-1)])
        return reference.linear(x, sub, None if bias is None else bias[rows.reshape(-1)])
    return _ext.linear_rows(x, w.data, int(w.qtype), w.shape[0], w.shape[-1], rows, bias, _exact)


def dequantize(
    w: QuantTensor, dtype: torch.dtype = torch.float32, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """The weight (or its `rows`) as a float32 / bfloat16 tensor, dequantized in parallel;
    float32 is bit-exact with the reference dequantizer."""
    if _ext is None or w.qtype not in _KERNEL_TYPES or w.data.dim() != 2 or not w.data.is_cpu:
        out = w.dequantize() if rows is None else w.dequantize_rows(rows)
        return out.to(dtype)
    if dtype not in (torch.float32, torch.bfloat16):
        return dequantize(w, torch.float32, rows).to(dtype)
    return _ext.dequantize(w.data, int(w.qtype), w.shape[0], w.cols, rows, dtype == torch.bfloat16)


def embedding(w: QuantTensor, ids: torch.Tensor) -> torch.Tensor:
    """Rows `ids` of an embedding table as float32 [..., dim], reading only those rows."""
    if _ext is None or w.qtype not in _KERNEL_TYPES or w.data.dim() != 2 or not w.data.is_cpu:
        return w.dequantize_rows(ids)
    out = _ext.dequantize(w.data, int(w.qtype), w.shape[0], w.cols, ids, False)
    return out.reshape(*ids.shape, w.cols)


def measure_read_bandwidth(nbytes: int = 1 << 30, reps: int = 5) -> float:
    """This machine's sustained memory read bandwidth in GB/s with torch's thread count
    (each thread streams its own part of an `nbytes` buffer; best of `reps`)."""
    if _ext is None:
        buf = torch.ones(nbytes // 4)
        import time

        best = 0.0
        for _ in range(reps):
            t0 = time.perf_counter()
            buf.sum()
            best = max(best, nbytes / (time.perf_counter() - t0) / 1e9)
        return best
    return float(_ext.read_bandwidth(nbytes, reps))


def _scratch(numel: int, dtype: torch.dtype) -> torch.Tensor:
    """A per-thread reusable buffer: a fresh 10+ MB tensor costs a page fault per 4 KB
    (~10x the dequantization itself)."""
    key = f"buf_{dtype}"
    buf = getattr(_tls, key, None)
    if buf is None or buf.numel() < numel:
        buf = torch.empty(numel, dtype=dtype)
        setattr(_tls, key, buf)
    return buf[:numel]


def _prefill_linear(x: torch.Tensor, w: QuantTensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Many tokens: dequantize row chunks and let torch's GEMM (oneDNN/MKL) do the math.

    exact mode: float32 weights (bit-exact) and float32 GEMM, i.e. the reference numbers.
    fast mode: bfloat16 weights and activations with float32 accumulation (oneDNN's
    AVX512-BF16 GEMM, ~2.3x the float32 GEMM here; relative error ~3e-3, below the int8
    activation quantization of the fast GEMV kernels). See docs/kernels.md.
    """
    rows, cols = w.shape[0], w.shape[-1]
    x = x.float()
    if w.qtype == GGMLType.F32:
        return F.linear(x, w.data, bias)
    dtype = torch.float32 if _exact else torch.bfloat16
    xin = x if _exact else x.to(torch.bfloat16)
    chunk = max(1, _PREFILL_CHUNK_ELEMS // cols)
    qtype = int(w.qtype)
    if chunk >= rows:
        if w.qtype == GGMLType.BF16 and not _exact:
            wd = w.data
        else:
            wd = _ext.dequantize(w.data, qtype, rows, cols, None, not _exact, _scratch(rows * cols, dtype))
        y = F.linear(xin, wd.view(rows, cols))
    else:
        y = torch.empty(x.shape[0], rows, dtype=dtype)
        buf = _scratch(chunk * cols, dtype)
        for r0 in range(0, rows, chunk):
            r1 = min(rows, r0 + chunk)
            n = r1 - r0
            wc = _ext.dequantize(w.data[r0:r1], qtype, n, cols, None, not _exact, buf[: n * cols])
            torch.mm(xin, wc.view(n, cols).T, out=y[:, r0:r1])
    y = y.float()
    return y if bias is None else y.add_(bias)


# Small fused ops of the decode step (csrc/decode_ops.cpp): at decode time PyTorch's
# per-op overhead costs more than their arithmetic.


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """x / rms(x) * w over the last dimension (float32)."""
    if _ext is None:
        return reference.rms_norm(x, w, eps)
    return _ext.rms_norm(x, w, eps)


def add_rms_norm_(x: torch.Tensor, a: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """The residual step: x += a in place, then return rms_norm(x) * w."""
    if _ext is None:
        x += a
        return reference.rms_norm(x, w, eps)
    return _ext.add_rms_norm_(x, a, w, eps)


def rope_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, dim: int, interleaved: bool) -> None:
    """Rotary embedding in place on x [rows, heads, head_dim], tables [rows, dim / 2]."""
    if _ext is None:
        reference.rope_(x, cos, sin, dim, interleaved)
    else:
        _ext.rope_(x, cos, sin, dim, interleaved)


def attend_one(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    pos: int,
    first: int,
    scale: float,
) -> torch.Tensor:
    """One new token of one sequence: store its k/v [kv_heads, hd] at `pos` of the caches
    [kv_heads, max_seq, hd] and attend q [heads, hd] over positions first..pos -> [heads * hd]."""
    if _ext is None:
        return reference.attend_one(q, k, v, k_cache, v_cache, pos, first, scale)
    return _ext.attend_one(q, k, v, k_cache, v_cache, pos, first, scale)
