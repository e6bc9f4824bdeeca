"""A small synthetic untied llama over the whole range of budgets: the embedding read on demand,
the head in row chunks (streamed, or all pinned in pieces), layers split or whole; every budget
gives the in-memory greedy tokens."""

from __future__ import annotations

import pytest

from sparsetier.bench.synth import Shape, write_model
from sparsetier.engine import GREEDY, Engine
from tests.helpers import real_model_path

SHAPE = Shape(dim=256, n_layers=4, ffn_dim=512, n_heads=4, n_kv_heads=2, tied=False)
PROMPT = "The quick brown fox"
N = 12


@pytest.fixture(scope="module")
def untied(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("tiers-synth") / "untied-q4_0.gguf")
    write_model(path, SHAPE, "q4_0", tokenizer_from=real_model_path("smollm2-135m"), progress=False)
    return path


def greedy(path: str, budget: str | None) -> tuple[list[int], Engine]:
    e = Engine.load(path, threads=2, ctx_size=64, progress=False, memory_budget=budget, prefault=False)
    ids = e.tokenizer.encode(PROMPT)
    return list(e.generate(ids, GREEDY, max_tokens=N, stop_ids=set())), e


@pytest.mark.parametrize("budget", ["15%", "30%", "60%", "90%", "99%", "100%"])
def test_every_budget_same_tokens(untied: str, budget: str) -> None:
    ref, _ = greedy(untied, None)
    tokens, e = greedy(untied, budget)
    try:
        plan = e.tiers.plan
        assert plan.resident_bytes <= plan.budget
        if budget != "100%":
            assert plan.embed_on_demand  # untied: the embedding is never resident
            assert e.tiers.embed_rows is not None and e.tiers.embed_rows.rows_read > 0
        assert tokens == ref
    finally:
        e.tiers.close()
