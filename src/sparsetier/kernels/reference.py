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


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, dim: int, interleaved: bool) -> None:
    """Rotate x [rows, heads, head_dim] in place with tables [rows, dim / 2]."""
    c, s = cos[:, None, :], sin[:, None, :]
    rot = x[..., :dim]
    if interleaved:
        a, b = rot[..., 0::2].clone(), rot[..., 1::2].clone()
        rot[..., 0::2], rot[..., 1::2] = a * c - b * s, b * c + a * s
    else:
        half = dim // 2
        a, b = rot[..., :half].clone(), rot[..., half:].clone()
        rot[..., :half], rot[..., half:] = a * c - b * s, b * c + a * s


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
    """Store k/v [kv_heads, hd] at `pos` of caches [kv_heads, max_seq, hd]; attend q over first..pos."""
    k_cache[:, pos] = k.reshape(k_cache.shape[0], -1)
    v_cache[:, pos] = v.reshape(v_cache.shape[0], -1)
    keys, values = k_cache[:, first : pos + 1], v_cache[:, first : pos + 1]
    qh = q.reshape(-1, keys.shape[-1])[None, :, None]  # [1, H, 1, hd]
    out = F.scaled_dot_product_attention(
        qh, keys[None], values[None], scale=scale, enable_gqa=qh.shape[1] != keys.shape[0]
    )
    return out.reshape(-1)
