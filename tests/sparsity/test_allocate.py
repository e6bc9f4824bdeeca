"""The greedy allocation search on synthetic data: it stays within the perplexity budget,
spends sparsity where it is cheap, and skips at least as many bytes as the best uniform level."""

from __future__ import annotations

import torch

from sparsetier.sparsity.allocate import AllocationConfig, allocate, greedy_order
from sparsetier.sparsity.profile import Profile, _Stats


def _profile() -> Profile:
    stats = _Stats(2, 32)
    gen = torch.Generator().manual_seed(0)
    # layer 0: heavy-tailed inputs (little energy below a threshold: cheap to sparsify);
    # layer 1: uniform-ish magnitudes (expensive)
    heavy = torch.randn(2000, 32, generator=gen) ** 3
    flat = torch.rand(2000, 32, generator=gen) + 0.5
    for inp in ("attn", "o", "ffn", "down"):
        stats.add(0, inp, heavy)
        stats.add(1, inp, flat)
    z = torch.zeros(2, 32)
    return Profile("0" * 64, 2000, "synthetic", stats.counts, stats.energy, z, z, torch.zeros(2))


def _evaluate(profile: Profile, calls: list):
    """Perplexity that grows with the dropped energy, down projections twice as sensitive."""

    def evaluate(levels: dict[str, float]) -> float:
        calls.append(dict(levels))
        rise = 0.0
        for key, level in levels.items():
            layer, proj = key.split(".")
            inp = {"q": "attn", "k": "attn", "v": "attn", "o": "o", "gate": "ffn", "up": "ffn"}.get(
                proj, "down"
            )
            rise += (2.0 if proj == "down" else 1.0) * 0.05 * profile.dropped_energy(int(layer), inp, level)
        return 10.0 * (1 + rise)

    return evaluate


def test_allocation_within_budget_and_beats_uniform() -> None:
    profile = _profile()
    keys = [f"{i}.{p}" for i in range(2) for p in ("q", "k", "v", "o", "gate", "up", "down")]
    nbytes = {k: (300 if k.endswith(("gate", "up", "down")) else 100) for k in keys}
    calls: list = []
    evaluate = _evaluate(profile, calls)
    cfg = AllocationConfig(max_ppl_increase=0.02)
    alloc = allocate(profile, nbytes, evaluate, cfg)
    assert alloc.base_ppl == 10.0
    assert alloc.ppl <= 10.0 * 1.02 + 1e-9
    assert evaluate(alloc.levels) == alloc.ppl
    # cheap layer 0 gets more sparsity than expensive layer 1
    mean = [sum(v for k, v in alloc.levels.items() if k.startswith(f"{i}.")) / 7 for i in range(2)]
    assert mean[0] > mean[1]
    # the best uniform level within the same budget skips fewer bytes
    best_uniform = 0.0
    for step in range(1, 19):
        level = step * 0.05
        if evaluate({k: level for k in keys}) <= 10.2:
            best_uniform = level
    assert alloc.skipped_fraction >= best_uniform
    assert len(calls) < 40  # a bounded number of perplexity runs


def test_greedy_order_is_monotone_per_projection() -> None:
    profile = _profile()
    nbytes = {"0.q": 100, "1.q": 100, "0.down": 300}
    order = greedy_order(profile, nbytes, {"q": 1.0, "down": 2.0}, AllocationConfig(step=0.1, max_level=0.5))
    assert len(order) == 3 * 5
    for key in nbytes:
        levels = [lv for k, lv in order if k == key]
        assert levels == sorted(levels) and levels[0] == 0.1 and abs(levels[-1] - 0.5) < 1e-9


def test_sensitivity_within_noise_is_floored() -> None:
    """A projection type whose perplexity did not rise (noise) must not look free."""
    from sparsetier.sparsity.allocate import measure_sensitivity

    profile = _profile()
    keys = [f"{i}.{p}" for i in range(2) for p in ("q", "o", "down")]

    def evaluate(levels: dict[str, float]) -> float:
        return 10.0 if any(k.endswith(".o") for k in levels) else 11.0

    sens = measure_sensitivity(profile, keys, evaluate, 10.0, 0.5)
    assert sens["o"] >= 0.1 * sorted(sens.values())[1] > 0
