"""Orchestration without processes: alternation, medians, errors (run_worker replaced)."""

from __future__ import annotations

import dataclasses

import pytest

from sparsetier.bench import harness, prompt, roofline
from sparsetier.bench.engines import ENGINES
from sparsetier.errors import SparsetierError


def test_rounds_alternate_and_medians(monkeypatch) -> None:
    calls: list[tuple[str, str]] = []
    decode = {"sparsetier": iter([100.0, 80.0, 120.0]), "llama.cpp": iter([90.0, 95.0, 10.0])}

    def fake_worker(job, threads, timeout_s):
        if job["mode"] == "bandwidth":
            return {"bandwidth_bytes_s": 50e9, "method": "fake"}
        if job["mode"] == "import":
            return {"import_rss_bytes": 1000, "python_rss_bytes": 10}
        engine = "llama.cpp" if "llamacpp" in job["runner"] else "sparsetier"
        calls.append((job["path"], engine))
        if engine == "llama.cpp" and len(calls) == 6:
            return {"error": "boom"}
        d = next(decode[engine])
        return {
            "prefill_tok_s": 2 * d,
            "decode_tok_s": d,
            "ttft_s": 1 / d,
            "peak_rss_bytes": 1000,
            "load_s": 1.0,
            "weight_bytes_per_token": None,
            "tokens": [1, 2, 3],
        }

    monkeypatch.setattr(harness, "run_worker", fake_worker)
    monkeypatch.setattr(prompt, "prompt_ids", lambda path, n: list(range(n)))
    monkeypatch.setattr(roofline, "gguf_bytes_per_token", lambda path: 10**9)
    cases = [
        harness.Case(ENGINES["sparsetier"], "m", "/m.gguf"),
        harness.Case(ENGINES["llama.cpp"], "m", "/m.gguf"),
    ]
    records, machine = harness.run_bench(cases, harness.Settings(runs=3), progress=False)
    assert [e for _, e in calls] == [
        "sparsetier",
        "llama.cpp",
        "llama.cpp",
        "sparsetier",
        "sparsetier",
        "llama.cpp",
    ]
    ours, theirs = records
    assert ours.decode_tok_s == 100.0 and ours.raw["decode_tok_s"] == [100.0, 80.0, 120.0] and ours.runs == 3
    assert theirs.decode_tok_s == 92.5 and theirs.runs == 2 and theirs.errors == ["boom"]
    assert ours.weight_bytes_per_token == 10**9 and ours.roofline_fraction == pytest.approx(100 * 1e9 / 50e9)
    assert ours.baseline and not theirs.baseline
    assert machine.import_rss_bytes == {"torch": 1000, "llama_cpp": 1000}


def test_bad_engine_and_settings() -> None:
    with pytest.raises(SparsetierError, match="unknown engine 'vllm'"):
        harness.select_engines(["sparsetier", "vllm"])
    with pytest.raises(SparsetierError, match="--runs"):
        harness.Settings(runs=0).validate()
    with pytest.raises(SparsetierError, match="not found"):
        harness.resolve_models(["/nonexistent/model.gguf"])


def test_missing_peer_is_skipped_with_one_line(monkeypatch) -> None:
    absent = dataclasses.replace(ENGINES["llama.cpp"], requires="no_such_module_for_sparsetier_tests")
    monkeypatch.setitem(harness.ENGINES, "llama.cpp", absent)
    chosen, skipped = harness.select_engines(["sparsetier", "llama.cpp"])
    assert [e.name for e in chosen] == ["sparsetier"]
    assert len(skipped) == 1 and skipped[0].startswith("llama.cpp: not installed, skipped")
