"""Continuous batching on plain data: which sequences the next engine step runs.

Each step is one batched decode row per running sequence plus at most one prefill chunk,
so a new prompt joins without stalling the running streams for longer than one chunk.
Sequences join between steps (when a slot is free) and leave between steps (finished or
cancelled). No tensors here: the runner executes the plan and reports back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field


@dataclass(eq=False)
class Sequence:
    """One request's token stream as the scheduler sees it."""

    id: int
    prompt: list[int]
    max_tokens: int
    slot: int = -1  # KV-cache slot while running, -1 while waiting
    computed: int = 0  # prompt tokens already in the slot's cache
    tokens: list[int] = field(default_factory=list)  # generated; the last one is fed by the next decode

    @property
    def prefilling(self) -> bool:
        return self.computed < len(self.prompt)

    @property
    def position(self) -> int:
        """Cache position of the token the next decode step feeds (the last generated one)."""
        return len(self.prompt) + len(self.tokens) - 1


@dataclass
class PrefillChunk:
    seq: Sequence
    start: int  # first position; the slot's cache holds exactly the tokens before it afterwards
    tokens: list[int]

    @property
    def last(self) -> bool:
        """Whether this chunk ends the prompt (its logits give the first generated token)."""
        return self.start + len(self.tokens) == len(self.seq.prompt)


@dataclass
class Step:
    decode: list[Sequence]  # one new token each, in one batched forward
    prefill: PrefillChunk | None

    @property
    def empty(self) -> bool:
        return not self.decode and self.prefill is None


def common_prefix(a: Seq[int], b: Seq[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Scheduler:
    def __init__(self, n_slots: int, prefill_chunk: int):
        if n_slots < 1 or prefill_chunk < 1:
            raise ValueError("need at least one slot and a positive prefill chunk")
        self.prefill_chunk = prefill_chunk
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.free: list[int] = list(range(n_slots))
        self._last_used = [0] * n_slots  # step counter per slot, to evict the least recently used cache
        self._clock = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def remove(self, seq: Sequence) -> None:
        """Drop a finished or cancelled sequence; its slot is free for the next step."""
        if seq in self.running:
            self.running.remove(seq)
            self.free.append(seq.slot)
            self._last_used[seq.slot] = self._clock
            seq.slot = -1
        elif seq in self.waiting:
            self.waiting.remove(seq)

    def schedule(self, cached: Seq[Seq[int]]) -> Step:
        """Plan the next step. `cached[s]` is what slot s's KV cache holds: a new sequence
        takes the free slot sharing the longest prefix with its prompt and skips the whole
        chunks of that prefix (a long system prompt or earlier chat turns are not recomputed)."""
        self._clock += 1
        while self.waiting and self.free:
            self._place(self.waiting.popleft(), cached)
        decode = [s for s in self.running if not s.prefilling]
        # oldest first: a prompt finishes prefilling before the next one starts
        pending = next((s for s in self.running if s.prefilling), None)
        chunk = None
        if pending is not None:
            start = pending.computed
            chunk = PrefillChunk(pending, start, pending.prompt[start : start + self.prefill_chunk])
        return Step(decode, chunk)

    def _place(self, seq: Sequence, cached: Seq[Seq[int]]) -> None:
        # The last prompt token is always recomputed: its logits give the first new token.
        # Only whole chunks are reused, so every prompt position is computed in the same chunk
        # as in a fresh prefill (same kernels, same float rounding): a repeated request with
        # the same seed gives the same text whether or not it hit the cache.
        reuse = {}
        for s in self.free:
            n = common_prefix(cached[s], seq.prompt[:-1])
            reuse[s] = n - n % self.prefill_chunk
        slot = max(self.free, key=lambda s: (reuse[s], -self._last_used[s]))
        self.free.remove(slot)
        seq.slot, seq.computed = slot, reuse[slot]
        self.running.append(seq)

    @property
    def busy(self) -> int:
        return len(self.running)
