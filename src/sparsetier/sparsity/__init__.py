"""Activation sparsity (issue 6): calibration profiles, TEAL-style input thresholds with the
sparse column kernels, the greedy per-layer allocation, and the exact ReLU-family FFN.

    profile = profile_model(engine, ids, "pydoc:calib")   # sparsetier profile
    enable(engine, "40%", scope="all")                     # --sparsity 40% on run/chat/eval/bench
    enable(engine, "auto")                                  # the allocation saved in the profile
"""

from __future__ import annotations

from ..errors import SparsetierError
from . import relu
from .apply import SCOPES, Applied, apply, parse_level, remove, set_levels, thresholds, uniform_levels
from .profile import INPUTS, PROJECTIONS, Profile, load_profile, profile_model, save_profile, sidecar_path

AUTO = ("auto", "default")


def levels_for(profile: Profile, spec: str | float, scope: str = "all") -> dict[str, float]:
    """`--sparsity` as per-projection levels: a model-wide level over `scope`, or "auto" for
    the allocation the profiler saved."""
    if str(spec).strip().lower() in AUTO:
        if not profile.allocation:
            raise SparsetierError(
                "the sparsity profile has no saved allocation: run "
                "`sparsetier profile MODEL --max-ppl-increase 2%` to choose one"
            )
        return dict(profile.allocation)
    return uniform_levels(profile.n_layers, parse_level(spec), scope)


def enable(
    engine: object,
    spec: str | float | None,
    scope: str = "all",
    layout: str = "columns",
    predictors: str | None = None,
) -> Applied | None:
    """Turn on activation sparsity in a loaded engine: thresholds at level `spec` (None or 0:
    none, the dense engine untouched), and FFN neurons chosen by `predictors` (a PowerInfer
    predictor folder). Returns the thresholded projections, or None when there are none."""
    if getattr(engine, "tiers", None) is not None:
        raise SparsetierError("--sparsity cannot be combined with --memory-budget/--memory-limit yet")
    if scope not in SCOPES:
        raise SparsetierError(f"--sparsity-scope must be one of {', '.join(SCOPES)}, got '{scope}'")
    dense = spec is None or (str(spec).strip().lower() not in AUTO and parse_level(spec) == 0)
    ffn_skips = predictors is not None or (not dense and engine.cfg.ffn_act in relu.RELU_FAMILY)
    if predictors is not None:
        from . import predictor

        preds = predictor.load_powerinfer(predictors, engine.cfg.n_layers)
        for blk, p in zip(engine.model.blocks, preds, strict=True):
            blk.ffn = predictor.PredictedFFN(blk.ffn, p, columns=layout == "columns")
    elif ffn_skips:
        # ReLU-family FFNs skip their zero neurons exactly
        relu.install(engine.model, columns=layout == "columns")
    if dense:
        return None
    profile = load_profile(engine.source.path)
    levels = levels_for(profile, spec, scope)
    if ffn_skips:  # the FFN picks its own neurons: thresholds stay on attention
        levels = {k: v for k, v in levels.items() if k.split(".")[1] in ("q", "k", "v", "o")}
    return apply(engine.model, profile, levels, layout)


__all__ = [
    "INPUTS",
    "PROJECTIONS",
    "SCOPES",
    "Applied",
    "Profile",
    "apply",
    "enable",
    "levels_for",
    "load_profile",
    "parse_level",
    "profile_model",
    "remove",
    "save_profile",
    "set_levels",
    "sidecar_path",
    "thresholds",
    "uniform_levels",
]
