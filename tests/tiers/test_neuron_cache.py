"""The cold-neuron cache policies on made-up traces (plain data, no model)."""

from __future__ import annotations

import random

import pytest
import torch

from sparsetier.tiers.neuron_cache import NeuronCache, simulate


def ids(*n: int) -> torch.Tensor:
    return torch.tensor(n, dtype=torch.long)


def step(cache: NeuronCache, *active: int) -> torch.Tensor:
    """One decode step of layer 0: look up, admit the misses; returns the lookup's slots."""
    a = ids(*active)
    slots = cache.lookup(0, a)
    cache.admit(0, a[slots < 0], a)
    return slots


@pytest.mark.parametrize("policy", ["lru", "lfu"])
def test_capacity_slots_and_protection(policy: str) -> None:
    cache = NeuronCache(2, 16, 4, policy)
    assert (step(cache, 1, 2, 3) < 0).all()
    slots = step(cache, 1, 2, 5, 6)
    assert (slots[:2] >= 0).all() and (slots[2:] < 0).all()
    resident = (cache.slot[0] >= 0).nonzero().squeeze(1).tolist()
    assert len(resident) == 4
    assert {1, 2} <= set(resident)  # this step's hits were not evicted to make room
    held = cache.slot[0, resident].tolist()  # every resident neuron has its own slot
    assert len(set(held)) == 4 and all(0 <= s < 4 for s in held)
    assert (cache.slot[1] < 0).all()  # layers do not share slots


def test_a_step_never_evicts_its_own_neurons() -> None:
    cache = NeuronCache(1, 16, 2, "lru")
    step(cache, 1, 2)
    admitted, slots = cache.admit(0, ids(3, 4), ids(1, 2, 3, 4))
    assert admitted.numel() == 0 and slots.numel() == 0  # full of this step's neurons


def test_lru_evicts_the_least_recent() -> None:
    cache = NeuronCache(1, 8, 2, "lru")
    step(cache, 1)
    step(cache, 2)
    step(cache, 1)  # 1 is now the most recent
    step(cache, 3)
    assert (cache.slot[0] >= 0).nonzero().squeeze(1).tolist() == [1, 3]


def test_lfu_keeps_the_frequent() -> None:
    cache = NeuronCache(1, 8, 2, "lfu")
    for _ in range(5):
        step(cache, 1)
    for n in (2, 3, 4):
        step(cache, n)
    assert cache.slot[0, 1] >= 0  # used 5 times: survives a stream of one-off neurons
    assert cache.slot[0, 4] >= 0


def test_simulate_pinned_never_miss_and_bigger_cache_hits_more() -> None:
    rng = random.Random(0)
    hot = list(range(8))
    trace = [[sorted(set(hot[:4] + rng.sample(range(8, 64), 6)))] for _ in range(200)]
    pinned = {(0, n) for n in hot[:4]}
    small = simulate(trace, 8, "lru", pinned)
    big = simulate(trace, 48, "lru", pinned)
    assert small.lookups == big.lookups == 200 * 6  # pinned neurons do not reach the cache
    assert big.hit_rate > small.hit_rate
    assert simulate(trace, 0, "lfu").hit_rate == 0.0
