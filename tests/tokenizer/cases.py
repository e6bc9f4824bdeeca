"""Shared inputs and checks for the tokenizer tests: the texts, the conversation, and the
comparisons against a transformers tokenizer (the reference)."""

from __future__ import annotations

import random

import pytest

from sparsetier.tokenizer import StreamDecoder, Tokenizer
from sparsetier.weights import catalog

# Code with indentation and tabs, accents, CJK, emoji (with modifiers and ZWJ), RTL, long
# numbers, runs of spaces and newlines, CRLF, and special tokens inline.
MIXED_TEXT = (
    "def fibonacci(n: int) -> int:\n    if n <= 1:\n        return n\n"
    "\treturn fibonacci(n - 1) + fibonacci(n - 2)\n\n\n"
    "class Point:\n\tdef __init__(self, x, y):\n\t\tself.x, self.y = x, y  # tab-indented\n"
    "Café naïve façade — Ünïcödé: 日本語のテキスト, 中文字符, 한국어 텍스트; emoji 😀👍🏽🇫🇷 and 👨‍👩‍👧‍👦.\n"
    "RTL: שלום עולם and مرحبا بالعالم.\n"
    "Numbers: 1234567890 3.14159265358979 -42 1e-10 0x1F 1,000,000 12345678901234567890\n"
    "Spaces:   three   and    four     five\n\n\n\nmany newlines\r\nwindows\r\n"
    "   leading and trailing   \n"
    "<|im_start|>user\nhi<|im_end|> <|endoftext|><start_of_turn>model\n<end_of_turn><bos> <eos>\n"
    "I'm you're they'll it's WE'RE don't   \t\t mixed\ttabs\n"
    "  123  4567 a  89\n\t\t7 x\n"
)

# Edge cases, compared on encode only (some do not round-trip through every decoder, e.g.
# a literal "▁" comes back as a space from SentencePiece).
EXTRA_TEXTS = [
    "",
    " ",
    "  ",
    "\n",
    "hello",
    " hello",
    "  hello  ",
    "\t\tx",
    "1",
    "12",
    "123",
    "1234",
    "😀",
    " 😀",
    "é",
    "e\u0301",
    "日本",
    "a\u200bb",
    "\x00\x01\x7f",
    "<|im_start|>",
    "<tool_call>x</tool_call>",
    "\n\n\n\n\n",
    " \n \n",
    "<0x41>",
    "▁hello",
    "[multimodal]",
    "<unused0>",
    "\u2028\u00a0x",
]

CONVERSATION = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And in Japanese?  日本語で。"},
]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city <b>now</b> & later",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def model_path(name: str) -> str:
    """A catalog model's file; the test is skipped when it is not in the cache."""
    entry = catalog.MODELS[name]
    if not catalog.is_present(entry):
        pytest.skip(f"model {entry.filename} is not in {catalog.cache_dir()}")
    return catalog.model_path(entry)


# The class AutoTokenizer picks for each file. Naming it skips AutoTokenizer's reading of the
# model config through the stock GGUF reader (~40 s for Gemma); the tokenizer built is the
# same, which test_reference.py (slow) checks.
REFERENCE_CLASS = {
    "smollm2-135m": "TokenizersBackend",
    "qwen2.5-coder-0.5b": "Qwen2Tokenizer",
    "qwen2.5-coder-1.5b": "Qwen2Tokenizer",
    "gemma3-270m": "GemmaTokenizer",
}


def load_reference(name: str, auto: bool = False):
    """transformers' tokenizer built from the same GGUF (seconds; `auto`: through AutoTokenizer,
    tens of seconds)."""
    import os

    import transformers

    path = model_path(name)
    if auto:
        cls = transformers.AutoTokenizer
    elif REFERENCE_CLASS[name] == "TokenizersBackend":
        from transformers.tokenization_utils_tokenizers import TokenizersBackend as cls
    else:
        cls = getattr(transformers, REFERENCE_CLASS[name])
    return cls.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))


def assert_encodings_match(ours: Tokenizer, ref, texts: list[str]) -> None:
    """Same ids as the reference, with the model's default BOS, without BOS, and with BOS forced."""
    for text in texts:
        plain = ref.encode(text, add_special_tokens=False)
        assert ours.encode(text, add_bos=False) == plain, repr(text[:60])
        assert ours.encode(text) == ref.encode(text, add_special_tokens=True), repr(text[:60])
        assert ours.encode(text, add_bos=True) == [ours.bos_id, *plain], repr(text[:60])


def assert_decodes_match(ours: Tokenizer, ref, texts: list[str]) -> None:
    for text in texts:
        ids = ref.encode(text, add_special_tokens=False)
        for skip in (False, True):
            assert ours.decode(ids, skip_special=skip) == ref.decode(ids, skip_special_tokens=skip), repr(
                text[:60]
            )


def assert_round_trip(ours: Tokenizer, text: str) -> None:
    assert ours.decode(ours.encode(text, add_bos=False)) == text
    # With BOS, skipping special tokens drops exactly the BOS.
    if ours.bos_id is not None:
        assert ours.decode(ours.encode(text, add_bos=True), skip_special=True) == ours.decode(
            ours.encode(text, add_bos=False), skip_special=True
        )


def stream(tok: Tokenizer, ids: list[int], skip_special: bool = False) -> list[str]:
    decoder = StreamDecoder(tok, skip_special=skip_special)
    return [decoder.push(i) for i in ids] + [decoder.flush()]


def assert_streaming_matches(tok: Tokenizer, text: str, n_random: int = 3, seed: int = 0) -> None:
    """Concatenated pushes equal decode(all): on real text (where no piece may hold half a
    character) and on random id sequences (invalid byte runs included)."""
    ids = tok.encode(text, add_bos=True)
    for skip in (False, True):
        pieces = stream(tok, ids, skip)
        assert "".join(pieces) == tok.decode(ids, skip_special=skip)
        assert not any("\ufffd" in p for p in pieces)
    rng = random.Random(seed)
    for _ in range(n_random):
        ids = [rng.randrange(tok.vocab_size) for _ in range(200)]
        # and runs of byte tokens, where the vocabulary has them
        byte_ids = sorted(tok.byte_token_ids)
        if byte_ids:
            ids += [rng.choice(byte_ids) for _ in range(40)] + ids[:5]
        assert "".join(stream(tok, ids)) == tok.decode(ids)
