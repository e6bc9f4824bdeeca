"""Text in, text out: detokenize as tokens arrive and cut at stop strings.

Text that could still turn into a stop string is held back until it cannot, so a caller
never sees (and a stream never sends) part of a stop string.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..tokenizer import StreamDecoder
from .engine import Engine
from .sampling import SamplingParams


class StopMatcher:
    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.pending = ""
        self.stopped = False

    def push(self, text: str) -> str:
        """Add new text; return what is safe to emit now."""
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending, self.stopped = self.pending[: min(hits)], "", True
            return out
        cut = max(len(self.pending) - self.hold, 0)
        # only hold back a tail that really is a prefix of some stop string
        while cut < len(self.pending) and not any(s.startswith(self.pending[cut:]) for s in self.stops):
            cut += 1
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


def stream_text(
    engine: Engine,
    prompt: list[int],
    params: SamplingParams,
    max_tokens: int,
    stop: list[str] | None = None,
    ignore_eos: bool = False,
    slot: int = 0,
) -> Iterator[str]:
    """Yield pieces of generated text; engine.stats holds the counts and timings afterwards."""
    decoder = StreamDecoder(engine.tokenizer)
    matcher = StopMatcher(stop or [])
    stop_ids = set() if ignore_eos else None
    tokens = engine.generate(prompt, params, max_tokens, stop_ids=stop_ids, slot=slot)
    for token in tokens:
        piece = matcher.push(decoder.push(token))
        if piece:
            yield piece
        if matcher.stopped:
            tokens.close()
            engine.stats.finish_reason = "stop"
            return
    tail = matcher.push(decoder.flush())
    tail += "" if matcher.stopped else matcher.flush()
    if tail:
        yield tail
