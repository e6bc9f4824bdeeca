"""Greedy per-layer, per-projection sparsity allocation under a perplexity budget (TEAL §4.2
in spirit: spend sparsity where it is cheap).

Trying every increment against real perplexity is out of reach (7 projections x L layers x
levels), so the search has two parts:

1. a cost proxy per increment: the fraction of the input's energy (sum x^2, from the
   profile's histograms) the larger threshold drops, times a sensitivity per projection
   type measured once on held-out text (how much perplexity each type loses per unit of
   dropped energy when all its layers are thresholded at `probe_level`);
2. a greedy order: repeatedly take the increment with the most weight bytes skipped per
   unit of cost (each projection's increments in order), then binary-search the longest
   prefix of that order whose held-out perplexity stays within the budget.

The perplexity of every tried allocation comes from `evaluate(levels)`, so the search itself
is plain data and testable with any function.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from .profile import PROJECTIONS, Profile


@dataclass
class AllocationConfig:
    max_ppl_increase: float = 0.02  # relative: 0.02 = +2% over the dense perplexity
    step: float = 0.05  # sparsity increment per greedy step
    max_level: float = 0.9
    probe_level: float = 0.5  # level used to measure each projection type's sensitivity


@dataclass
class Allocation:
    levels: dict[str, float]
    base_ppl: float
    ppl: float
    skipped_fraction: float  # of the thresholded projections' weight bytes, per token
    tried: list[tuple[int, float]] = field(default_factory=list)  # (greedy prefix length, ppl)
    sensitivity: dict[str, float] = field(default_factory=dict)

    def info(self) -> dict:
        return {
            "base_ppl": self.base_ppl,
            "ppl": self.ppl,
            "skipped_fraction": self.skipped_fraction,
            "tried": self.tried,
            "sensitivity": self.sensitivity,
        }


def _energy(profile: Profile, key: str, level: float) -> float:
    layer, proj = key.split(".")
    return profile.dropped_energy(int(layer), PROJECTIONS[proj], level)


def greedy_order(
    profile: Profile,
    nbytes: dict[str, int],
    sensitivity: dict[str, float],
    cfg: AllocationConfig,
) -> list[tuple[str, float]]:
    """The increments (key, new level) in greedy order: most bytes skipped per unit of
    proxy cost first; a projection's next increment becomes a candidate once its previous
    one is taken."""
    heap: list[tuple[float, str, float]] = []

    def push(key: str, level: float) -> None:
        nxt = round(level + cfg.step, 6)
        if nxt > cfg.max_level + 1e-9:
            return
        proj = key.split(".")[1]
        cost = sensitivity.get(proj, 1.0) * max(
            0.0, _energy(profile, key, nxt) - _energy(profile, key, level)
        )
        gain = cfg.step * nbytes[key]
        heapq.heappush(heap, (cost / gain if gain > 0 else float("inf"), key, nxt))

    for key in nbytes:
        push(key, 0.0)
    order = []
    while heap:
        _, key, level = heapq.heappop(heap)
        order.append((key, level))
        push(key, level)
    return order


def _levels_at(order: list[tuple[str, float]], n: int) -> dict[str, float]:
    levels: dict[str, float] = {}
    for key, level in order[:n]:
        levels[key] = level
    return levels


def measure_sensitivity(
    profile: Profile,
    keys: list[str],
    evaluate: Callable[[dict[str, float]], float],
    base: float,
    level: float,
) -> dict[str, float]:
    """Per projection type: relative perplexity increase per unit of mean dropped energy, with
    every layer's projection of that type at `level`."""
    out = {}
    for proj in PROJECTIONS:
        ks = [k for k in keys if k.split(".")[1] == proj]
        if not ks:
            continue
        energy = sum(_energy(profile, k, level) for k in ks) / len(ks)
        rise = max(evaluate({k: level for k in ks}) / base - 1, 1e-6)
        out[proj] = rise / max(energy, 1e-12)
    # A type whose measured rise is within noise would otherwise look free and be pushed to
    # the maximum level first (seen on SmolLM2's o projection); floor it at a tenth of the median.
    floor = 0.1 * sorted(out.values())[len(out) // 2] if out else 0.0
    return {p: max(s, floor) for p, s in out.items()}


def allocate(
    profile: Profile,
    nbytes: dict[str, int],
    evaluate: Callable[[dict[str, float]], float],
    cfg: AllocationConfig | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> Allocation:
    """Maximise skipped weight bytes per token with evaluate(levels) <= (1 + budget) x dense."""
    cfg = cfg or AllocationConfig()
    base = evaluate({})
    log(f"dense perplexity {base:.4f}; budget {base * (1 + cfg.max_ppl_increase):.4f}")
    sens = measure_sensitivity(profile, list(nbytes), evaluate, base, cfg.probe_level)
    log("sensitivity per unit of dropped energy: " + ", ".join(f"{p} {s:.3g}" for p, s in sens.items()))
    order = greedy_order(profile, nbytes, sens, cfg)
    limit = base * (1 + cfg.max_ppl_increase)
    lo, hi, best_ppl, tried = 0, len(order), base, []
    while lo < hi:  # the longest prefix within budget (perplexity grows with the prefix)
        mid = (lo + hi + 1) // 2
        ppl = evaluate(_levels_at(order, mid))
        tried.append((mid, ppl))
        log(f"greedy prefix {mid}/{len(order)}: perplexity {ppl:.4f}")
        if ppl <= limit:
            lo, best_ppl = mid, ppl
        else:
            hi = mid - 1
    levels = _levels_at(order, lo)
    total = sum(nbytes.values())
    skipped = sum(levels.get(k, 0.0) * b for k, b in nbytes.items()) / max(1, total)
    return Allocation(levels, base, best_ppl, skipped, tried, sens)
