"""A contiguous float KV cache with one slot per concurrent sequence.

Layout [layer][slot, kv_head, position, head_dim]: a sequence's keys for one head are
contiguous, so attention reads them as a strided view with no copy. Memory comes from
torch.empty, so the operating system commits pages only as positions are written.
"""

from __future__ import annotations

import torch

from ..errors import ContextLengthError


class KVCache:
    def __init__(
        self,
        n_layers: int,
        n_kv_heads: int,
        head_dim: int,
        max_seq: int,
        n_slots: int = 1,
        dtype: torch.dtype = torch.float32,
    ):
        self.max_seq = max_seq
        self.n_slots = n_slots
        shape = (n_slots, n_kv_heads, max_seq, head_dim)
        self.k = [torch.empty(shape, dtype=dtype) for _ in range(n_layers)]
        self.v = [torch.empty(shape, dtype=dtype) for _ in range(n_layers)]

    def append_and_get(
        self, layer: int, slot: int, start: int, k: torch.Tensor, v: torch.Tensor, first: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k/v [T, kv_heads, head_dim] at positions start.. and return keys/values
        [kv_heads, L, head_dim] for positions first..start+T-1 (views, no copy)."""
        end = start + k.shape[0]
        if end > self.max_seq:
            raise ContextLengthError(f"sequence of {end} tokens exceeds the context size of {self.max_seq}")
        kc, vc = self.k[layer][slot], self.v[layer][slot]
        kc[:, start:end] = k.transpose(0, 1)
        vc[:, start:end] = v.transpose(0, 1)
        return kc[:, first:end], vc[:, first:end]

    def layer_slot(self, layer: int, slot: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The caches [kv_heads, max_seq, head_dim] of one layer and slot, for a step that
        writes up to position end - 1 (checked against the context size)."""
        if end > self.max_seq:
            raise ContextLengthError(f"sequence of {end} tokens exceeds the context size of {self.max_seq}")
        return self.k[layer][slot], self.v[layer][slot]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)
