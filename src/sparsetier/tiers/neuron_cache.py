"""The cold-neuron cache: FFN neuron bundles (a neuron's gate row, up row and down column) kept in
memory after they were streamed, so a neuron that fires again soon is not read twice.

With activation sparsity, a decode step needs only the predicted-active neurons of each FFN. The
planner pins the hot ones (by the sparsity profile's activation frequency); the rest are read on
demand as bundles, and this cache, sized from what the budget leaves, keeps some of them. Two
policies: "lru" (least recently used goes first) and "lfu" (least frequently used goes first, with
counts halved every `decay_every` lookups so the cache follows a shift of topic; ties by age).
`simulate` replays a trace of active sets to compare them (docs/tiers.md has the measurement).

Plain data: keys are (layer, neuron); the caller owns the bytes (a slab of `capacity` bundles)
and uses the slot numbers this class hands out.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Key = tuple[int, int]  # (layer, neuron)


@dataclass
class CacheStats:
    lookups: int = 0
    hits: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0


class NeuronCache:
    # LFU with slow decay won on real traces (docs/tiers.md): the default; counts are halved every
    # `decay_every` lookups (~32 tokens of a small model's active sets)
    def __init__(self, capacity: int, policy: str = "lfu", decay_every: int = 1 << 17):
        if policy not in ("lru", "lfu"):
            raise ValueError(f"unknown cache policy {policy!r} (lru, lfu)")
        self.capacity, self.policy, self.decay_every = capacity, policy, decay_every
        self.slots: dict[Key, int] = {}  # resident key -> slot in the caller's slab
        self._free = list(range(capacity))
        self._order: OrderedDict[Key, None] = OrderedDict()  # lru: oldest first
        self._count: dict[Key, int] = {}  # lfu: (decayed) uses of every key seen
        self._state: dict[Key, tuple[int, int]] = {}  # lfu: resident key -> (count, last use)
        self._heap: list[tuple[int, int, Key]] = []  # lfu: states, stale ones skipped on pop
        self._tick = 0
        self.stats = CacheStats()

    def lookup(self, layer: int, neurons: Iterable[int]) -> tuple[list[int], list[int]]:
        """(resident neurons, missing neurons) of one layer's active set; counts the use."""
        hits, misses = [], []
        for n in neurons:
            key = (layer, n)
            self._tick += 1
            if self.policy == "lfu":
                self._count[key] = self._count.get(key, 0) + 1
                if self._tick % self.decay_every == 0:
                    self._decay()
            if key in self.slots:
                hits.append(n)
                self._touch(key)
            else:
                misses.append(n)
        self.stats.lookups += len(hits) + len(misses)
        self.stats.hits += len(hits)
        return hits, misses

    def admit(self, layer: int, neurons: Sequence[int], protect: Iterable[int] = ()) -> list[tuple[int, int]]:
        """Make room for just-read bundles; [(neuron, slot)] for those admitted (the caller copies
        their bytes into the slots). Neurons of this layer in `protect` (the step's hits) are not
        evicted, so a step never evicts what it is about to use."""
        keep = {(layer, n) for n in protect}
        out = []
        for n in neurons:
            key = (layer, n)
            if key in self.slots or self.capacity == 0:
                continue
            if not self._free and not self._evict(keep):
                break
            self.slots[key] = slot = self._free.pop()
            self._touch(key)
            keep.add(key)  # nor what this step just read
            out.append((n, slot))
        return out

    def _touch(self, key: Key) -> None:
        if self.policy == "lru":
            self._order[key] = None
            self._order.move_to_end(key)
        else:
            state = (self._count.get(key, 1), self._tick)
            self._state[key] = state
            heapq.heappush(self._heap, (*state, key))

    def _evict(self, keep: set[Key]) -> bool:
        victim = None
        if self.policy == "lru":
            victim = next((k for k in self._order if k not in keep), None)
            if victim is not None:
                del self._order[victim]
        else:
            held = []
            while self._heap:
                count, tick, key = heapq.heappop(self._heap)
                if self._state.get(key) != (count, tick):
                    continue  # stale: the key was used (or evicted) since
                if key in keep:
                    held.append((count, tick, key))
                    continue
                victim = key
                del self._state[key]
                break
            for item in held:
                heapq.heappush(self._heap, item)
        if victim is None:
            return False
        self._free.append(self.slots.pop(victim))
        return True

    def _decay(self) -> None:
        """Halve every count (forget old popularity); rebuild the heap from the resident keys."""
        self._count = {k: c // 2 for k, c in self._count.items() if c > 1}
        self._state = {k: (self._count.get(k, 0), t) for k, (_, t) in self._state.items()}
        self._heap = [(c, t, k) for k, (c, t) in self._state.items()]
        heapq.heapify(self._heap)


def simulate(
    trace: Sequence[Sequence[Sequence[int]]],
    capacity: int,
    policy: str,
    pinned: set[Key] | None = None,
    decay_every: int = 1 << 17,
) -> CacheStats:
    """Replay `trace` (per token, per layer, the active neurons): pinned neurons never miss; the
    rest go through a cache of `capacity` bundles. Returns the cache's hit statistics."""
    cache = NeuronCache(capacity, policy, decay_every)
    pinned = pinned or set()
    for token in trace:
        for layer, active in enumerate(token):
            cold = [n for n in active if (layer, n) not in pinned]
            hits, misses = cache.lookup(layer, cold)
            cache.admit(layer, misses, protect=hits)
    return cache.stats
