"""A real model under a budget: same greedy tokens as in memory, the budget held, the page cache
left alone."""

from __future__ import annotations

import pytest
import torch

from sparsetier.engine import GREEDY, Engine
from sparsetier.errors import SparsetierError
from sparsetier.tiers import BudgetTooSmall
from sparsetier.tiers.storage import cached_bytes, drop_page_cache

PROMPT = "The history of the printing press begins"
N = 24


def load(path: str, budget: str | None) -> Engine:
    return Engine.load(path, threads=2, ctx_size=256, progress=False, memory_budget=budget, prefault=False)


def greedy(engine: Engine, n: int = N) -> list[int]:
    engine.slots[0].tokens.clear()
    ids = engine.tokenizer.encode(PROMPT)
    return list(engine.generate(ids, GREEDY, max_tokens=n, stop_ids=set()))


@pytest.fixture(scope="module")
def reference(smol_path: str) -> tuple[list[int], torch.Tensor]:
    e = load(smol_path, None)
    ids = e.tokenizer.encode(PROMPT)
    with torch.inference_mode():
        logits = e.prefill(ids).clone()
    return greedy(e), logits


def weight_storage_bytes(engine: Engine) -> int:
    """Bytes of every distinct storage the model's weights use (placeholders use one element)."""
    seen: dict[int, int] = {}
    tensors = list(engine.source.weights.values())
    for p in engine.tiers.parts.values():
        tensors += [w for _, _, w in p.pinned]
    for t in tensors:
        s = t.data.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
    if engine.tiers.stream is not None:
        seen.update({id(b): b.nbytes for b in engine.tiers.stream.buffers})
    return sum(seen.values())


@pytest.mark.parametrize("budget", ["25%", "50%", "100%"])
def test_same_tokens_and_budget_held(smol_copy: str, reference, budget: str) -> None:
    ref_tokens, ref_logits = reference
    e = load(smol_copy, budget)
    try:
        limit = e.tiers.accounting.budget
        ids = e.tokenizer.encode(PROMPT)
        with torch.inference_mode():
            assert torch.equal(e.prefill(ids), ref_logits)  # the same bytes: bit-identical logits
        assert greedy(e) == ref_tokens
        acc = e.tiers.accounting
        assert acc.peak <= limit and acc.resident <= limit
        assert weight_storage_bytes(e) <= limit
        if budget == "100%":
            assert e.tiers.stream is None and e.tiers.plan.streamed_bytes_per_token == 0
        else:
            assert e.tiers.report()["units_streamed"] > N * 10
    finally:
        e.tiers.close()


def test_page_cache_does_not_grow(smol_copy: str) -> None:
    drop_page_cache(smol_copy)
    before = cached_bytes(smol_copy)
    e = load(smol_copy, "25%")
    try:
        greedy(e, 8)
        read = e.tiers.file.bytes_read
        cached = cached_bytes(smol_copy) - before
        # ~10 passes over the streamed 3/4 of the model were read, yet only metadata pages
        # (the tokenizer's vocabulary, read through the mapping) are in the page cache
        assert read > 5 * e.tiers.plan.weight_bytes
        assert cached < 0.05 * e.tiers.plan.weight_bytes, cached
        assert e.tiers.file.direct
    finally:
        e.tiers.close()


def test_too_small_budget_refused_with_minimum(smol_copy: str) -> None:
    with pytest.raises(BudgetTooSmall) as err:
        load(smol_copy, "1M")
    assert err.value.minimum > 10**6 and "at least" in str(err.value)
    e = load(smol_copy, str(err.value.minimum))  # the minimum itself runs
    try:
        assert len(greedy(e, 3)) == 3
    finally:
        e.tiers.close()


def test_budget_needs_a_gguf_region(smol_copy: str) -> None:
    with pytest.raises(SparsetierError):
        load(smol_copy, "0")
