"""The command line: `sparsetier profile`, `eval ppl --sparsity`, `run --sparsity`, and the
refusal of a foreign sidecar (one error line, exit code 2)."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from sparsetier import kernels, sparsity
from sparsetier.cli.main import main
from sparsetier.engine import Engine
from sparsetier.engine.perplexity import builtin_text, perplexity
from tests.sparsity.conftest import linked_model

pytestmark = pytest.mark.skipif(not kernels.has_extension(), reason="sparsetier._C not built")


def _rows(out: str, skipped: dict | None = None) -> dict[tuple[str, str], float]:
    """(level, scope) -> perplexity from `eval ppl --sparsity` output; `skipped` gets the
    measured share of skipped weight bytes."""
    rows = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\S+)\s+(\S+)\s+([\d.]+)\s+(\S+)\s+([\d.]+)%\s*$", line)
        if m:
            rows[(m.group(1), m.group(2))] = float(m.group(3))
            if skipped is not None:
                skipped[(m.group(1), m.group(2))] = float(m.group(5)) / 100
    return rows


@pytest.mark.slow
def test_profile_eval_and_run(tmp_path, capsys) -> None:
    path = linked_model("smollm2-135m", tmp_path)
    assert main(["profile", path, "--max-tokens", "512", "--ctx", "256", "--no-progress"]) == 0
    assert os.path.exists(sparsity.sidecar_path(path))
    capsys.readouterr()

    args = ["eval", "ppl", path, "--max-text-tokens", "300", "--ctx", "128", "--stride", "128"]
    assert main(args + ["--sparsity", "0,50%", "--sparsity-scope", "all,down"]) == 0
    skipped: dict = {}
    rows = _rows(capsys.readouterr().out, skipped)
    assert set(rows) == {("0%", "-"), ("50%", "all"), ("50%", "down")}
    # thresholds set on the calibration text skip about the same share of held-out inputs
    assert skipped[("0%", "-")] == 0 and 0.35 < skipped[("50%", "all")] < 0.65
    assert 0.05 < skipped[("50%", "down")] < skipped[("50%", "all")]
    dense = rows[("0%", "-")]
    # on 300 tokens: every projection at 50% costs tens of percent, the down projection alone
    # a few percent either way (the transformers measurement: +1.7-3.9%)
    assert rows[("50%", "all")] > 1.1 * dense and rows[("50%", "all")] > rows[("50%", "down")]
    assert abs(rows[("50%", "down")] / dense - 1) < 0.06

    # the sweep (masked inputs on GGML weights) gives the numbers of the sparse column kernels
    engine = Engine.load(path, ctx_size=128, progress=False, prefault=False)
    ids = engine.tokenizer.encode(builtin_text("pydoc:eval"))[:300]
    assert abs(perplexity(engine, ids, 128, 128, progress=False).ppl / dense - 1) < 1e-4
    sparsity.enable(engine, "50%", "down", layout="columns")
    ppl = perplexity(engine, ids, 128, 128, progress=False).ppl
    # both run bf16 GEMMs in fast mode; only summation order differs
    assert abs(ppl / rows[("50%", "down")] - 1) < 2e-3

    assert main(["run", path, "The sky is", "-n", "6", "--temperature", "0", "--sparsity", "40%", "-v"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() and "projections thresholded" in captured.err


def test_foreign_sidecar_is_one_error_line(tmp_path, capsys) -> None:
    (tmp_path / "a").mkdir()
    a = linked_model("smollm2-135m", tmp_path / "a")
    assert main(["profile", a, "--max-tokens", "64", "--ctx", "64", "--no-progress"]) == 0
    (tmp_path / "b").mkdir()
    b = linked_model("gemma3-270m", tmp_path / "b")
    shutil.copy(sparsity.sidecar_path(a), sparsity.sidecar_path(b))
    capsys.readouterr()
    assert main(["run", b, "Hi", "-n", "2", "--sparsity", "40%"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sparsetier: error:") and "another model file" in err[0]


@pytest.mark.slow
def test_allocation_keeps_its_budget(tmp_path, capsys) -> None:
    """`profile --max-ppl-increase 2%` saves an allocation that `--sparsity auto` uses, and the
    held-out perplexity it was judged on is within 2% of dense when measured again by eval."""
    path = linked_model("smollm2-135m", tmp_path)
    cmd = ["profile", path, "--max-tokens", "2048", "--ctx", "256", "--no-progress"]
    assert main(cmd + ["--max-ppl-increase", "2%", "--holdout-tokens", "512"]) == 0
    profile = sparsity.load_profile(path)
    assert profile.allocation and profile.allocation_info["ppl"] <= profile.allocation_info["base_ppl"] * 1.02
    capsys.readouterr()
    args = ["eval", "ppl", path, "--text", "pydoc:calib-holdout", "--max-text-tokens", "512"]
    assert main(args + ["--ctx", "256", "--stride", "256", "--sparsity", "0,auto"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows[("auto", "-")] <= rows[("0%", "-")] * 1.02 + 1e-9
