"""`sparsetier plan`, and `--memory-budget` on run: the plan's numbers, and a too-small budget
refused in one line with exit code 2 and the minimum."""

from __future__ import annotations

import json
import subprocess
import sys

from sparsetier.cli.main import main


def test_plan_prints_and_writes_json(smol_copy: str, capsys) -> None:
    assert main(["plan", smol_copy, "--memory-budget", "25%", "--json", "-"]) == 0
    out = capsys.readouterr().out
    text, doc = out.split("\n{", 1)
    doc = json.loads("{" + doc)
    assert "streams per token" in text and "blk.0" in text and "output head (= embedding)" in text
    assert doc["resident_bytes"] <= doc["budget_bytes"] == int(doc["weight_bytes"] * 0.25)
    assert doc["streamed_bytes_per_token"] > doc["weight_bytes"] // 2
    assert doc["minimum_budget_bytes"] < doc["budget_bytes"]
    assert sum(i["pinned_bytes"] for i in doc["items"]) == doc["pinned_bytes"]


def test_plan_refuses_too_small(smol_copy: str, capsys) -> None:
    assert main(["plan", smol_copy, "--memory-budget", "1M"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "too small" in err[0] and "at least" in err[0]


def test_run_with_budget_same_text_and_refusal(smol_copy: str) -> None:
    def run(*extra: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "sparsetier.cli.main", "run", smol_copy, "The capital of France is"]
        argv += ["-n", "12", "--temperature", "0", "--ctx-size", "64", *extra]
        return subprocess.run(argv, capture_output=True, text=True, timeout=300)

    full, tiered, small = run(), run("--memory-budget", "30%", "-v"), run("--memory-budget", "500k")
    assert full.returncode == 0 and tiered.returncode == 0
    assert tiered.stdout == full.stdout
    assert "memory budget" in tiered.stderr and "resident" in tiered.stderr
    assert small.returncode == 2
    lines = small.stderr.strip().splitlines()
    assert len(lines) == 1 and "at least" in lines[0]
    assert lines[0].startswith("sparsetier: error: memory budget")
