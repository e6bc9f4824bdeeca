"""Compute kernels on QuantTensor weights.

The model code calls only the functions here. Each has a plain PyTorch reference path
(`reference.py`: dequantize, then float math) that the fast paths are tested against.
"""

from __future__ import annotations

import torch

from ..weights.tensor import QuantTensor
from . import reference


def linear(x: torch.Tensor, w: QuantTensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ W.T (+ bias) for x [..., in_features] float32 -> [..., out_features] float32."""
    return reference.linear(x, w, bias)


def embedding(w: QuantTensor, ids: torch.Tensor) -> torch.Tensor:
    """Rows `ids` of an embedding table as float32 [..., dim], reading only those rows."""
    return w.dequantize_rows(ids)
