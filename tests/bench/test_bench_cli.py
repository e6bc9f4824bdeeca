"""`sparsetier bench` end to end on a tiny synthetic model and tiny settings (no timing assertions)."""

from __future__ import annotations

import importlib.util
import json

from tests.cli.test_bad_input import assert_clean_error, run_cli

REQUIRED = (
    "engine",
    "model",
    "threads",
    "prefill_tok_s",
    "decode_tok_s",
    "ttft_s",
    "peak_rss_bytes",
    "weight_bytes_per_token",
    "roofline_fraction",
    "bandwidth_bytes_s",
    "runs",
    "raw",
)


def test_end_to_end(tiny_gguf: str, tmp_path) -> None:
    engines = ["sparsetier"] + (["llama.cpp"] if importlib.util.find_spec("llama_cpp") else [])
    out_json, out_png, out_md = tmp_path / "b.json", tmp_path / "b.png", tmp_path / "b.md"
    proc = run_cli(
        "bench",
        tiny_gguf,
        "--engines",
        ",".join(engines),
        "--runs",
        "1",
        "--prompt-tokens",
        "16",
        "--gen-tokens",
        "4",
        "--json",
        str(out_json),
        "--plot",
        str(out_png),
        "--markdown",
        str(out_md),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    records = json.loads(out_json.read_text())
    assert [r["engine"] for r in records] == engines
    for r in records:
        assert all(k in r for k in REQUIRED), r.keys()
        assert r["errors"] == [] and r["runs"] == 1 and r["threads"] == 2
        assert r["decode_tok_s"] > 0 and r["prefill_tok_s"] > 0 and r["peak_rss_bytes"] > 0
        assert len(r["tokens"]) == 4
    # same file, same count: all 2 layers + the untied head + one embedding row
    assert len({r["weight_bytes_per_token"] for r in records}) == 1
    assert out_png.read_bytes()[:4] == b"\x89PNG"
    assert "| sparsetier |" in out_md.read_text()
    assert "decode tok/s" in proc.stdout and "sparsetier" in proc.stdout


def test_bad_engine_exits_2(tiny_gguf: str) -> None:
    assert_clean_error(run_cli("bench", tiny_gguf, "--engines", "sparsetier,vllm"), "unknown engine 'vllm'")


def test_missing_model_exits_2(tmp_path) -> None:
    assert_clean_error(run_cli("bench", str(tmp_path / "nope.gguf"), "--engines", "sparsetier"), "not found")
