"""The weight object every model layer holds: a tensor that knows its format and where it lives.

Quantized weights stay in their GGML block format in memory (a uint8 view of the memory-mapped
file, never a float copy); the kernels compute on the blocks directly. Float weights (norms,
biases, F16/BF16/F32 matrices, Hugging Face checkpoints) use the same object with a float
`data` tensor, so a model never needs to know which kind it was given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .quant import FLOAT_TYPES, GGMLType, dequantize_blocks


@dataclass(eq=False)
class FileRegion:
    """Where a tensor's bytes sit on disk: what the tiered store streams from."""

    path: str
    offset: int
    nbytes: int


@dataclass(eq=False)
class QuantTensor:
    name: str
    qtype: GGMLType
    shape: tuple[int, ...]  # PyTorch order: (out_features, in_features) for matrices
    data: torch.Tensor  # uint8 [..., rows, row_bytes] for block types; the float tensor otherwise
    source: FileRegion | None = None

    @property
    def is_quantized(self) -> bool:
        return self.qtype not in FLOAT_TYPES

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()

    @property
    def cols(self) -> int:
        return self.shape[-1]

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The whole tensor as floats (a new tensor for quantized types; no copy for F32)."""
        if not self.is_quantized:
            return self.data if self.data.dtype == dtype else self.data.to(dtype)
        rows = self.data.reshape(-1, self.data.shape[-1])
        return dequantize_blocks(rows, self.qtype, self.cols).reshape(self.shape).to(dtype)

    def dequantize_rows(self, index: torch.Tensor) -> torch.Tensor:
        """Selected rows as float32 (an embedding lookup), reading only those rows."""
        rows = self.data.reshape(-1, self.data.shape[-1])[index.reshape(-1)]
        if not self.is_quantized:
            return rows.float().reshape(*index.shape, self.cols)
        return dequantize_blocks(rows, self.qtype, self.cols).reshape(*index.shape, self.cols)

    def __repr__(self) -> str:
        return f"QuantTensor({self.name}, {self.qtype.name}, {list(self.shape)}, {self.nbytes} bytes)"


def from_float(name: str, t: torch.Tensor) -> QuantTensor:
    """Wrap a float tensor (F32/F16/BF16) as a weight."""
    qtype = {v: k for k, v in FLOAT_TYPES.items()}.get(t.dtype)
    if qtype is None:
        t, qtype = t.float(), GGMLType.F32
    return QuantTensor(name, qtype, tuple(t.shape), t)
