"""The exact sparse FFN of ReLU-family models (ReLU, dReLU / TurboSparse).

With h = relu(gate(x)) * up(x) (dReLU: relu(gate(x)) * relu(up(x))) a neuron whose gate is
<= 0 contributes exactly nothing, so decode computes the gate, then only the active
neurons' up rows (`kernels.linear_rows`) and down columns (the column layout's `index`
path). The result is the dense FFN's up to float summation order: no approximation.
Prefill (many tokens: few neurons are inactive for all of them) stays dense.
"""

from __future__ import annotations

import torch

from .. import kernels
from ..kernels import sparse
from ..models.layers import DenseFFN

RELU_FAMILY = ("relu", "drelu")


class RowwiseFFN(DenseFFN):
    """A DenseFFN whose decode computes one token at a time over a chosen set of neurons
    (`_row`), reading down columns from the column layout; prefill stays dense."""

    def __init__(self, ffn: DenseFFN, columns: bool = True):
        super().__init__(ffn.gate, ffn.up, ffn.down, ffn.act)
        ok = columns and kernels.has_extension() and sparse.supports(ffn.down)
        self.down_cols = sparse.to_columns(ffn.down) if ok else None

    def _row(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _down(self, h: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
        """down @ h for h nonzero only at neurons idx (of n); [dim]."""
        full = torch.zeros(1, n)
        full[0, idx] = h
        if self.down_cols is not None:
            return sparse.col_linear(full, self.down_cols, index=idx)[0]
        return kernels.linear(full, self.down)[0]  # no column layout: dense product, same numbers

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        cols = x.shape[-1]
        if x.numel() > kernels.PREFILL_MIN_TOKENS * cols:
            return super().__call__(x)
        rows = x.reshape(-1, cols)
        out = torch.stack([self._row(rows[i : i + 1]) for i in range(rows.shape[0])])
        return out.reshape(*x.shape[:-1], out.shape[-1])


class ReluFFN(RowwiseFFN):
    """Drop-in for a block's DenseFFN; counts the neurons it computed (`active`, `seen`)."""

    def __init__(self, ffn: DenseFFN, columns: bool = True):
        if ffn.act not in RELU_FAMILY:
            raise ValueError(f"ReluFFN needs a ReLU-family activation, not {ffn.act}")
        super().__init__(ffn, columns)
        self.active = 0  # neurons computed since the last reset
        self.seen = 0  # neurons a dense FFN would have computed

    def _row(self, x: torch.Tensor) -> torch.Tensor:
        """One token x [1, dim] -> [dim]."""
        g = kernels.linear(x, self.gate)[0]
        idx = (g > 0).nonzero().squeeze(1)
        self.seen += g.numel()
        if idx.numel() == 0:
            return torch.zeros(self.down.shape[0])
        u = kernels.linear_rows(x, self.up, idx)[0]
        h = g[idx] * (u.relu() if self.act == "drelu" else u)
        if self.act == "drelu":  # relu(up) <= 0 is also an exact zero
            keep = u > 0
            idx, h = idx[keep], h[keep]
        self.active += idx.numel()
        if idx.numel() == 0:
            return torch.zeros(self.down.shape[0])
        return self._down(h, idx, g.numel())


def install(model: object, columns: bool = True) -> list[ReluFFN]:
    """Give every block of a ReLU-family model the exact sparse FFN; returns them."""
    ffns = []
    for blk in model.blocks:
        ffn = blk.ffn if isinstance(blk.ffn, ReluFFN) else ReluFFN(blk.ffn, columns)
        blk.ffn = ffn
        ffns.append(ffn)
    return ffns
