"""Bad input gets one clear line on stderr and exit code 2: no traceback, no hang."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
from gguf import GGUFWriter

from tests.helpers import real_model_path


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sparsetier.cli.main", *args], capture_output=True, text=True, timeout=timeout
    )


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sparsetier: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert proc.stdout == ""


def write_tiny_gguf(path: str, arch: str = "llama") -> None:
    """A small llama-shaped GGUF with F32 weights (no tokenizer: the errors come first)."""
    w = GGUFWriter(path, arch)
    dim, ffn, heads = 32, 64, 4
    w.add_block_count(1)
    w.add_embedding_length(dim)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_context_length(128)
    w.add_layer_norm_rms_eps(1e-5)
    rng = np.random.default_rng(0)
    shapes = {
        "token_embd.weight": (64, dim),
        "output_norm.weight": (dim,),
        "blk.0.attn_norm.weight": (dim,),
        "blk.0.attn_q.weight": (dim, dim),
        "blk.0.attn_k.weight": (dim, dim),
        "blk.0.attn_v.weight": (dim, dim),
        "blk.0.attn_output.weight": (dim, dim),
        "blk.0.ffn_norm.weight": (dim,),
        "blk.0.ffn_gate.weight": (ffn, dim),
        "blk.0.ffn_up.weight": (ffn, dim),
        "blk.0.ffn_down.weight": (dim, ffn),
    }
    for name, shape in shapes.items():
        w.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def patch_tensor_info(path: str, name: str, *, qtype: int | None = None, offset: int | None = None) -> None:
    """Overwrite one tensor's type id or data offset in the GGUF header."""
    data = bytearray(open(path, "rb").read())
    key = struct.pack("<Q", len(name)) + name.encode()
    at = data.index(key) + len(key)
    (n_dims,) = struct.unpack_from("<I", data, at)
    at += 4 + 8 * n_dims
    if qtype is not None:
        struct.pack_into("<I", data, at, qtype)
    if offset is not None:
        struct.pack_into("<Q", data, at + 4, offset)
    open(path, "wb").write(bytes(data))


@pytest.fixture
def tiny(tmp_path) -> str:
    path = str(tmp_path / "tiny.gguf")
    write_tiny_gguf(path)
    return path


def test_missing_file(tmp_path):
    assert_clean_error(run_cli("run", str(tmp_path / "nope.gguf"), "hi"), "not found")


def test_not_gguf(tmp_path):
    p = tmp_path / "fake.gguf"
    p.write_bytes(b"PK\x03\x04 this is a zip, not a model" * 10)
    assert_clean_error(run_cli("run", str(p), "hi"), "not a GGUF file")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.gguf"
    p.write_bytes(b"")
    assert_clean_error(run_cli("inspect", str(p)), "not a GGUF file")


def test_truncated_header(tmp_path):
    src = real_model_path("smollm2-135m")
    p = tmp_path / "trunc_header.gguf"
    with open(src, "rb") as f:
        p.write_bytes(f.read(200_000))  # cuts through the vocabulary arrays
    assert_clean_error(run_cli("run", str(p), "hi"), "truncated")


def test_truncated_tensor_data(tmp_path):
    src = real_model_path("smollm2-135m")
    p = tmp_path / "trunc_data.gguf"
    shutil.copyfile(src, p)
    os.truncate(p, os.path.getsize(src) - 1_000_000)
    assert_clean_error(run_cli("run", str(p), "hi"), "truncated")


def test_tensor_offset_beyond_file(tiny):
    patch_tensor_info(tiny, "blk.0.ffn_up.weight", offset=10**9)
    assert_clean_error(run_cli("inspect", tiny), "blk.0.ffn_up.weight")


def test_misaligned_tensor_offset(tiny):
    patch_tensor_info(tiny, "blk.0.attn_q.weight", offset=3)
    assert_clean_error(run_cli("inspect", tiny), "blk.0.attn_q.weight", "misaligned")


def test_unknown_tensor_type_id(tiny):
    patch_tensor_info(tiny, "blk.0.attn_k.weight", qtype=250)
    assert_clean_error(run_cli("run", tiny, "hi"), "blk.0.attn_k.weight", "unknown GGML type")


def test_unsupported_tensor_type(tiny):
    patch_tensor_info(tiny, "blk.0.attn_v.weight", qtype=20)  # IQ4_NL: known to GGML, not run by us
    assert_clean_error(run_cli("run", tiny, "hi"), "blk.0.attn_v.weight", "IQ4_NL", "does not support")


def test_unknown_architecture(tmp_path):
    p = str(tmp_path / "alien.gguf")
    write_tiny_gguf(p, arch="mamba9000")
    assert_clean_error(run_cli("run", p, "hi"), "mamba9000", "not supported")


def test_prompt_longer_than_context():
    real_model_path("smollm2-135m")
    proc = run_cli("run", "--ctx-size", "32", "--temperature", "0", "word " * 100)
    assert_clean_error(proc, "context size")


def test_unknown_model_name():
    assert_clean_error(run_cli("run", "no-such-model", "hi"), "no-such-model")


def test_bad_flag_values():
    assert_clean_error(run_cli("run", "--top-p", "1.5", "hi"), "top_p")
    assert_clean_error(run_cli("run", "--max-tokens", "0", "hi"), "max-tokens")
