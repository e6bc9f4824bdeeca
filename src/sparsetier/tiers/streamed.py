"""What the model sees of tiered weights: blocks made resident as it iterates over them, weights
split into pinned and streamed rows, a streamed output head, and embedding rows read on demand.

Streamed tensors keep their QuantTensor objects (so any FFN variant holding them keeps working);
only their `data` changes: a view of the stream buffer while their unit is in use, and otherwise a
placeholder that has the right shape and dtype but no memory (a broadcast of one element), which
the C++ kernels refuse (its rows are not contiguous): a released weight can never be read by
mistake.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import kernels
from ..weights.quant import FLOAT_TYPES, GGMLType
from ..weights.tensor import QuantTensor
from .plan import Piece, Unit
from .prefetch import Prefetcher
from .storage import ModelFile


def placeholder(like: torch.Tensor) -> torch.Tensor:
    """Shape and dtype of `like`, no memory, and not usable by the kernels."""
    return torch.zeros(1, dtype=like.dtype).expand(like.shape)


def as_weight_data(raw: torch.Tensor, qtype: GGMLType, rows: int, cols: int) -> torch.Tensor:
    """GGML bytes (uint8) as a QuantTensor's `data`: [rows, row_bytes], or floats [rows, cols]."""
    if qtype in FLOAT_TYPES:
        return raw.view(FLOAT_TYPES[qtype]).view(rows, cols)
    return raw.view(rows, -1)


@dataclass
class UnitBinding:
    """Points the tensors of one streamed unit at a stream buffer, and back at placeholders."""

    unit: Unit
    targets: list[tuple[QuantTensor, Piece]]  # the tensor (or rows part) each piece fills
    _views: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    _empty: list[torch.Tensor] = field(default_factory=list)  # each target's placeholder, made once

    def bind(self, buffer: torch.Tensor) -> None:
        views = self._views.get(id(buffer))
        if views is None:  # a view per (unit, buffer): made once, reused every token
            views = []
            for t, piece in self.targets:
                start = self.unit.buffer_offset(piece)
                raw = buffer[start : start + piece.nbytes]
                views.append(as_weight_data(raw, t.qtype, piece.row1 - piece.row0, t.cols))
            self._views[id(buffer)] = views
        for (t, _), v in zip(self.targets, views, strict=True):
            t.data = v

    def unbind(self) -> None:
        if not self._empty:
            self._empty = [placeholder(t.data) for t, _ in self.targets]
        for (t, _), empty in zip(self.targets, self._empty, strict=True):
            t.data = empty


class StreamedBlocks(Sequence):
    """Stands in for `model.blocks`: iterating makes block i's streamed weights resident (waiting
    for the reader if need be) and releases them when the caller moves on to block i + 1."""

    def __init__(self, blocks: list[Any], bindings: dict[int, UnitBinding], stream: Prefetcher):
        self.blocks = blocks
        self.bindings = bindings
        self.stream = stream

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i):  # the block object itself (to inspect or swap parts); not made resident
        return self.blocks[i]

    def __iter__(self) -> Iterator[Any]:
        for i, blk in enumerate(self.blocks):
            b = self.bindings.get(i)
            if b is None:
                yield blk
                continue
            b.bind(self.stream.acquire(b.unit.index))
            try:
                yield blk
            finally:
                b.unbind()
                self.stream.release(b.unit.index)


class SplitWeight:
    """A weight whose rows are in parts (some pinned, some streamed): y = cat(x @ part.T)."""

    def __init__(self, name: str, shape: tuple[int, ...], parts: list[tuple[int, int, QuantTensor]]):
        self.name, self.shape, self.parts = name, shape, parts

    @property
    def cols(self) -> int:
        return self.shape[-1]

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        ys = [kernels.linear(x, w, None if bias is None else bias[r0:r1]) for r0, r1, w in self.parts]
        return torch.cat(ys, dim=-1)

    def __repr__(self) -> str:
        return f"SplitWeight({self.name}, {list(self.shape)}, {len(self.parts)} parts)"


class StreamedHead:
    """The output head in row chunks: pinned chunks first, then the streamed ones as the reader
    delivers them, each written into its rows of the logits."""

    def __init__(
        self,
        name: str,
        shape: tuple[int, ...],
        pinned: list[tuple[int, int, QuantTensor]],
        streamed: list[tuple[int, int, QuantTensor, UnitBinding]],
        stream: Prefetcher | None,
    ):
        self.name, self.shape = name, shape
        self.pinned, self.streamed, self.stream = pinned, streamed, stream

    @property
    def cols(self) -> int:
        return self.shape[-1]

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        y = torch.empty(*x.shape[:-1], self.shape[0], dtype=torch.float32)
        for r0, r1, w in self.pinned:
            y[..., r0:r1] = kernels.linear(x, w)
        for r0, r1, w, b in self.streamed:
            b.bind(self.stream.acquire(b.unit.index))
            try:
                y[..., r0:r1] = kernels.linear(x, w)
            finally:
                b.unbind()
                self.stream.release(b.unit.index)
        return y if bias is None else y.add_(bias)

    def __repr__(self) -> str:
        return f"StreamedHead({self.name}, {list(self.shape)}, {len(self.streamed)} streamed chunks)"


class DiskRows:
    """An embedding table that is not (or only partly) resident: the rows a step needs come from
    its pinned parts or are read from disk, around the page cache.

    `qtype` is None on purpose: it is not a kernel type, so `kernels.embedding` calls
    `dequantize_rows` here instead of reading `data`."""

    qtype = None

    def __init__(
        self,
        name: str,
        qtype: GGMLType,
        shape: tuple[int, ...],
        offset: int,
        row_bytes: int,
        file: ModelFile,
        pinned: list[tuple[int, int, QuantTensor]],
    ):
        self.name, self.gguf_type, self.shape = name, qtype, shape
        self.offset, self.row_bytes, self.file, self.pinned = offset, row_bytes, file, pinned
        self.rows_read = 0

    @property
    def cols(self) -> int:
        return self.shape[-1]

    def dequantize_rows(self, index: torch.Tensor) -> torch.Tensor:
        ids = index.reshape(-1)
        out = torch.empty(ids.numel(), self.cols, dtype=torch.float32)
        todo = torch.ones(ids.numel(), dtype=torch.bool)
        for r0, r1, w in self.pinned:
            hit = (ids >= r0) & (ids < r1)
            if bool(hit.any()):
                out[hit] = kernels.dequantize(w, rows=ids[hit] - r0)
                todo &= ~hit
        if bool(todo.any()):
            need = ids[todo]
            uniq, inverse = torch.unique(need, return_inverse=True)
            raw = torch.empty(uniq.numel(), self.row_bytes, dtype=torch.uint8)
            mv = memoryview(raw.numpy()).cast("B")
            for j, r in enumerate(uniq.tolist()):
                if not 0 <= r < self.shape[0]:
                    raise IndexError(f"token id {r} out of range for {self.shape[0]} embedding rows")
                self.file.read(
                    self.offset + r * self.row_bytes, mv[j * self.row_bytes : (j + 1) * self.row_bytes]
                )
            self.rows_read += uniq.numel()
            rows = QuantTensor(
                self.name,
                self.gguf_type,
                (uniq.numel(), self.cols),
                as_weight_data(raw.view(-1), self.gguf_type, uniq.numel(), self.cols),
            )
            out[todo] = kernels.dequantize(rows)[inverse]
        return out.reshape(*index.shape, self.cols)

    def __repr__(self) -> str:
        return f"DiskRows({self.name}, {list(self.shape)})"
