"""StreamDecoder on the synthetic vocabularies (the real models are in their own modules):
concatenation equals decode, characters are never split, and flush ends a stream."""

from __future__ import annotations

from sparsetier.tokenizer import StreamDecoder, Tokenizer

from .cases import MIXED_TEXT, assert_streaming_matches, stream
from .synth import bpe_metadata, spm_metadata


def test_byte_level():
    tok = Tokenizer.from_gguf(bpe_metadata())
    assert_streaming_matches(tok, MIXED_TEXT, n_random=10)
    # an emoji is several byte-level tokens: nothing until it is whole
    ids = tok.encode("a😀", add_bos=False)
    pieces = stream(tok, ids)
    assert pieces[0] == "a" and "😀" in pieces and "".join(pieces) == "a😀"


def test_sentencepiece_leading_spaces():
    """SentencePiece decoders drop the first piece's leading space: mid-stream words keep theirs."""
    tok = Tokenizer.from_gguf(spm_metadata())
    assert_streaming_matches(tok, MIXED_TEXT, n_random=10)
    ids = tok.encode("the world and the world", add_bos=False)
    assert "".join(stream(tok, ids)) == "the world and the world"
    assert " world" in stream(tok, ids)


def test_flush_ends_the_stream():
    tok = Tokenizer.from_gguf(spm_metadata())
    decoder = StreamDecoder(tok)
    first = [decoder.push(i) for i in tok.encode("hello world", add_bos=False)]
    assert "".join(first) + decoder.flush() == "hello world"
    second = [decoder.push(i) for i in tok.encode("the world", add_bos=False)]
    assert "".join(second) + decoder.flush() == "the world"
    assert decoder.flush() == ""


def test_incomplete_character_at_the_end():
    tok = Tokenizer.from_gguf(bpe_metadata())
    ids = tok.encode("x😀", add_bos=False)[:-1]  # cut inside the emoji
    pieces = stream(tok, ids)
    assert "".join(pieces) == tok.decode(ids) and pieces[-1].endswith("\ufffd")


def test_skip_special():
    tok = Tokenizer.from_gguf(bpe_metadata())
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>", add_bos=True)
    assert "".join(stream(tok, ids, skip_special=True)) == "user\nhi"
