"""Turning logits into the next token: greedy, or llama.cpp's sampler chain.

Order (as llama.cpp): repetition penalty -> top-k -> top-p -> min-p -> temperature -> draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class SamplingParams:
    temperature: float = 0.8  # 0 = greedy
    top_k: int = 40  # 0 = off
    top_p: float = 0.95  # 1 = off
    min_p: float = 0.05  # 0 = off
    repeat_penalty: float = 1.0  # 1 = off
    repeat_last_n: int = 64
    seed: int | None = None

    def validate(self) -> None:
        from ..errors import SparsetierError

        if self.temperature < 0 or not math.isfinite(self.temperature):
            raise SparsetierError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise SparsetierError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise SparsetierError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p < 1:
            raise SparsetierError(f"min_p must be in [0, 1), got {self.min_p}")
        if self.repeat_penalty <= 0:
            raise SparsetierError(f"repeat_penalty must be > 0, got {self.repeat_penalty}")


GREEDY = SamplingParams(temperature=0.0)


class Sampler:
    def __init__(self, params: SamplingParams):
        params.validate()
        self.p = params
        self.generator = torch.Generator()
        self.generator.manual_seed(params.seed if params.seed is not None else torch.seed())

    def __call__(self, logits: torch.Tensor, history: Sequence[int]) -> int:
        """logits [vocab] -> token id; `history` is every token of the sequence so far."""
        p = self.p
        if p.repeat_penalty != 1.0 and history:
            recent = torch.tensor(sorted(set(history[-p.repeat_last_n :])), dtype=torch.long)
            picked = logits[recent]
            logits = logits.clone()
            logits[recent] = torch.where(picked > 0, picked / p.repeat_penalty, picked * p.repeat_penalty)
        if p.temperature == 0:
            return int(torch.argmax(logits))
        values, ids = (
            torch.topk(logits, p.top_k)
            if 0 < p.top_k < logits.numel()
            else torch.sort(logits, descending=True)
        )
        if p.top_p < 1.0:
            probs = torch.softmax(values, dim=-1)
            # keep the smallest prefix whose mass reaches top_p (always at least one token)
            keep = (torch.cumsum(probs, dim=-1) - probs) < p.top_p
            values, ids = values[keep], ids[keep]
        if p.min_p > 0:
            keep = values >= values[0] + math.log(p.min_p)
            values, ids = values[keep], ids[keep]
        probs = torch.softmax(values / p.temperature, dim=-1)
        return int(ids[torch.multinomial(probs, 1, generator=self.generator)])
