"""`sparsetier synth`: valid GGUF files that our reader, gguf-py, llama.cpp and our engine all load."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGUFReader

from sparsetier.bench.synth import PRESETS, QUANTS, _nbytes, n_params, tensor_shapes, write_model
from sparsetier.weights.gguf import GGUFFile
from sparsetier.weights.loader import config_from_gguf
from tests.bench.conftest import TINY
from tests.cli.test_bad_input import assert_clean_error, run_cli


@pytest.mark.parametrize("quant", ["q4_0", "q8_0", "f16"])
def test_our_reader_and_gguf_py_agree(tmp_path, tokenizer_source: str, quant: str) -> None:
    path = str(tmp_path / f"m-{quant}.gguf")
    write_model(path, TINY, quant, tokenizer_from=tokenizer_source, progress=False)
    ours = GGUFFile(path)
    stock = GGUFReader(path)
    assert [t.name for t in stock.tensors] == [name for name, _ in tensor_shapes(TINY, 49152)]
    for t in stock.tensors:
        mine = ours.tensors[t.name]
        assert mine.qtype == t.tensor_type
        assert mine.shape == tuple(int(x) for x in reversed(t.shape.tolist()))
        assert mine.nbytes == t.n_bytes
        assert np.array_equal(mine.data.reshape(-1).numpy().view(np.uint8), t.data.reshape(-1).view(np.uint8))
    w = ours.tensors["blk.1.ffn_gate.weight"]
    assert w.qtype == QUANTS[quant]
    values = w.dequantize()
    assert 0.015 < float(values.std()) < 0.025  # ~0.02 by construction
    assert abs(float(values.mean())) < 0.002
    assert float(ours.tensors["blk.0.attn_norm.weight"].dequantize().min()) == 1.0
    # the tokenizer is the source model's, key for key
    src = GGUFFile(tokenizer_source)
    for key in (
        "tokenizer.ggml.model",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.eos_token_id",
    ):
        assert ours.get(key) == src.get(key), key
    cfg = config_from_gguf(ours)
    assert (cfg.dim, cfg.n_layers, cfg.ffn_dim, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size) == (
        64,
        2,
        128,
        4,
        2,
        49152,
    )
    assert cfg.ffn_act == "swiglu" and not cfg.tie_embeddings


def test_ffn_activation_key(tmp_path, tokenizer_source: str) -> None:
    path = str(tmp_path / "relu.gguf")
    write_model(path, TINY, "q8_0", ffn_act="drelu", tokenizer_from=tokenizer_source, progress=False)
    assert config_from_gguf(GGUFFile(path)).ffn_act == "drelu"


def test_preset_sizes() -> None:
    # 7B shaped like Llama-2-7B, Q4_0 throughout: about 3.8 GB
    shape = PRESETS["7B"]
    assert (shape.dim, shape.n_layers, shape.ffn_dim, shape.n_heads) == (4096, 32, 11008, 32)
    size = sum(
        _nbytes(QUANTS["q4_0"], *(s if len(s) == 2 else (1, s[0])))
        for name, s in tensor_shapes(shape, 49152)
        if len(s) == 2
    )
    assert 3.7e9 < size < 4.0e9
    for name, lo, hi in [
        ("135M", 0.12e9, 0.15e9),
        ("1B", 0.95e9, 1.3e9),
        ("3B", 2.8e9, 3.4e9),
        ("7B", 6.5e9, 7.1e9),
    ]:
        assert lo < n_params(PRESETS[name], 49152) < hi, name


def test_llamacpp_loads_and_generates(tiny_gguf: str) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(model_path=tiny_gguf, n_ctx=64, n_threads=2, verbose=False)
    ids = llm.tokenize(b"The three primary colors are", add_bos=False)
    out = []
    for token in llm.generate(ids, temp=0.0):
        out.append(token)
        if len(out) == 4:
            break
    assert len(out) == 4 and all(0 <= t < 49152 for t in out)


def test_our_engine_generates(tiny_gguf: str) -> None:
    from sparsetier.engine import GREEDY, Engine

    engine = Engine.load(tiny_gguf, threads=2, ctx_size=64, progress=False)
    ids = engine.tokenizer.encode("The three primary colors are")
    out = list(engine.generate(ids, GREEDY, max_tokens=4, stop_ids=set()))
    assert len(out) == 4 and all(0 <= t < 49152 for t in out)


def test_cli(tmp_path, tokenizer_source: str) -> None:
    out = tmp_path / "cli.gguf"
    proc = run_cli("synth", "--params", "135m", "--layers", "1", "--quant", "q8_0", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    cfg = config_from_gguf(GGUFFile(str(out)))
    assert (cfg.dim, cfg.n_layers, cfg.tie_embeddings) == (576, 1, True)
    assert not (tmp_path / "cli.gguf.partial").exists()
    assert_clean_error(run_cli("synth", "--params", "5T", "--out", str(tmp_path / "x.gguf")), "unknown size")
