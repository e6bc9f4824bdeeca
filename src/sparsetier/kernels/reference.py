"""Plain PyTorch reference kernels: dequantize to float32, then ordinary float math.

Slow but obviously right; every fast kernel is tested against these.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..weights.tensor import QuantTensor

# Dequantize at most this many weight rows at a time, so a 262k-row output head
# never becomes a 670 MB float temporary.
_ROW_CHUNK = 16384


def linear(x: torch.Tensor, w: QuantTensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    rows = w.shape[0]
    if rows <= _ROW_CHUNK or not w.is_quantized:
        return F.linear(x, w.dequantize(), bias)
    data = w.data
    parts = []
    for start in range(0, rows, _ROW_CHUNK):
        n = min(_ROW_CHUNK, rows - start)
        chunk = QuantTensor(w.name, w.qtype, (n, w.cols), data[start : start + n])
        parts.append(F.linear(x, chunk.dequantize()))
    y = torch.cat(parts, dim=-1)
    return y if bias is None else y + bias
