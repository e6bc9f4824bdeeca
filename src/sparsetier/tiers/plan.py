"""The placement planner: which weight bytes stay resident and which stream from disk, per token.

Plain data in, plain data out (no tensors, no files), so it is testable on made-up models.

Policy (dense models, sparsity off):
- norms, biases and other vectors are always resident (a few hundred kB);
- the token embedding of an untied model is never resident: a token needs one row, read on demand;
- every other matrix is read once per token, so which bytes stay resident does not change how many
  bytes stream; what matters is that the streamed bytes are spread evenly over the token's forward
  pass, so the reader is always busy while the model computes. Each layer (and each chunk of the
  output head) is an item; item j streams min(size_j, L) bytes, a suffix of its bytes in file order
  (one contiguous read), with L the smallest level that fits the budget;
- streamed items are read into `slots` equal stream buffers (2: the next item is read while the
  current one computes), so the buffers cost slots x the largest streamed item.

Resident = pinned bytes + stream buffers + neuron cache <= budget. The minimum budget streams
everything it can.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import SparsetierError
from .budget import fmt_size
from .storage import aligned_range

EMBED = "token_embd.weight"
HEAD = "output.weight"
EXTENT_GAP = 64 << 10  # streamed pieces this close in the file are read as one request


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as the planner sees it: where its bytes are, and its rows (output features)."""

    name: str
    offset: int
    nbytes: int
    rows: int
    layer: int | None = None  # block index; None outside the blocks
    matrix: bool = True  # False for vectors (norms, biases): always resident

    @property
    def row_bytes(self) -> int:
        return self.nbytes // self.rows


@dataclass(frozen=True)
class Piece:
    """Rows row0..row1 of a tensor: bytes offset..offset+nbytes of the file."""

    tensor: str
    row0: int
    row1: int
    offset: int
    nbytes: int


@dataclass
class Unit:
    """What streams for one item (a layer, or a chunk of the head): read into one stream buffer."""

    index: int
    item: str  # "blk.3" or "head"
    layer: int | None
    pieces: list[Piece]
    extents: list[tuple[int, int]] = field(default_factory=list)  # aligned (file offset, length)

    def __post_init__(self) -> None:
        if not self.extents:
            spans: list[list[int]] = []
            for p in sorted(self.pieces, key=lambda p: p.offset):
                if spans and p.offset - spans[-1][1] <= EXTENT_GAP:
                    spans[-1][1] = max(spans[-1][1], p.offset + p.nbytes)
                else:
                    spans.append([p.offset, p.offset + p.nbytes])
            self.extents = [aligned_range(a, b - a) for a, b in spans]

    @property
    def read_bytes(self) -> int:
        return sum(n for _, n in self.extents)

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.pieces)

    def buffer_offset(self, piece: Piece) -> int:
        """Where the piece's first byte lands in the stream buffer (extents packed in order)."""
        pos = 0
        for start, length in self.extents:
            if start <= piece.offset < start + length:
                return pos + piece.offset - start
            pos += length
        raise ValueError(f"{piece.tensor} rows {piece.row0}..{piece.row1} are not in unit {self.item}")


@dataclass
class Plan:
    budget: int
    weight_bytes: int  # every tensor of the file
    pinned: list[Piece]  # resident, read once at load
    units: list[Unit]  # streamed every token, in forward order
    slots: int
    slot_bytes: int
    embed_on_demand: bool  # the embedding rows a token needs are read from disk
    embed_row_bytes: int
    level: int  # L: bytes each item streams at most
    minimum_budget: int
    tied: bool

    @property
    def pinned_bytes(self) -> int:
        return sum(p.nbytes for p in self.pinned)

    @property
    def stream_buffer_bytes(self) -> int:
        return self.slots * self.slot_bytes if self.units else 0

    @property
    def resident_bytes(self) -> int:
        return self.pinned_bytes + self.stream_buffer_bytes

    @property
    def streamed_bytes_per_token(self) -> int:
        """Disk bytes one decode step reads: every unit, plus the token's embedding row."""
        row = aligned_range(0, self.embed_row_bytes)[1] if self.embed_on_demand else 0
        return sum(u.read_bytes for u in self.units) + row

    def pieces_of(self, tensor: str) -> tuple[list[Piece], list[tuple[Unit, Piece]]]:
        """(pinned pieces, streamed (unit, piece)) of one tensor."""
        pinned = [p for p in self.pinned if p.tensor == tensor]
        streamed = [(u, p) for u in self.units for p in u.pieces if p.tensor == tensor]
        return pinned, streamed


def layer_of(name: str) -> int | None:
    """The block index of a GGUF tensor name ("blk.3.ffn_up.weight" -> 3), None outside blocks."""
    if name.startswith("blk."):
        part = name.split(".", 2)[1]
        if part.isdigit():
            return int(part)
    return None


@dataclass
class ItemSummary:
    """One row of `sparsetier plan`: a layer (or the head, the embedding, the vectors)."""

    item: str
    pinned_bytes: int
    streamed_bytes: int  # read per token (whole aligned requests)
    streamed: list[str]  # what streams: tensor names, "[rows a:b]" where a tensor is split


def summarize(plan: Plan, tensors: list[TensorInfo]) -> list[ItemSummary]:
    """Per layer, then the head and the rest: pinned bytes, streamed bytes, what streams."""
    by_name = {t.name: t for t in tensors}
    head = EMBED if plan.tied else HEAD

    def item_of(name: str) -> str:
        layer = layer_of(name)
        if layer is not None and by_name[name].matrix:
            return f"blk.{layer}"
        if name == head:
            return "output head" + (" (= embedding)" if plan.tied else "")
        if name == EMBED:
            return "embedding"
        return "norms, biases"

    rows: dict[str, ItemSummary] = {}

    def row(key: str) -> ItemSummary:
        return rows.setdefault(key, ItemSummary(key, 0, 0, []))

    for p in plan.pinned:
        row(item_of(p.tensor)).pinned_bytes += p.nbytes
    for u in plan.units:
        r = row(item_of(u.pieces[0].tensor))
        r.streamed_bytes += u.read_bytes
        for p in u.pieces:
            t = by_name[p.tensor]
            whole = p.row0 == 0 and p.row1 == t.rows
            label = p.tensor.removeprefix(f"blk.{u.layer}.").removesuffix(".weight")
            r.streamed.append(label if whole else f"{label}[{p.row0}:{p.row1}]")
    if plan.embed_on_demand:
        row("embedding").streamed.append(f"1 row ({by_name[EMBED].row_bytes} B) per token, on demand")
    order = {f"blk.{i}": i for i in range(len(rows) + 1000)}
    return sorted(rows.values(), key=lambda r: (order.get(r.item, 10**6), r.item))


class BudgetTooSmall(SparsetierError):
    def __init__(self, budget: int, minimum: int, detail: str = ""):
        self.budget, self.minimum, self.detail = budget, minimum, detail
        super().__init__(
            f"memory budget {fmt_size(budget)} is too small for this model: it needs at least "
            f"{fmt_size(minimum)} ({minimum} bytes){detail}"
        )


def _whole(t: TensorInfo) -> Piece:
    return Piece(t.name, 0, t.rows, t.offset, t.nbytes)


def _rows(t: TensorInfo, row0: int, row1: int) -> Piece:
    rb = t.row_bytes
    return Piece(t.name, row0, row1, t.offset + row0 * rb, (row1 - row0) * rb)


@dataclass
class _Item:
    key: str
    layer: int | None
    parts: list[tuple[TensorInfo, int, int]]  # (tensor, row0, row1), in file order

    @property
    def nbytes(self) -> int:
        return sum((r1 - r0) * t.row_bytes for t, r0, r1 in self.parts)

    def split(self, stream: int) -> tuple[list[Piece], list[Piece]]:
        """(pinned, streamed): the last `stream` bytes (at least) stream, cut at a row boundary."""
        pinned, streamed = [], []
        left = stream
        for t, r0, r1 in reversed(self.parts):
            n = (r1 - r0) * t.row_bytes
            if left <= 0:
                pinned.append(_rows(t, r0, r1))
            elif left >= n:
                streamed.append(_rows(t, r0, r1))
                left -= n
            else:
                cut = r1 - -(-left // t.row_bytes)  # stream whole rows: round up
                cut = max(cut, r0)
                if cut > r0:
                    pinned.append(_rows(t, r0, cut))
                streamed.append(_rows(t, cut, r1))
                left = 0
        return pinned[::-1], streamed[::-1]


def _items(tensors: list[TensorInfo], head: TensorInfo | None, head_chunk: int) -> list[_Item]:
    layers: dict[int, list[TensorInfo]] = {}
    for t in tensors:
        if t.matrix and t.layer is not None:
            layers.setdefault(t.layer, []).append(t)
    items = [
        _Item(f"blk.{i}", i, [(t, 0, t.rows) for t in sorted(ts, key=lambda t: t.offset)])
        for i, ts in sorted(layers.items())
    ]
    if head is not None:
        rows = max(1, head_chunk // max(1, head.row_bytes))
        for r0 in range(0, head.rows, rows):
            items.append(_Item("head", None, [(head, r0, min(head.rows, r0 + rows))]))
    return items


def make_plan(
    tensors: list[TensorInfo],
    budget: int,
    *,
    tied: bool,
    slots: int = 2,
    head_chunk: int | None = None,
) -> Plan:
    """The placement of `tensors` under `budget` bytes; BudgetTooSmall (with the minimum) if none fits."""
    by_name = {t.name: t for t in tensors}
    embed = by_name.get(EMBED)
    head = embed if tied else by_name.get(HEAD)
    weight_bytes = sum(t.nbytes for t in tensors)
    always = [
        t
        for t in tensors
        if not t.matrix or (t.layer is None and t.name not in (EMBED, HEAD) and t is not head)
    ]
    always_pieces = [_whole(t) for t in always]
    fixed = sum(p.nbytes for p in always_pieces)
    row_bytes = embed.row_bytes if embed is not None else 0

    if weight_bytes <= budget:  # everything fits: no streaming at all
        every = [_whole(t) for t in tensors]
        minimum = _minimum(tensors, tied, slots, head_chunk)
        return Plan(budget, weight_bytes, every, [], slots, 0, False, row_bytes, 0, minimum, tied)

    layer_bytes: dict[int, int] = {}
    for t in tensors:
        if t.matrix and t.layer is not None:
            layer_bytes[t.layer] = layer_bytes.get(t.layer, 0) + t.nbytes
    layer_max = max(layer_bytes.values(), default=0)
    chunk = head_chunk or max(layer_max, 1 << 20)
    items = _items(tensors, head, chunk)

    def realize(level: int) -> tuple[int, list[Piece], list[Unit], int]:
        pinned = list(always_pieces)  # an untied embedding is never pinned here: rows on demand
        units: list[Unit] = []
        for it in items:
            keep, stream = it.split(min(it.nbytes, level))
            pinned += keep
            if stream:
                units.append(Unit(len(units), it.key, it.layer, stream))
        slot = max((u.read_bytes for u in units), default=0)
        total = sum(p.nbytes for p in pinned) + (slots * slot if units else 0)
        return total, pinned, units, slot

    # total(level) falls while more than `slots` items exceed the level (each pins a byte less per
    # byte of level, the buffers grow by `slots`); past the slots-th largest item it rises again.
    sizes = sorted((it.nbytes for it in items), reverse=True)
    knee = sizes[min(slots, len(sizes)) - 1] if sizes else 0
    best = realize(knee)
    minimum = best[0]
    if minimum > budget:
        raise BudgetTooSmall(
            budget,
            minimum,
            f": {fmt_size(fixed)} of norms and biases always resident, plus {slots} stream buffers "
            f"of {fmt_size(best[3])} (the largest layer)",
        )
    lo, hi = 0, knee  # the smallest level that fits: the least streaming
    while lo < hi:
        mid = (lo + hi) // 2
        if realize(mid)[0] <= budget:
            hi = mid
        else:
            lo = mid + 1
    _, pinned, units, slot = realize(lo)
    return Plan(
        budget,
        weight_bytes,
        pinned,
        units,
        slots,
        slot,
        embed is not None and not tied,
        row_bytes,
        lo,
        minimum,
        tied,
    )


def _minimum(tensors: list[TensorInfo], tied: bool, slots: int, head_chunk: int | None) -> int:
    try:
        make_plan(tensors, 1, tied=tied, slots=slots, head_chunk=head_chunk)
    except BudgetTooSmall as e:
        return e.minimum
    return 1
