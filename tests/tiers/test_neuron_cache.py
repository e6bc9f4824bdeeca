"""The cold-neuron cache policies on made-up traces (plain data, no model)."""

from __future__ import annotations

import random

import pytest

from sparsetier.tiers.neuron_cache import NeuronCache, simulate


@pytest.mark.parametrize("policy", ["lru", "lfu"])
def test_capacity_slots_and_protection(policy: str) -> None:
    cache = NeuronCache(4, policy)
    hits, misses = cache.lookup(0, [1, 2, 3])
    assert hits == [] and misses == [1, 2, 3]
    admitted = cache.admit(0, misses)
    assert sorted(n for n, _ in admitted) == [1, 2, 3]
    hits, misses = cache.lookup(0, [1, 2, 5, 6])
    assert hits == [1, 2] and misses == [5, 6]
    admitted = cache.admit(0, misses, protect=hits)
    assert len(cache.slots) <= 4
    # this step's hits were not evicted to make room
    assert (0, 1) in cache.slots and (0, 2) in cache.slots
    # every resident key has its own slot in 0..capacity-1
    slots = list(cache.slots.values())
    assert len(set(slots)) == len(slots) and all(0 <= s < 4 for s in slots)


def test_lru_evicts_the_least_recent() -> None:
    cache = NeuronCache(2, "lru")
    cache.admit(0, [1])
    cache.admit(0, [2])
    cache.lookup(0, [1])  # 1 is now the most recent
    cache.admit(0, [3])
    assert set(cache.slots) == {(0, 1), (0, 3)}


def test_lfu_keeps_the_frequent() -> None:
    cache = NeuronCache(2, "lfu")
    for _ in range(5):
        hits, misses = cache.lookup(0, [1])
        cache.admit(0, misses, protect=hits)
    for n in (2, 3, 4):
        hits, misses = cache.lookup(0, [n])
        cache.admit(0, misses, protect=hits)
    assert (0, 1) in cache.slots  # used 5 times: survives a stream of one-off neurons


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
