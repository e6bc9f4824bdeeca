"""Runner: our engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .measure import Loaded
from .roofline import EMBED, decode_bytes_per_token


def load(path: str, threads: int, ctx_size: int, options: dict[str, Any]) -> Loaded:
    from ..engine import GREEDY, Engine
    from ..errors import SparsetierError

    if options:
        raise SparsetierError(f"sparsetier runner: unknown options {sorted(options)}")
    engine = Engine.load(path, threads=threads, ctx_size=ctx_size, progress=False)

    def generate(ids: list[int], n: int) -> Iterator[int]:
        engine.slots[0].tokens.clear()  # forget the warm-up: the engine would reuse its KV prefix
        yield from engine.generate(ids, GREEDY, max_tokens=n, stop_ids=set())

    # Counted from the weights the engine holds, so a sparse or tiered engine can report fewer.
    weights = engine.source.weights
    nbytes = {name: w.nbytes for name, w in weights.items()}
    return Loaded(generate, decode_bytes_per_token(nbytes, weights[EMBED].shape[0]))
