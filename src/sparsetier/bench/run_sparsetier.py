"""Runner: our engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .measure import Loaded
from .roofline import EMBED, decode_bytes_per_token


def load(path: str, threads: int, ctx_size: int, options: dict[str, Any]) -> Loaded:
    from ..cli.profile import predictors_path
    from ..engine import GREEDY, Engine
    from ..errors import SparsetierError

    options = dict(options)
    budget = options.pop("memory_budget", None)
    limit = options.pop("memory_limit", None)
    level = options.pop("sparsity", None)
    scope = options.pop("sparsity_scope", "all")
    head_mode = options.pop("sparse_head", "off")  # the dense head unless a case asks for it
    neurons = options.pop("neurons", None)  # a cache policy: stream FFN neurons with the predictors
    if options:
        raise SparsetierError(f"sparsetier runner: unknown options {sorted(options)}")
    engine = Engine.load(
        path,
        threads=threads,
        ctx_size=ctx_size,
        progress=False,
        memory_budget=budget,
        memory_limit=limit if budget is None else None,
        predictors=predictors_path(path) if neurons else None,
        neuron_cache=neurons or "lfu",
    )
    applied = None
    if level is not None:
        from .. import sparsity

        applied = sparsity.enable(engine, level, scope)
    head = None
    if head_mode != "off":
        from .. import sparsity

        head = sparsity.enable_head(engine, head_mode, greedy=True)

    def generate(ids: list[int], n: int) -> Iterator[int]:
        engine.slots[0].tokens.clear()  # forget the warm-up: the engine would reuse its KV prefix
        yield from engine.generate(ids, GREEDY, max_tokens=n, stop_ids=set())

    # Counted from the weights the engine holds, so a sparse or tiered engine can report fewer.
    weights = engine.source.weights
    nbytes = {name: w.nbytes for name, w in weights.items()}

    def info() -> dict[str, Any]:
        out: dict[str, Any] = {}
        if head is not None:
            # the low-rank head and the candidates' rows replace the full output weight
            per_row = head.w.nbytes / head.w.shape[0]
            out["sparse_skip_bytes_per_token"] = (
                head.w.nbytes - head.head.approx_bytes - (per_row * head.candidates / max(1, head.calls))
            )
        if applied is not None:
            out["sparse_skip_bytes_per_token"] = out.get("sparse_skip_bytes_per_token", 0) + (
                applied.expected_skip_bytes()
            )
        if out:
            return out
        if engine.tiers is None:
            return {}
        r = engine.tiers.report()
        if r["neurons"]:  # what neurons read varies by token: the measured disk bytes say it
            return {"tiers": r}
        return {"streamed_bytes_per_token": r["streamed_bytes_per_token"], "tiers": r}

    return Loaded(generate, decode_bytes_per_token(nbytes, weights[EMBED].shape[0]), info)
