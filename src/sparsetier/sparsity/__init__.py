"""Activation sparsity (issue 6): calibration profiles, TEAL-style input thresholds with the
sparse column kernels, the greedy per-layer allocation, and the exact ReLU-family FFN.

    profile = profile_model(engine, ids, "pydoc:calib")   # sparsetier profile
    enable(engine, "40%", scope="all")                     # --sparsity 40% on run/chat/eval/bench
    enable(engine, "auto")                                  # the allocation saved in the profile
    enable_head(engine, "auto", greedy=True)                # the sparse output head (--sparse-head)
"""

from __future__ import annotations

import os
import sys

from ..errors import SparsetierError
from ..weights.tensor import QuantTensor
from . import relu
from .apply import SCOPES, Applied, apply, parse_level, remove, set_levels, thresholds, uniform_levels
from .head import MIN_RECALL, SparseHead
from .profile import INPUTS, PROJECTIONS, Profile, load_profile, profile_model, save_profile, sidecar_path

AUTO = ("auto", "default")
HEAD_MODES = ("auto", "on", "off")


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
    layout: str = "auto",
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
            blk.ffn = predictor.PredictedFFN(blk.ffn, p, columns=layout != "mask")
    elif ffn_skips:
        # ReLU-family FFNs skip their zero neurons exactly
        relu.install(engine.model, columns=layout != "mask")
    if dense:
        return None
    profile = load_profile(engine.source.path)
    levels = levels_for(profile, spec, scope)
    if ffn_skips:  # the FFN picks its own neurons: thresholds stay on attention
        levels = {k: v for k, v in levels.items() if k.split(".")[1] in ("q", "k", "v", "o")}
    gguf = engine.source.gguf
    return apply(
        engine.model, profile, levels, layout, release=(lambda w: gguf.release(w.source)) if gguf else None
    )


def enable_head(engine: object, mode: str = "auto", greedy: bool = True) -> SparseHead | None:
    """Put the profile's sparse output head in front of the model's output weight. "auto": only
    for greedy decoding, and only when the profile holds a head whose held-out argmax recall
    reached MIN_RECALL (no profile, or one without a head: the dense head; an unusable profile is
    reported on stderr). "on": always (an error if there is none). "off": never."""
    if mode not in HEAD_MODES:
        raise SparsetierError(f"--sparse-head must be one of {', '.join(HEAD_MODES)}, got '{mode}'")
    model = engine.model
    if mode == "off" or (mode == "auto" and not greedy) or isinstance(model.output, SparseHead):
        return None
    path = engine.source.path
    if mode == "auto" and not os.path.exists(sidecar_path(path)):
        return None
    try:
        if getattr(engine, "tiers", None) is not None:
            raise SparsetierError("the sparse output head cannot be combined with --memory-budget yet")
        head = load_profile(path).head
        if head is None and mode == "auto":  # a profile made without --sparse-head
            return None
        if head is None:
            raise SparsetierError(
                "the sparsity profile has no sparse output head: run `sparsetier profile MODEL --sparse-head`"
            )
        if type(model.output) is not QuantTensor or tuple(model.output.shape) != (
            head.lowrank.shape[0],
            head.proj.shape[0],
        ):
            raise SparsetierError(
                "the sparse output head in the profile does not fit this model's output weight"
            )
    except SparsetierError as e:
        if mode == "on":
            raise
        print(f"sparse output head off: {e}", file=sys.stderr)
        return None
    if mode == "auto" and head.info.get("recall", 0.0) < MIN_RECALL:
        return None
    model.output = SparseHead(model.output, head)
    return model.output


__all__ = [
    "INPUTS",
    "PROJECTIONS",
    "SCOPES",
    "Applied",
    "Profile",
    "apply",
    "enable",
    "enable_head",
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
