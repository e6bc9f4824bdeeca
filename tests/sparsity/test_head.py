"""The sparse output head: the low-rank fit, exact logits for the candidates, the recall
measurement, the sidecar round trip, and `profile --sparse-head` / `run --sparse-head` end to end
(greedy tokens identical to the dense head on a real model)."""

from __future__ import annotations

import pytest
import torch

from sparsetier import kernels, sparsity
from sparsetier.cli.main import main
from sparsetier.engine import GREEDY, Engine
from sparsetier.kernels.synth import random_quant
from sparsetier.sparsity import head as hd
from sparsetier.weights.quant import GGMLType
from tests.sparsity.conftest import linked_model

pytestmark = pytest.mark.skipif(not kernels.has_extension(), reason="sparsetier._C not built")


def _states(n: int, d: int, rank: int, seed: int = 0) -> torch.Tensor:
    """Hidden states that mostly live in a `rank`-dimensional subspace, as real ones do."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(rank, d, generator=g)
    return torch.randn(n, rank, generator=g) @ basis + 0.05 * torch.randn(n, d, generator=g)


def test_fit_predicts_logits_and_is_nested() -> None:
    w = random_quant(GGMLType.Q8_0, 2048, 128, seed=1, scale=0.05)
    states = _states(512, 128, 24)
    exact = states @ kernels.dequantize(w).T
    full = hd.fit(w, states, 128)
    # full rank: the map is W itself, up to the 4-bit rounding of the low-rank head (Q4_0: ~8%
    # of the logits' norm; it only ranks candidates, whose logits are then computed exactly)
    assert full.lowrank.qtype == hd.LOWRANK_TYPE
    err = (hd.approx_logits(full, states) - exact).norm() / exact.norm()
    assert err < 0.1
    # states in a 24-dim subspace: rank 32 already predicts the logits as well
    small = full.truncated(32, 0)
    rel = (hd.approx_logits(small, states) - exact).norm() / exact.norm()
    assert rel < err + 0.02
    # nested: the rank-32 fit is the first 32 columns of the rank-128 fit
    direct = hd.fit(w, states, 32)
    assert torch.allclose(
        hd.approx_logits(direct, states), hd.approx_logits(small, states), atol=1e-2 * exact.std()
    )
    with pytest.raises(ValueError):
        hd.fit(w, states, 48)


def test_sparse_head_logits_are_exact_for_candidates() -> None:
    w = random_quant(GGMLType.Q6_K, 4096, 256, seed=2)
    states = _states(300, 256, 40, seed=3)
    head = hd.fit(w, states[:200], 64)
    head.candidates = 256
    sh = hd.SparseHead(w, head)
    x = states[200:204]
    out = kernels.linear(x, sh)
    dense = kernels.linear(x, w)
    kept = torch.isfinite(out)
    assert out.shape == dense.shape and kept.any(1).all()
    # candidates: the union over the rows, about `candidates` each; the exact dense values there
    assert 200 <= kept[0].sum() <= 4 * 400 and (kept == kept[0]).all()
    torch.testing.assert_close(out[kept], dense[kept], rtol=1e-5, atol=1e-5)
    assert (out[~kept] == float("-inf")).all()
    # more rows than a decode step (prefill with all logits): the dense head
    many = states[:40]
    torch.testing.assert_close(kernels.linear(many, sh), kernels.linear(many, w))


def test_recall_and_choice() -> None:
    w = random_quant(GGMLType.Q8_0, 4096, 128, seed=4, scale=0.05)
    states = _states(400, 128, 96, seed=5)
    full = hd.fit(w, states[:200], 128)
    held = states[200:]
    best = hd.exact_argmax(w, held)
    # as one-row decode steps compute it (int8 activations: near-ties can differ from float32)
    one_by_one = torch.cat([kernels.linear(held[i : i + 1], w).argmax(-1) for i in range(len(held))])
    assert torch.equal(best, one_by_one)
    assert (best == (held @ kernels.dequantize(w).T).argmax(-1)).float().mean() > 0.97
    # every token a candidate: recall 1; one candidate per 64 sampled: some misses
    assert hd.measure(full.truncated(128, 4096), held, best).recall == 1.0
    low = hd.measure(full.truncated(32, 64), held, best)
    assert low.recall < 1.0 and low.mean_candidates < 400
    chosen = hd.choose(full, held, best, ranks=(32, 64, 128), candidates=(64, 512, 1024))
    assert chosen is not None and chosen.info["choice_recall"] >= hd.CHOICE_RECALL
    # rank 32 misses with 64 candidates (above); the chosen candidate count is doubled
    assert chosen.rank in (64, 128) and chosen.candidates in (128, 1024, 2048)
    assert hd.measure(chosen, held, best).recall >= chosen.info["choice_recall"]


@pytest.mark.slow
def test_profile_and_run_with_sparse_head(tmp_path, capsys) -> None:
    path = linked_model("smollm2-135m", tmp_path)
    args = ["profile", path, "--max-tokens", "512", "--ctx", "256", "--no-progress", "--sparse-head"]
    assert main(args + ["--head-tokens", "1024"]) == 0
    err = capsys.readouterr().err
    assert "sparse head: rank" in err and "argmax recall" in err
    profile = sparsity.load_profile(path)
    head = profile.head
    assert head is not None and head.info["recall_tokens"] == 1024 and 0 < head.info["recall"] <= 1

    dense = Engine.load(path, ctx_size=256, progress=False, prefault=False)
    prompt = dense.tokenizer.encode("The history of the Python language")
    want = list(dense.generate(prompt, GREEDY, max_tokens=24, stop_ids=set()))
    engine = Engine.load(path, ctx_size=256, progress=False, prefault=False)
    sh = sparsity.enable_head(engine, "on", greedy=True)
    assert sh is not None and engine.model.output is sh
    got = list(engine.generate(prompt, GREEDY, max_tokens=24, stop_ids=set()))
    assert got == want
    assert sh.calls >= 23 and sh.candidates / sh.calls < 0.5 * engine.cfg.vocab_size
    # auto: off for sampling; and `off` leaves the dense head
    other = Engine.load(path, ctx_size=256, progress=False, prefault=False)
    assert sparsity.enable_head(other, "auto", greedy=False) is None
    assert sparsity.enable_head(other, "off", greedy=True) is None

    run = ["run", path, "The sky is", "-n", "6", "--temperature", "0", "--sparse-head", "on", "-v"]
    assert main(run) == 0
    assert "sparse output head: rank" in capsys.readouterr().err

    # --head-only: the head refit on other tokens, the calibration kept
    assert main(args[:-1] + ["--head-only", "--head-tokens", "512"]) == 0
    again = sparsity.load_profile(path)
    assert torch.equal(again.counts, profile.counts) and again.head.info["recall_tokens"] == 512
    assert main(args + ["--head-only", "--max-ppl-increase", "2%"]) == 2
    assert "--head-only keeps the saved allocation" in capsys.readouterr().err


def test_profiles_with_q8_0_heads_still_load() -> None:
    """Heads saved before the Q4_0 ones carry no storage type in the header: Q8_0."""
    from sparsetier.sparsity.profile import _head_info, _head_of

    w = random_quant(GGMLType.Q8_0, 512, 64, seed=6)
    head = hd.HeadApprox(torch.randn(64, 64), w, 256, {"recall": 1.0})
    info = _head_info(head)
    assert info["qtype"] == "Q8_0" and info["candidates"] == 256
    del info["qtype"]
    old = _head_of(info, {"head_proj": head.proj, "head_lowrank": w.data})
    assert old.lowrank.qtype == GGMLType.Q8_0 and old.truncated(32, 64).lowrank.data.shape == (512, 34)
    x = torch.randn(2, 64)
    torch.testing.assert_close(hd.approx_logits(old, x), kernels.linear(x @ head.proj, w))


def test_sparse_head_on_without_one_is_one_error_line(smollm_profiled, capsys) -> None:
    assert sparsity.load_profile(smollm_profiled).head is None
    args = ["run", smollm_profiled, "Hi", "-n", "2", "--temperature", "0", "--sparse-head", "on"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no sparse output head" in err[0]
    # auto with a profile but no head: the dense head, nothing said
    assert main(args[:-1] + ["auto"]) == 0
    assert "sparse output head" not in capsys.readouterr().err
