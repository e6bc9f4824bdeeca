"""FFN neurons streamed from disk as bundles: the same numbers as the in-memory predicted FFN, only
the predicted neurons read, the cache and the pinned set used, the budget kept, faults reported."""

from __future__ import annotations

import json
import os

import pytest
import torch

from sparsetier import kernels, sparsity
from sparsetier.bench.synth import Shape, write_model
from sparsetier.engine import GREEDY, Engine
from sparsetier.errors import ModelFileError
from sparsetier.sparsity import predictor as pr
from sparsetier.tiers import BudgetTooSmall, bundles, neurons
from sparsetier.tiers.storage import drop_page_cache
from tests.helpers import real_model_path

SHAPE = Shape(dim=256, n_layers=4, ffn_dim=1024, n_heads=4, n_kv_heads=2, tied=False)
PROMPT = "The quick brown fox"
N = 12


def random_predictors(folder: str, n_layers: int, dim: int, ffn: int, seed: int = 0) -> str:
    """Predictors that pick about half of the neurons, differently per token."""
    gen = torch.Generator().manual_seed(seed)
    preds = [
        pr.Predictor(torch.randn(32, dim, generator=gen) / dim**0.5, torch.randn(ffn, 32, generator=gen), 0.5)
        for _ in range(n_layers)
    ]
    pr.save_powerinfer(preds, folder)
    return folder


@pytest.fixture(scope="module")
def relu_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("tiers-neurons")
    path = str(folder / "relu-q4_0.gguf")
    write_model(
        path, SHAPE, "q4_0", ffn_act="relu", tokenizer_from=real_model_path("smollm2-135m"), progress=False
    )
    return path, random_predictors(str(folder / "pred"), SHAPE.n_layers, SHAPE.dim, SHAPE.ffn_dim)


def generate(path: str, predictors: str, budget: str | None, **kw) -> tuple[torch.Tensor, list[int], Engine]:
    """Prompt logits and greedy tokens: in memory (PredictedFFN) when budget is None."""
    e = Engine.load(
        path,
        threads=2,
        ctx_size=64,
        progress=False,
        prefault=False,
        memory_budget=budget,
        predictors=predictors if budget else None,
        **kw,
    )
    if budget is None:
        sparsity.enable(e, None, predictors=predictors)
    ids = e.tokenizer.encode(PROMPT)
    logits = e.prefill(ids)
    return logits, list(e.generate(ids, GREEDY, max_tokens=N, stop_ids=set())), e


@pytest.mark.parametrize("budget", ["30%", "60%"])
def test_streamed_neurons_compute_what_the_in_memory_predicted_ffn_computes(relu_model, budget: str) -> None:
    path, preds = relu_model
    ref_logits, ref, _ = generate(path, preds, None)
    logits, tokens, e = generate(path, preds, budget)
    try:
        assert tokens == ref
        # prefill reads down through the column layout (another summation order than the rows)
        assert (logits - ref_logits).abs().max().item() < 1e-3
        r = e.tiers.report()
        assert r["resident_bytes"] <= r["budget_bytes"]
        assert all(
            not isinstance(b.ffn.gate.data, torch.Tensor) or b.ffn.gate.data.stride(0) == 0
            for b in e.model.blocks
        )  # the FFN's own tensors are placeholders: nothing resident
        n = r["neurons"]
        # decode read only what the predictors chose: about half the neurons, never all of them
        assert 0.2 * SHAPE.ffn_dim < n["neurons_per_step"] < 0.8 * SHAPE.ffn_dim
        assert n["neuron_steps"] >= SHAPE.n_layers * (N - 1)  # decode steps (and short prompts)
    finally:
        e.tiers.close()


def test_cache_and_pinned_neurons_serve_repeats(relu_model, monkeypatch) -> None:
    path, preds = relu_model
    freq = torch.rand(SHAPE.n_layers, SHAPE.ffn_dim, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr("sparsetier.tiers.store.activation_frequency", lambda _path: freq)
    _, ref, _ = generate(path, preds, None)
    for policy in ("lfu", "lru"):
        _, tokens, e = generate(path, preds, "60%", neuron_cache=policy)
        try:
            plan = e.tiers.neurons.plan
            assert plan.cache > 0 and sum(map(len, plan.pinned)) > 0
            # the pinned ones are the most frequent of each layer's
            hot = set(plan.pinned[0])
            assert min(freq[0, list(hot)]) >= max(freq[0, [i for i in range(SHAPE.ffn_dim) if i not in hot]])
            assert tokens == ref
            r = e.tiers.report()["neurons"]
            assert r["pinned_hit_rate"] > 0 and r["cache_hit_rate"] > 0
            assert e.tiers.report()["resident_bytes"] <= e.tiers.plan.budget
        finally:
            e.tiers.close()


def test_real_model_same_tokens_at_a_quarter(tmp_path, smol_copy: str) -> None:
    """SmolLM2 (Q4_1, SwiGLU) with predictors: 25% of its weight bytes, the in-memory tokens."""
    e = Engine.load(smol_copy, threads=2, ctx_size=64, progress=False, prefault=False)
    cfg = e.cfg
    preds = random_predictors(
        str(tmp_path / "pred"), cfg.n_layers, cfg.dim, e.model.blocks[0].ffn.gate.shape[0]
    )
    with kernels.set_exact(True):
        _, ref, _ = generate(smol_copy, preds, None)
        _, tokens, e = generate(smol_copy, preds, "25%")
    try:
        assert tokens == ref
        assert e.tiers.report()["resident_bytes"] <= e.tiers.plan.budget
    finally:
        e.tiers.close()


def test_bundle_file_is_made_once_and_remade_when_stale(relu_model) -> None:
    path, preds = relu_model
    out = bundles.bundles_path(path)
    generate(path, preds, "30%")[2].tiers.close()
    first = os.stat(out).st_mtime_ns
    generate(path, preds, "30%")[2].tiers.close()
    assert os.stat(out).st_mtime_ns == first  # reused
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # the model "changed"
    assert bundles.read_layout(out, path) is None
    generate(path, preds, "30%")[2].tiers.close()
    assert bundles.read_layout(out, path) is not None


def test_bundles_hold_the_weights_bytes(relu_model) -> None:
    """A bundle is the gate row, the up row and the down column of the GGUF, unchanged."""
    from sparsetier.kernels import sparse
    from sparsetier.weights.loader import open_model

    path, _ = relu_model
    source = open_model(path)
    layout = bundles.read_layout(bundles.bundles_path(path), path) or bundles.prepare_bundles(source)
    x = layout[2]
    gate, up, down = bundles.ffn_weights(source.weights, 2)
    raw = torch.from_file(bundles.bundles_path(path), size=x.offset + x.nbytes, dtype=torch.uint8)
    rows = raw[x.offset :].view(x.neurons, x.bundle_bytes)
    assert torch.equal(rows[:, : x.gate_bytes], gate.data)
    assert torch.equal(rows[:, x.gate_bytes : x.gate_bytes + x.up_bytes], up.data)
    cols = sparse.to_columns(down)
    assert torch.equal(rows[:, x.gate_bytes + x.up_bytes :], sparse.channel_records(cols))
    # and put back into a column layout they give down's values
    empty = sparse.ColumnWeight("d", cols.qtype, cols.shape, torch.zeros_like(cols.records), cols.scales)
    idx = torch.tensor([0, 5, 700, 1023])
    sparse.put_channel_records(empty, idx, rows[idx, x.gate_bytes + x.up_bytes :])
    assert torch.equal(sparse.col_dequantize(empty)[idx], down.dequantize().T[idx])
    drop_page_cache(bundles.bundles_path(path))


def test_runs_join_close_neighbours() -> None:
    ids = torch.tensor([0, 1, 2, 10, 11, 400, 401, 1000])
    assert bundles.runs(ids, 1024, gap_bytes=8 << 10) == [(0, 12), (400, 402), (1000, 1001)]
    assert bundles.runs(ids, 1024, gap_bytes=0) == [(0, 3), (10, 12), (400, 402), (1000, 1001)]
    assert bundles.runs(ids[:0], 1024) == []


def test_too_small_budget_names_the_neuron_buffers(relu_model) -> None:
    path, preds = relu_model
    with pytest.raises(BudgetTooSmall, match="neuron working buffers"):
        generate(path, preds, "1M")


def test_bundle_file_deleted_while_running(tmp_path, relu_model) -> None:
    import shutil

    src, preds = relu_model
    path = str(tmp_path / "m.gguf")
    shutil.copyfile(src, path)
    e = Engine.load(
        path, threads=2, ctx_size=64, progress=False, prefault=False, memory_budget="30%", predictors=preds
    )
    try:
        ids = e.tokenizer.encode(PROMPT)
        os.unlink(bundles.bundles_path(path))
        with pytest.raises(ModelFileError, match="deleted"):
            list(e.generate(ids, GREEDY, max_tokens=4, stop_ids=set()))
    finally:
        e.tiers.close()


def test_plan_splits_room_between_pinned_and_cache() -> None:
    layer = bundles.LayerBundles(0, 100, 64, 2, 2, 2, 36, 36, 32, 0, 2, 256, 4096)
    freq = torch.linspace(1, 0, 100).repeat(2, 1)
    two = [layer, bundles.LayerBundles(**{**layer.__dict__, "layer": 1})]
    plan = neurons.plan_neurons(two, 40 * 104, freq)
    assert sum(map(len, plan.pinned)) == 20 and plan.cache == 10
    assert plan.pinned[0] == list(range(10))  # the hottest
    assert plan.pinned_bytes + plan.cache_bytes <= 40 * 104
    no_profile = neurons.plan_neurons(two, 40 * 104, None)
    assert sum(map(len, no_profile.pinned)) == 0 and no_profile.cache == 20


def test_plan_and_run_cli_with_neurons(relu_model, capsys) -> None:
    from sparsetier.cli.main import main

    path, preds = relu_model
    assert main(["plan", path, "--memory-budget", "60%", "--neurons", "--json", "-"]) == 0
    text, doc = capsys.readouterr().out.split("\n{", 1)
    doc = json.loads("{" + doc)
    assert "neurons:" in text and "working buffers" in text
    assert doc["neurons"]["cache_bundles_per_layer"] > 0
    assert doc["resident_bytes"] + doc["neurons"]["resident_bytes"] <= doc["budget_bytes"]
    argv = ["run", path, PROMPT, "--memory-budget", "60%", "--predictors", preds, "--max-tokens", "4"]
    assert main([*argv, "-v", "--ctx-size", "64"]) == 0
    assert "neurons:" in capsys.readouterr().err
    assert main(["bench", path, "--engines", "sparsetier", "--neurons", "lfu"]) == 2  # needs a budget
    assert "--neurons needs" in capsys.readouterr().err
