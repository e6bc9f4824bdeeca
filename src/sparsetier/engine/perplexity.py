"""Perplexity over sliding windows, and the built-in text corpora for calibration and evaluation.

CPython ships English prose in its standard library (pydoc_data.topics): it is split once,
by a fixed rule, into a calibration part and a held-out evaluation part, so thresholds are
never judged on the text that set them.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..errors import SparsetierError
from ..models import Batch
from .engine import Engine

CORPORA = ("pydoc:calib", "pydoc:eval", "pydoc:calib-holdout")


def builtin_text(name: str) -> str:
    """pydoc:calib (first 60% of the topics), pydoc:calib-holdout (next 10%: for tuning against
    overfitting the calibration part), pydoc:eval (last 30%)."""
    from pydoc_data.topics import topics

    keys = sorted(topics)
    a, b = int(len(keys) * 0.6), int(len(keys) * 0.7)
    parts = {"pydoc:calib": keys[:a], "pydoc:calib-holdout": keys[a:b], "pydoc:eval": keys[b:]}
    if name not in parts:
        raise SparsetierError(f"unknown built-in text '{name}' (known: {', '.join(CORPORA)})")
    return "\n\n".join(topics[k] for k in parts[name])


def read_text(spec: str) -> str:
    if spec.startswith("pydoc:"):
        return builtin_text(spec)
    try:
        with open(spec, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise SparsetierError(f"cannot read text file {spec}: {e}") from None


@dataclass
class PerplexityResult:
    ppl: float
    nll: float  # mean negative log-likelihood per scored token (nats)
    tokens: int  # tokens scored


@torch.inference_mode()
def perplexity(
    engine: Engine, ids: list[int], ctx: int = 512, stride: int = 256, chunk: int = 128, progress: bool = True
) -> PerplexityResult:
    """Each window of `ctx` tokens starts `stride` after the previous one and scores only the
    tokens the previous window did not (all of them in the first window), so every token is
    predicted from at least ctx - stride tokens of context (the first window's early ones excepted)."""
    if len(ids) < 2:
        raise SparsetierError("the text is too short to score (fewer than 2 tokens)")
    ctx = min(ctx, engine.ctx_size)
    stride = min(stride, ctx)
    total_nll, scored, prev_end = 0.0, 0, 0
    starts = list(range(0, max(1, len(ids) - ctx + stride), stride))
    for begin in tqdm(starts, desc="perplexity", file=sys.stderr, disable=not progress, leave=False):
        end = min(begin + ctx, len(ids))
        if end <= prev_end:
            break
        window = torch.tensor([ids[begin:end]])
        first_scored = max(prev_end, begin + 1) - begin  # index in the window of the first target
        engine.slots[0].tokens = []
        for c in range(0, window.shape[1], chunk):
            piece = window[:, c : c + chunk]
            logits = engine.model.forward(piece, engine.cache, Batch([0], [c]), all_logits=True)[0]
            # logits at window position p predict token p + 1
            lo, hi = max(c, first_scored - 1), min(c + piece.shape[1], window.shape[1] - 1)
            if hi > lo:
                logp = F.log_softmax(logits[lo - c : hi - c].float(), dim=-1)
                targets = window[0, lo + 1 : hi + 1]
                total_nll -= logp.gather(1, targets[:, None]).sum().item()
                scored += hi - lo
        prev_end = end
    nll = total_nll / scored
    return PerplexityResult(math.exp(nll), nll, scored)
