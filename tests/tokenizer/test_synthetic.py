"""Tokenizer families the real models here do not cover, on small synthetic GGUF files,
against transformers' tokenizer for the same file: SentencePiece (Llama 2 style, Phi-3,
gemma4) and byte-level BPE under each pre-tokenizer rule."""

from __future__ import annotations

import pytest

from sparsetier.tokenizer import Tokenizer

from .cases import (
    EXTRA_TEXTS,
    MIXED_TEXT,
    assert_decodes_match,
    assert_encodings_match,
    assert_streaming_matches,
)
from .synth import bpe_metadata, reference_for, spm_metadata, write_gguf

SPM_TEXTS = [
    MIXED_TEXT,
    *EXTRA_TEXTS,
    "hello world the 123 日本 é <|user|> x<|end|>",
    " hello",
    "<s>hello</s>",
]


@pytest.mark.parametrize(
    "meta",
    [
        spm_metadata(),
        spm_metadata(**{"tokenizer.ggml.add_space_prefix": True, "tokenizer.ggml.add_bos_token": False}),
        spm_metadata(**{"general.architecture": "phi3"}),
        spm_metadata(gemma_specials=True, **{"tokenizer.ggml.model": "gemma4"}),
    ],
    ids=["llama", "llama-no-bos", "phi3", "gemma4"],
)
def test_sentencepiece_matches_reference(meta, tmp_path):
    path = write_gguf(str(tmp_path / "spm.gguf"), meta)
    ours, ref = Tokenizer.from_gguf(path), reference_for(path)
    assert ours.add_bos == bool(ref.add_bos_token)
    assert_encodings_match(ours, ref, SPM_TEXTS)
    assert_decodes_match(ours, ref, SPM_TEXTS)
    assert_streaming_matches(ours, MIXED_TEXT)


def test_sentencepiece_defaults():
    tok = Tokenizer.from_gguf(spm_metadata())
    assert tok.add_bos is True  # llama.cpp's default for SentencePiece files without the flag
    assert tok.id_to_token(tok.encode("hello", add_bos=False)[0]).startswith("▁")  # prefix space
    assert tok.decode(tok.encode("hello  world"), skip_special=True) == "hello  world"


def test_sentencepiece_without_space_prefix():
    """add_space_prefix=false is honoured (transformers' loader ignores the key)."""
    tok = Tokenizer.from_gguf(spm_metadata(**{"tokenizer.ggml.add_space_prefix": False}))
    pieces = [tok.id_to_token(i) for i in tok.encode("hello world", add_bos=False)]
    assert not pieces[0].startswith("▁") and pieces[-1] == "▁world"
    assert tok.decode(tok.encode("hello world"), skip_special=True) == "hello world"
    assert_streaming_matches(tok, MIXED_TEXT)


@pytest.mark.parametrize(
    "pre", ["gpt2", "default", "llama-bpe", "qwen2", "deepseek-r1-qwen", "gpt-4o", "tekken", "qwen35"]
)
def test_byte_level_matches_reference(pre, tmp_path):
    path = write_gguf(str(tmp_path / f"{pre}.gguf"), bpe_metadata(pre))
    ours, ref = Tokenizer.from_gguf(path), reference_for(path)
    assert_encodings_match(ours, ref, [MIXED_TEXT, *EXTRA_TEXTS])
    assert_decodes_match(ours, ref, [MIXED_TEXT, *EXTRA_TEXTS])
    assert ours.decode(ours.encode(MIXED_TEXT)) == MIXED_TEXT


@pytest.mark.parametrize(
    ("pre", "text", "pieces"),
    [
        ("smollm", "a  123", ["a", "ĠĠ", "1", "2", "3"]),
        ("starcoder", "x=10", ["x", "=", "1", "0"]),
        ("deepseek-v3", "abc 12345", ["abc", "Ġ", "123", "45"]),
        ("deepseek-coder", "ab 12", ["ab", "Ġ", "1", "2"]),
    ],
)
def test_pre_tokenizers_beyond_the_reference(pre, text, pieces):
    """Names transformers' loader does not know, split as the models' own tokenizers do."""
    tok = Tokenizer.from_gguf(bpe_metadata(pre))
    assert [p for p, _ in tok.backend.pre_tokenizer.pre_tokenize_str(text)] == pieces
    assert tok.decode(tok.encode(MIXED_TEXT)) == MIXED_TEXT


def test_byte_level_raw_text_tokens():
    """A normal token stored as raw text is respelled into the byte alphabet; a control token
    outside the alphabet (DeepSeek's) keeps its id and is matched whole."""
    meta = bpe_metadata()
    n = len(meta["tokenizer.ggml.tokens"])
    tokens = meta["tokenizer.ggml.tokens"] + ["日", "<｜end▁of▁sentence｜>"]
    types = meta["tokenizer.ggml.token_type"] + [1, 3]
    tok = Tokenizer.from_gguf({**meta, "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types})
    assert tok.token_to_id("æĹ¥") == n  # "日" as its UTF-8 bytes
    assert tok.encode("x<｜end▁of▁sentence｜>", add_bos=False)[-1] == n + 1
    assert tok.decode([n, n + 1]) == "日<｜end▁of▁sentence｜>"
