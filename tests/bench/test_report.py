"""Reporting on canned records: ratios, the table, markdown, JSON and the chart."""

from __future__ import annotations

import json

from sparsetier.bench import report
from sparsetier.bench.harness import Machine, Record

MACHINE = Machine(
    cpu="Test CPU",
    threads=2,
    bandwidth_bytes_s=40e9,
    bandwidth_method="torch",
    python_rss_bytes=10_000_000,
    import_rss_bytes={"torch": 230_000_000, "llama_cpp": 30_000_000},
)


def _rec(engine: str, model: str, prefill: float, decode: float, rss: int, bpt: int, **kw) -> Record:
    rec = Record(
        engine=engine,
        label=engine,
        model=model,
        path=f"/m/{model}.gguf",
        options={},
        threads=2,
        runs=3,
        prompt_tokens=512,
        gen_tokens=128,
        prefill_tok_s=prefill,
        decode_tok_s=decode,
        ttft_s=512 / prefill,
        peak_rss_bytes=rss,
        weight_bytes_per_token=bpt,
        bandwidth_bytes_s=40e9,
        roofline_fraction=decode * bpt / 40e9,
        baseline=engine == "sparsetier",
        raw={"decode_tok_s": [decode] * 3},
    )
    for k, v in kw.items():
        setattr(rec, k, v)
    return rec


def records() -> list[Record]:
    return [
        _rec("sparsetier", "a", 600.0, 100.0, 400_000_000, 80_000_000),
        _rec("llama.cpp", "a", 240.0, 90.0, 200_000_000, 80_000_000),
        _rec("transformers-fp32", "a", 565.0, 20.0, 1_000_000_000, 500_000_000),
        _rec("sparsetier", "b", 50.0, 10.0, 2_000_000_000, 1_000_000_000),
        _rec("llama.cpp", "b", 100.0, 20.0, 1_000_000_000, 1_000_000_000),
        Record(
            engine="transformers-bf16",
            label="transformers-bf16",
            model="b",
            path="/m/b.gguf",
            options={},
            threads=2,
            runs=0,
            prompt_tokens=512,
            gen_tokens=128,
            errors=["killed by SIGKILL (out of memory?)"],
        ),
    ]


def test_ratios_are_peer_over_us_on_the_same_model() -> None:
    recs = records()
    r = report.ratios(recs[1], recs)
    assert r["decode_tok_s"] == 0.9 and r["prefill_tok_s"] == 0.4 and r["peak_rss_bytes"] == 0.5
    r = report.ratios(recs[4], recs)  # model b: compared with our model-b record, not model a's
    assert r["decode_tok_s"] == 2.0 and r["prefill_tok_s"] == 2.0
    assert report.ratios(recs[5], recs)["decode_tok_s"] is None
    assert report.ratios(recs[0], recs)["decode_tok_s"] == 1.0


def test_table() -> None:
    text = report.format_table(records(), MACHINE)
    assert "40.0 GB/s" in text and "torch +230 MB" in text and "llama_cpp +30 MB" in text
    lines = text.splitlines()
    llama_a = next(ln for ln in lines if ln.strip().startswith("llama.cpp") and "0.90x" in ln)
    assert "240.0 (0.40x)" in llama_a and "90.0 (0.90x)" in llama_a and "200 (0.50x)" in llama_a
    assert "80.0" in llama_a and "18%" in llama_a  # 90 tok/s x 80 MB / 40 GB/s
    assert any("transformers-bf16" in ln and "killed by SIGKILL" in ln for ln in lines)
    ours = next(ln for ln in lines if ln.strip().startswith("sparsetier"))
    assert "x)" not in ours  # no ratio to itself


def test_markdown() -> None:
    md = report.format_markdown(records(), MACHINE, "sparsetier bench a b")
    rows = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(rows) == 2 + 6
    assert all(r.count("|") == rows[0].count("|") for r in rows)
    assert "`sparsetier bench a b`" in md


def test_json_and_plot(tmp_path) -> None:
    recs = records()
    path = tmp_path / "out" / "bench.json"
    report.write_json(str(path), recs, MACHINE)
    data = json.loads(path.read_text())
    assert len(data) == 6
    for key in (
        "engine",
        "model",
        "threads",
        "prefill_tok_s",
        "decode_tok_s",
        "ttft_s",
        "peak_rss_bytes",
        "weight_bytes_per_token",
        "roofline_fraction",
        "runs",
        "raw",
        "ratio_to_sparsetier",
    ):
        assert key in data[0]
    assert data[1]["ratio_to_sparsetier"]["decode_tok_s"] == 0.9
    png = tmp_path / "chart" / "bench.png"
    report.plot(str(png), recs, MACHINE)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
