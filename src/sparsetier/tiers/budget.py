"""Memory budgets: parsing sizes ("1G", "700MB", "25%") and the engine's own accounting of the
weight bytes it holds, per tier.

The accounting is the contract of `--memory-budget`: every buffer that holds weight bytes
(pinned tensors, stream buffers, the neuron cache) is reserved here before it is allocated, and a
reservation that would pass the budget raises instead of allocating.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import SparsetierError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int, whole: int | None = None, what: str = "--memory-budget") -> int:
    """Bytes from "1G", "1.5GB", "700M", "512MiB", "123456", or "25%" (of `whole`).

    Decimal units (K, M, G = 10^3, 10^6, 10^9), binary ones spelt KiB, MiB, GiB."""
    if isinstance(text, int):
        value = text
    else:
        s = text.strip()
        if s.endswith("%"):
            if whole is None:
                raise SparsetierError(f"{what}: a percentage needs a model to be a percentage of")
            try:
                pct = float(s[:-1])
            except ValueError:
                raise SparsetierError(f"{what}: '{text}' is not a size (try 1G, 700M or 25%)") from None
            value = int(whole * pct / 100)
        else:
            m = _SIZE.match(s)
            unit = m.group(2).lower() if m else None
            if m is None or unit not in _UNITS:
                raise SparsetierError(f"{what}: '{text}' is not a size (try 1G, 700M or 25%)")
            value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise SparsetierError(f"{what} must be positive, got {text}")
    return value


def fmt_size(n: float) -> str:
    """Bytes for people: 1 MB = 10^6 bytes, like the bench tables."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


class BudgetExceeded(SparsetierError):
    """A reservation would pass the memory budget (a planner bug if it ever happens)."""


@dataclass
class Accounting:
    """Weight bytes the engine holds, per tier, never more than `budget` in total."""

    budget: int
    tiers: dict[str, int] = field(default_factory=dict)
    peak: int = 0

    @property
    def resident(self) -> int:
        return sum(self.tiers.values())

    def reserve(self, tier: str, nbytes: int) -> None:
        if self.resident + nbytes > self.budget:
            raise BudgetExceeded(
                f"reserving {fmt_size(nbytes)} for {tier} would hold {fmt_size(self.resident + nbytes)}, "
                f"over the {fmt_size(self.budget)} memory budget"
            )
        self.tiers[tier] = self.tiers.get(tier, 0) + nbytes
        self.peak = max(self.peak, self.resident)

    def release(self, tier: str, nbytes: int) -> None:
        self.tiers[tier] = self.tiers.get(tier, 0) - nbytes
