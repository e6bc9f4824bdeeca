"""Synthetic GGML weights for kernel tests and benchmarks.

`random_quant` makes random but valid blocks of any supported type: random quant bytes
with sane float16 scale fields (no inf/nan/subnormal scales), so every byte pattern of
the quants (including the 6-bit k-quant scales) is exercised and timings are not
disturbed by special float values. `quantize_like_gguf` uses gguf-py's own quantizer
where it has one, for weights that look like real quantized tensors.
"""

from __future__ import annotations

import numpy as np
import torch
from gguf import quants as gguf_quants

from ..weights.quant import FLOAT_TYPES, GGMLType, block_layout, row_bytes
from ..weights.tensor import QuantTensor

# Byte offsets of the float16 scale fields inside one block, per type.
_HALF_FIELDS: dict[GGMLType, tuple[int, ...]] = {
    GGMLType.Q4_0: (0,),
    GGMLType.Q4_1: (0, 2),
    GGMLType.Q5_0: (0,),
    GGMLType.Q5_1: (0, 2),
    GGMLType.Q8_0: (0,),
    GGMLType.Q4_K: (0, 2),
    GGMLType.Q5_K: (0, 2),
    GGMLType.Q6_K: (208,),
}

# Types gguf-py can quantize (the k-quants it can only dequantize).
GGUF_QUANTIZABLE = (GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1, GGMLType.Q8_0, GGMLType.BF16)


def random_quant(qtype: GGMLType, rows: int, cols: int, seed: int = 0, scale: float = 0.02) -> QuantTensor:
    """A [rows, cols] weight of random valid blocks (scales in [scale/2, scale] with random sign)."""
    gen = np.random.default_rng(seed)
    if qtype in FLOAT_TYPES:
        t = torch.from_numpy(gen.standard_normal((rows, cols), dtype=np.float32) * scale)
        return QuantTensor(f"random_{qtype.name}", qtype, (rows, cols), t.to(FLOAT_TYPES[qtype]))
    _, type_size = block_layout(qtype)
    nblocks = rows * row_bytes(qtype, cols) // type_size
    raw = gen.integers(0, 256, size=(nblocks, type_size), dtype=np.uint8)
    for off in _HALF_FIELDS[qtype]:
        mag = gen.uniform(scale / 2, scale, size=nblocks)
        # Minimum fields (Q4_1/Q5_1 "m", k-quant "dmin") keep both signs; others too: the
        # kernels must not assume positive scales.
        val = (mag * gen.choice([-1.0, 1.0], size=nblocks)).astype(np.float16)
        raw[:, off : off + 2] = val.view(np.uint8).reshape(nblocks, 2)
    data = torch.from_numpy(raw.reshape(rows, -1))
    return QuantTensor(f"random_{qtype.name}", qtype, (rows, cols), data)


def quantize_like_gguf(qtype: GGMLType, w: torch.Tensor) -> QuantTensor:
    """Quantize a float [rows, cols] tensor with gguf-py's reference quantizer."""
    rows, cols = w.shape
    if qtype == GGMLType.BF16:
        return QuantTensor(f"gguf_{qtype.name}", qtype, (rows, cols), w.to(torch.bfloat16))
    raw = gguf_quants.quantize(w.float().numpy(), qtype)
    return QuantTensor(f"gguf_{qtype.name}", qtype, (rows, cols), torch.from_numpy(np.ascontiguousarray(raw)))
