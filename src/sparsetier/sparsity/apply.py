"""Swap a model's projection weights for thresholded ones (TEAL-style activation sparsity).

Every projection (q, k, v, o, gate, up, down) can get a magnitude threshold on its input:
channels with |x| <= t are treated as zero. With the column layout (`kernels/sparse.py`) the
weights of those channels are never read, which is where the decode speed-up comes from;
the "mask" layout keeps the GGML weights and zeroes the inputs instead (same numbers, no
saved bytes: quality runs such as `eval ppl` and the allocation search use it, since
they only prefill and can then change thresholds without converting anything).

A projection at sparsity 0 keeps its original weight, so `--sparsity 0` is the dense engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import kernels
from ..errors import SparsetierError
from ..kernels import sparse
from ..weights.tensor import QuantTensor
from .profile import PROJECTIONS, Profile

# (block or ffn attribute, projection name)
_SLOTS = (
    ("wq", "q"),
    ("wk", "k"),
    ("wv", "v"),
    ("wo", "o"),
    ("gate", "gate"),
    ("up", "up"),
    ("down", "down"),
)
SCOPES = {"all": tuple(PROJECTIONS), "down": ("down",)}
# "auto": the column layout where it is faster than the dense GEMV on this machine, i.e. from the
# level `sparse.break_even` measures for the weight's type and shape (it moves from 30% to never
# with the shape: short channel records stream badly); a projection allocated less keeps its
# threshold on the dense GEMV (the same numbers, no bytes saved).
LAYOUTS = ("auto", "columns", "mask")


class SparseLinear:
    """A projection that skips input channels with |x| <= threshold (a negative threshold
    keeps all). Reads only active channels' weights when it holds a column layout; otherwise
    (layout "mask", or "dense": the GEMV over the thresholded input) it saves no bytes."""

    def __init__(self, w: QuantTensor, threshold: float, layout: str = "columns"):
        self.w = w
        self.name, self.shape = w.name, w.shape
        self.threshold = float(threshold)
        use_cols = layout == "columns" and kernels.has_extension() and type(w) is QuantTensor
        self.cw = sparse.to_columns(w) if use_cols and sparse.supports(w) else None
        self.count = layout == "mask"  # quality runs count the kept channels (a sync per call)
        self.kept = self.seen = 0  # input channels kept / seen (mask layout)

    @property
    def nbytes(self) -> int:
        return self.cw.nbytes if self.cw is not None else self.w.nbytes

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if self.cw is not None:
            return sparse.col_linear(x, self.cw, self.threshold, bias)
        if self.threshold >= 0 and self.count:
            keep = x.abs() > self.threshold
            self.kept += int(keep.sum())
            self.seen += keep.numel()
            x = x * keep
            return kernels.linear(x, self.w, bias)
        return kernels.linear(x, self.w, bias, self.threshold)  # the kernel zeroes |x| <= t

    def linear_multi(
        self, x: torch.Tensor, ws: list[SparseLinear], biases: list[torch.Tensor | None]
    ) -> list[torch.Tensor]:
        """Weights sharing one input (q/k/v, gate/up): one kernel call for those on the column
        kernels and one for those on the dense GEMV (each with its own threshold)."""
        # (column weight, GGML weight, threshold) of each; a plain weight is dense, unthresholded
        parts = [(w.cw, w.w, w.threshold) if isinstance(w, SparseLinear) else (None, w, -1.0) for w in ws]
        if any(isinstance(w, SparseLinear) and w.count for w in ws) or any(
            type(p[1]) is not QuantTensor for p in parts
        ):
            return [kernels.linear(x, w, b) for w, b in zip(ws, biases, strict=True)]
        out: list[torch.Tensor | None] = [None] * len(ws)
        for on_columns in (True, False):
            pick = [i for i, p in enumerate(parts) if (p[0] is not None) == on_columns]
            if not pick:
                continue
            bs = [biases[i] for i in pick]
            ts = [parts[i][2] for i in pick]
            if on_columns:
                ys = sparse.col_linear_multi(x, [parts[i][0] for i in pick], ts, bs)
            else:
                ys = kernels.linear_multi(x, [parts[i][1] for i in pick], bs, ts)
            for i, y in zip(pick, ys, strict=True):
                out[i] = y
        return out


def parse_level(text: str | float) -> float:
    """'0.4', '40', '40%' -> 0.4 (numbers above 1 are percentages)."""
    s = str(text).strip()
    try:
        v = float(s.rstrip("%"))
    except ValueError:
        raise SparsetierError(f"--sparsity: expected a fraction or percentage, got '{text}'") from None
    if s.endswith("%") or v > 1:
        v /= 100
    if not 0 <= v < 1:
        raise SparsetierError(f"--sparsity must be in [0, 100%), got '{text}'")
    return v


def uniform_levels(n_layers: int, level: float, scope: str = "all") -> dict[str, float]:
    """One sparsity for every projection in `scope` ("all" or "down"), in every layer."""
    if scope not in SCOPES:
        raise SparsetierError(f"--sparsity-scope must be one of {', '.join(SCOPES)}, got '{scope}'")
    return {f"{i}.{p}": level for i in range(n_layers) for p in SCOPES[scope]}


def thresholds(profile: Profile, levels: dict[str, float]) -> dict[str, float]:
    """Per "layer.proj": the |x| threshold of its input that gives its sparsity level."""
    out = {}
    for key, level in levels.items():
        layer, proj = key.split(".")
        out[key] = profile.threshold(int(layer), PROJECTIONS[proj], level)
    return out


@dataclass
class Applied:
    """What `apply` did: the wrappers by "layer.proj", and the weight bytes they hold."""

    wrappers: dict[str, SparseLinear]
    levels: dict[str, float]

    def expected_skip_bytes(self) -> float:
        """Weight bytes per decoded token the thresholds are expected to skip (calibration
        sparsity times each projection's bytes; columns layout only)."""
        return sum(self.levels.get(k, 0.0) * w.nbytes for k, w in self.wrappers.items() if w.cw is not None)

    def measured_skip(self, reset: bool = True) -> float:
        """Fraction of all wrapped projections' weight bytes whose input channel was below its
        threshold, as counted by the mask layout since the last reset."""
        total = sum(w.w.nbytes for w in self.wrappers.values())
        skipped = sum(w.w.nbytes * (1 - w.kept / w.seen) for w in self.wrappers.values() if w.seen)
        if reset:
            for w in self.wrappers.values():
                w.kept = w.seen = 0
        return skipped / max(1, total)

    def summary(self) -> str:
        n = len(self.wrappers)
        cols = sum(w.cw is not None for w in self.wrappers.values())
        total = sum(w.nbytes for w in self.wrappers.values())
        mean = sum(self.levels.get(k, 0.0) for k in self.wrappers) / max(1, n)
        return (
            f"sparsity: {n} projections thresholded (mean level {mean:.0%}), {cols} on the sparse "
            f"column kernels; ~{self.expected_skip_bytes() / 1e6:.1f} of {total / 1e6:.1f} MB "
            "skipped per token"
        )


def _owners(blk: object) -> list[tuple[object, str, str]]:
    return [(blk.ffn if attr in ("gate", "up", "down") else blk, attr, proj) for attr, proj in _SLOTS]


def apply(
    model: object,
    profile: Profile,
    levels: dict[str, float],
    layout: str = "auto",
    wrap_all: bool = False,
    release: Callable[[QuantTensor], None] | None = None,
) -> Applied:
    """Wrap each projection with a level > 0 (every projection with `wrap_all`, so that
    `set_levels` can later change any of them) in a SparseLinear with its threshold. `release(w)`
    is called for each weight once its column layout replaces it (to drop the mapped copy)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}")
    if len(model.blocks) != profile.n_layers:
        raise SparsetierError(
            f"the sparsity profile has {profile.n_layers} layers, the model {len(model.blocks)}"
        )
    ts = thresholds(profile, levels)
    wrappers = {}
    for i, blk in enumerate(model.blocks):
        for owner, attr, proj in _owners(blk):
            key = f"{i}.{proj}"
            w = getattr(owner, attr)
            if isinstance(w, SparseLinear):  # applied before: start from the original
                w = w.w
                setattr(owner, attr, w)
            if levels.get(key, 0.0) <= 0 and not wrap_all:
                continue
            if type(w) is not QuantTensor:
                raise SparsetierError("sparsity cannot be combined with streamed (tiered) weights yet")
            lay = layout
            if layout == "auto":
                fits = kernels.has_extension() and sparse.supports(w)
                wins = fits and levels.get(key, 0.0) >= sparse.break_even(w.qtype, *w.shape)
                lay = "columns" if wins else "dense"
            sw = SparseLinear(w, ts.get(key, -1.0), lay)
            if sw.cw is not None and release is not None and w.source is not None:
                release(w)  # one tensor at a time: the peak holds one extra copy, not all of them
            setattr(owner, attr, sw)
            wrappers[key] = sw
    return Applied(wrappers, dict(levels))


def set_levels(applied: Applied, profile: Profile, levels: dict[str, float]) -> None:
    """Change the thresholds of wrapped projections in place (others go to level 0)."""
    ts = thresholds(profile, levels)
    for key, w in applied.wrappers.items():
        w.threshold = ts.get(key, -1.0)
    applied.levels = dict(levels)


def remove(model: object) -> None:
    """Put the original weights back (the output weight too, if a sparse head stands in for it)."""
    if hasattr(model.output, "head"):
        model.output = model.output.w
    for blk in model.blocks:
        for owner, attr, _ in _owners(blk):
            w = getattr(owner, attr)
            if isinstance(w, SparseLinear):
                setattr(owner, attr, w.w)
