"""Bad model files fail with a clear one-line error, not a traceback from deep inside."""

from __future__ import annotations

import pytest

from sparsetier.errors import ModelFileError, UnsupportedModelError
from sparsetier.tokenizer import Tokenizer

from .synth import bpe_metadata, spm_metadata, write_gguf


def _error(exc_type, source) -> str:
    with pytest.raises(exc_type) as info:
        Tokenizer.from_gguf(source)
    message = str(info.value)
    assert message and "\n" not in message
    return message


def test_unknown_tokenizer_model(tmp_path):
    path = write_gguf(str(tmp_path / "rwkv.gguf"), spm_metadata(**{"tokenizer.ggml.model": "rwkv"}))
    assert "'rwkv'" in _error(UnsupportedModelError, path)


def test_no_tokenizer(tmp_path):
    meta = {"general.architecture": "llama", "general.name": "no tokenizer"}
    path = write_gguf(str(tmp_path / "bare.gguf"), meta)
    assert "tokenizer.ggml.model" in _error(ModelFileError, path)


def test_missing_vocabulary(tmp_path):
    path = write_gguf(str(tmp_path / "novocab.gguf"), spm_metadata(**{"tokenizer.ggml.tokens": None}))
    assert "tokenizer.ggml.tokens" in _error(ModelFileError, path)
    assert "tokenizer.ggml.tokens" in _error(ModelFileError, spm_metadata(**{"tokenizer.ggml.tokens": []}))


def test_inconsistent_metadata():
    meta = spm_metadata()
    bad_types = spm_metadata(**{"tokenizer.ggml.token_type": meta["tokenizer.ggml.token_type"][:-1]})
    assert "token_type" in _error(ModelFileError, bad_types)
    assert "bos_token_id" in _error(ModelFileError, spm_metadata(**{"tokenizer.ggml.bos_token_id": 10**6}))
    assert "merges" in _error(ModelFileError, bpe_metadata(**{"tokenizer.ggml.merges": None}))
    no_scores = spm_metadata(**{"tokenizer.ggml.scores": None})
    assert "scores" in _error(ModelFileError, no_scores)


def test_not_a_gguf(tmp_path):
    path = tmp_path / "junk.gguf"
    path.write_bytes(b"not a gguf file at all")
    _error(ModelFileError, str(path))
    _error(ModelFileError, str(tmp_path / "missing.gguf"))


@pytest.mark.parametrize("case", ["missing", "no-tokenizer-json", "bad-json"])
def test_bad_hf_folder(case, tmp_path):
    folder = tmp_path / "model"
    if case != "missing":
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    if case == "bad-json":
        (folder / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelFileError) as info:
        Tokenizer.from_hf_folder(folder)
    assert "\n" not in str(info.value)


def test_decode_bad_ids():
    tok = Tokenizer.from_gguf(spm_metadata())
    with pytest.raises(ValueError, match="negative"):
        tok.decode([5, -1])
    # ids past the vocabulary (an embedding's padding rows) decode to nothing
    assert tok.decode([tok.vocab_size + 10]) == ""
