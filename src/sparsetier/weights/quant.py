"""GGML tensor types: their block layouts and a plain-PyTorch reference dequantizer.

Every quantized format stores a row of `cols` weights as `cols / block_size` blocks of
`type_size` bytes. The functions here turn raw blocks (a uint8 tensor of shape
[..., n_blocks * type_size]) into float32 values. They are the reference that the C++
kernels are tested against, and they follow the same order of float operations as the
`gguf` package's numpy dequantizer, so the two agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

GGMLType = GGMLQuantizationType

FLOAT_TYPES = {GGMLType.F32: torch.float32, GGMLType.F16: torch.float16, GGMLType.BF16: torch.bfloat16}
QK_K = 256  # super-block size of the k-quants


def block_layout(qtype: GGMLType) -> tuple[int, int]:
    """(weights per block, bytes per block)."""
    return GGML_QUANT_SIZES[qtype]


def row_bytes(qtype: GGMLType, cols: int) -> int:
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    return cols // block_size * type_size


def _f16(raw: torch.Tensor) -> torch.Tensor:
    """Bytes [..., 2] (little-endian half) -> float32 [..., 1]."""
    return raw.contiguous().view(torch.float16).float()


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """[..., n] packed bytes -> [..., 2n]: all low nibbles first, then all high nibbles."""
    return torch.cat([qs & 0x0F, qs >> 4], dim=-1)


def _dq_q4_0(b: torch.Tensor) -> torch.Tensor:
    d = _f16(b[:, 0:2])
    q = _nibbles(b[:, 2:18]).to(torch.int8) - 8
    return d * q.float()


def _dq_q4_1(b: torch.Tensor) -> torch.Tensor:
    d, m = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    q = _nibbles(b[:, 4:20]).float()
    return d * q + m


_BIT = torch.arange(32, dtype=torch.int32)


def _high_bits(qh: torch.Tensor) -> torch.Tensor:
    """[n, 4] bytes of a little-endian u32 -> [n, 32] bits (bit j for weight j)."""
    word = qh.to(torch.int32)
    word = word[:, 0] | (word[:, 1] << 8) | (word[:, 2] << 16) | (word[:, 3] << 24)
    return ((word[:, None] >> _BIT) & 1).to(torch.uint8)


def _dq_q5_0(b: torch.Tensor) -> torch.Tensor:
    d = _f16(b[:, 0:2])
    q = (_nibbles(b[:, 6:22]) | (_high_bits(b[:, 2:6]) << 4)).to(torch.int8) - 16
    return d * q.float()


def _dq_q5_1(b: torch.Tensor) -> torch.Tensor:
    d, m = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    q = (_nibbles(b[:, 8:24]) | (_high_bits(b[:, 4:8]) << 4)).float()
    return d * q + m


def _dq_q8_0(b: torch.Tensor) -> torch.Tensor:
    d = _f16(b[:, 0:2])
    return d * b[:, 2:34].contiguous().view(torch.int8).float()


def k_scale_min(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpack the 12-byte 6-bit (scale, min) pairs of Q4_K/Q5_K: -> two [n, 8] uint8."""
    s = scales.reshape(-1, 3, 4)
    d, m, md = s[:, 0], s[:, 1], s[:, 2]
    sc = torch.cat([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    mn = torch.cat([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return sc, mn


def _dq_q4_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, mn = k_scale_min(b[:, 4:16])
    ds = (d * sc.float()).reshape(n, 8, 1)
    dm = (dmin * mn.float()).reshape(n, 8, 1)
    q = _nibbles(b[:, 16:144].reshape(n, 4, 32)).reshape(n, 8, 32).float()
    return (ds * q - dm).reshape(n, QK_K)


_BYTE_BITS = torch.arange(8, dtype=torch.uint8).reshape(1, 8, 1)


def _dq_q5_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, mn = k_scale_min(b[:, 4:16])
    ds = (d * sc.float()).reshape(n, 8, 1)
    dm = (dmin * mn.float()).reshape(n, 8, 1)
    ql = _nibbles(b[:, 48:176].reshape(n, 4, 32)).reshape(n, 8, 32)
    qh = (b[:, 16:48].reshape(n, 1, 32) >> _BYTE_BITS) & 1  # bit i of qh[l] -> sub-block i
    q = (ql | (qh << 4)).float()
    return (ds * q - dm).reshape(n, QK_K)


_Q6_SHIFTS = torch.tensor([0, 2, 4, 6], dtype=torch.uint8).reshape(1, 1, 4, 1)


def _dq_q6_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    ql, qh = b[:, 0:128], b[:, 128:192]
    scales = b[:, 192:208].contiguous().view(torch.int8).float()
    d = _f16(b[:, 208:210])
    ds = (d * scales).reshape(n, 16, 1)
    low = _nibbles(ql.reshape(n, 2, 64)).reshape(n, 2, 4, 32)  # per 128-half: 4 groups of 32
    high = ((qh.reshape(n, 2, 1, 32) >> _Q6_SHIFTS) & 3).reshape(n, 2, 4, 32)
    q = ((low | (high << 4)).to(torch.int8) - 32).reshape(n, 16, 16).float()
    return (ds * q).reshape(n, QK_K)


_DEQUANT: dict[GGMLType, Callable[[torch.Tensor], torch.Tensor]] = {
    GGMLType.Q4_0: _dq_q4_0,
    GGMLType.Q4_1: _dq_q4_1,
    GGMLType.Q5_0: _dq_q5_0,
    GGMLType.Q5_1: _dq_q5_1,
    GGMLType.Q8_0: _dq_q8_0,
    GGMLType.Q4_K: _dq_q4_k,
    GGMLType.Q5_K: _dq_q5_k,
    GGMLType.Q6_K: _dq_q6_k,
}

SUPPORTED_TYPES = frozenset(FLOAT_TYPES) | frozenset(_DEQUANT)


def dequantize_blocks(raw: torch.Tensor, qtype: GGMLType, cols: int) -> torch.Tensor:
    """Raw bytes [rows, row_bytes] (or float data) -> float32 [rows, cols]."""
    if qtype in FLOAT_TYPES:
        return raw.float()
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    rows = raw.shape[0]
    blocks = raw.reshape(-1, type_size)
    return _DEQUANT[qtype](blocks).reshape(rows, cols)
