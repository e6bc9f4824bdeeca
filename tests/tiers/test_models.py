"""Every model of the issue at a 25% weight budget: the same greedy tokens (and bit-identical
prompt logits) as fully in memory, with most of the weights streamed from disk every token."""

from __future__ import annotations

import pytest
import torch

from sparsetier.engine import GREEDY, Engine
from tests.helpers import real_model_path

PROMPT = "def fibonacci(n):\n    # return the n-th Fibonacci number\n"


def load(path: str, budget: str | None) -> Engine:
    return Engine.load(path, threads=2, ctx_size=128, progress=False, memory_budget=budget, prefault=False)


def greedy_and_logits(engine: Engine, n: int) -> tuple[list[int], torch.Tensor]:
    ids = engine.tokenizer.encode(PROMPT)
    engine.slots[0].tokens.clear()
    with torch.inference_mode():
        logits = engine.prefill(ids).clone()
    engine.slots[0].tokens.clear()
    return list(engine.generate(ids, GREEDY, max_tokens=n, stop_ids=set())), logits


@pytest.mark.parametrize(
    "name, n",
    [
        ("smollm2-135m", 24),
        ("gemma3-270m", 20),
        pytest.param("qwen2.5-coder-1.5b", 16, marks=pytest.mark.slow),  # ~15 GB of reads
    ],
)
def test_quarter_budget_same_greedy_tokens(name: str, n: int) -> None:
    path = real_model_path(name)
    ref_tokens, ref_logits = greedy_and_logits(load(path, None), n)
    e = load(path, "25%")
    try:
        tokens, logits = greedy_and_logits(e, n)
        plan = e.tiers.plan
        assert plan.resident_bytes <= plan.budget == int(plan.weight_bytes * 0.25)
        assert e.tiers.accounting.peak <= plan.budget
        assert plan.streamed_bytes_per_token > plan.weight_bytes // 2  # most of the model streams
        assert torch.equal(logits, ref_logits)
        assert tokens == ref_tokens
    finally:
        e.tiers.close()
