"""The cold-neuron cache: FFN neuron bundles (a neuron's gate row, up row and down column) kept in
memory after they were read, so a neuron that fires again soon is not read twice.

With activation sparsity, a decode step needs only the predicted-active neurons of each FFN. The
planner pins the hot ones (by the sparsity profile's activation frequency); the rest are read on
demand as bundles (`bundles.py`), and this cache, sized from what the budget leaves, keeps some of
them: `capacity` bundles per layer. Two policies: "lru" (least recently used goes first) and "lfu"
(least frequently used goes first, ties by age, with every count halved each `decay_steps` steps of
the layer so the cache follows a change of topic). `simulate` replays a trace of active sets to
compare them; docs/tiers.md has both the replay and the measurement in decode.

Plain bookkeeping on tensors (one step is a few vector operations, not a loop over neurons); the
caller owns the bytes (a slab of `capacity` bundles per layer) and uses the slot numbers it hands out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

POLICIES = ("lru", "lfu")


@dataclass
class CacheStats:
    lookups: int = 0
    hits: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0


class NeuronCache:
    def __init__(self, layers: int, neurons: int, capacity: int, policy: str = "lfu", decay_steps: int = 32):
        if policy not in POLICIES:
            raise ValueError(f"unknown cache policy {policy!r} (lru, lfu)")
        self.capacity, self.policy, self.decay_steps = capacity, policy, decay_steps
        self.slot = torch.full((layers, neurons), -1, dtype=torch.long)  # cache slot, -1: not cached
        self.count = torch.zeros(layers, neurons, dtype=torch.long)  # lfu: decayed uses
        self.last = torch.zeros(layers, neurons, dtype=torch.long)  # step of the last use
        self._steps = [0] * layers
        self._free = [list(range(capacity - 1, -1, -1)) for _ in range(layers)]
        self.stats = CacheStats()

    def lookup(self, layer: int, neurons: torch.Tensor) -> torch.Tensor:
        """Cache slots of one step's cold active neurons (int64), -1 where missing; counts the use."""
        self._steps[layer] += 1
        step = self._steps[layer]
        if self.policy == "lfu":
            if step % self.decay_steps == 0:
                self.count[layer] >>= 1
            self.count[layer, neurons] += 1
        slots = self.slot[layer, neurons]
        hit = slots >= 0
        self.last[layer, neurons[hit]] = step
        self.stats.lookups += neurons.numel()
        self.stats.hits += int(hit.sum())
        return slots

    def admit(
        self, layer: int, neurons: torch.Tensor, active: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Make room for just-read bundles `neurons`: (admitted neurons, their slots), a prefix of
        `neurons`; the caller copies their bytes into the slots. Neurons of this step (`active`)
        are never evicted, so a step does not evict what it is using."""
        if self.capacity == 0 or neurons.numel() == 0:
            return neurons[:0], neurons[:0]
        free = self._free[layer]
        need = neurons.numel() - len(free)
        if need > 0:
            resident = self.slot[layer] >= 0
            resident[active] = False
            candidates = resident.nonzero().squeeze(1)
            if candidates.numel():
                key = self.last[layer, candidates]
                if self.policy == "lfu":
                    key = key + (self.count[layer, candidates] << 32)
                n = min(need, candidates.numel())
                victims = candidates[torch.topk(key, n, largest=False).indices]
                free.extend(self.slot[layer, victims].tolist())
                self.slot[layer, victims] = -1
        n = min(neurons.numel(), len(free))
        taken = torch.tensor(free[len(free) - n :][::-1], dtype=torch.long)
        del free[len(free) - n :]
        admitted = neurons[:n]
        self.slot[layer, admitted] = taken
        self.last[layer, admitted] = self._steps[layer]
        return admitted, taken


def simulate(
    trace: Sequence[Sequence[Sequence[int]]],
    capacity: int,
    policy: str,
    pinned: set[tuple[int, int]] | None = None,
    decay_steps: int = 32,
) -> CacheStats:
    """Replay `trace` (per token, per layer, the active neurons): pinned neurons never miss; the
    rest go through a cache of `capacity` bundles per layer. Returns the cache's hit statistics."""
    pinned = pinned or set()
    layers = len(trace[0]) if trace else 0
    neurons = 1 + max((n for token in trace for active in token for n in active), default=0)
    cache = NeuronCache(layers, neurons, capacity, policy, decay_steps)
    for token in trace:
        for layer, active in enumerate(token):
            ids = torch.tensor(sorted(active), dtype=torch.long)
            cold = torch.tensor([n for n in ids.tolist() if (layer, n) not in pinned], dtype=torch.long)
            slots = cache.lookup(layer, cold)
            cache.admit(layer, cold[slots < 0], ids)
    return cache.stats
