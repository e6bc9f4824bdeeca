"""Qwen2.5-Coder 0.5B and 1.5B (byte-level BPE, pre=qwen2, ChatML template with tools)
against transformers' tokenizer built from the 0.5B GGUF. The 1.5B file stores the same
vocabulary (checked here), so it is compared against the same reference."""

from __future__ import annotations

import pytest

from sparsetier.tokenizer import Tokenizer, encode_chat, render_chat
from sparsetier.weights.gguf import GGUFFile

from .cases import (
    CONVERSATION,
    EXTRA_TEXTS,
    MIXED_TEXT,
    TOOLS,
    assert_decodes_match,
    assert_encodings_match,
    assert_round_trip,
    assert_streaming_matches,
    load_reference,
    model_path,
)

VOCAB_KEYS = (
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token",
)


@pytest.fixture(scope="module")
def reference():
    return load_reference("qwen2.5-coder-0.5b")


@pytest.fixture(scope="module", params=["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
def ours(request) -> Tokenizer:
    return Tokenizer.from_gguf(model_path(request.param))


def test_same_vocabulary_in_both_files():
    small, large = (GGUFFile(model_path(n)) for n in ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"))
    for key in VOCAB_KEYS:
        assert small.get(key) == large.get(key), key


def test_metadata(ours):
    assert ours.vocab_size == 151936
    assert ours.add_bos is False and ours.bos_id == 151643
    assert ours.eos_ids == {151645, 151643}  # <|im_end|> and <|endoftext|>


def test_encode_matches_reference(ours, reference):
    assert_encodings_match(ours, reference, [MIXED_TEXT, *EXTRA_TEXTS])


def test_decode(ours, reference):
    assert_decodes_match(ours, reference, [MIXED_TEXT, *EXTRA_TEXTS])
    assert_round_trip(ours, MIXED_TEXT)


def test_streaming(ours):
    assert_streaming_matches(ours, MIXED_TEXT)


def test_chat_template(ours, reference):
    # Each file's own template (they differ slightly), rendered by transformers too.
    def ref_render(messages, **kw):
        return reference.apply_chat_template(messages, tokenize=False, chat_template=ours.chat_template, **kw)

    for gen in (True, False):
        assert render_chat(ours, CONVERSATION, add_generation_prompt=gen) == ref_render(
            CONVERSATION, add_generation_prompt=gen
        )
    assert render_chat(ours, CONVERSATION[1:]) == ref_render(CONVERSATION[1:], add_generation_prompt=True)
    with_tools = render_chat(ours, CONVERSATION, tools=TOOLS)
    assert with_tools == ref_render(CONVERSATION, tools=TOOLS, add_generation_prompt=True)
    assert "<b>now</b> & later" in with_tools  # tojson does not escape HTML
    ids = reference.apply_chat_template(
        CONVERSATION,
        tokenize=True,
        add_generation_prompt=True,
        return_dict=False,
        chat_template=ours.chat_template,
    )
    assert encode_chat(ours, CONVERSATION) == ids


def test_chat_tool_calls(ours, reference):
    """An assistant turn with tool calls and a tool reply; `content: None` is dropped, as
    transformers does, instead of printing "None"."""
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
            ],
        },
        {"role": "tool", "content": "18°C, sunny"},
    ]
    ours_text = render_chat(ours, messages, tools=TOOLS)
    assert "None" not in ours_text
    assert ours_text == reference.apply_chat_template(
        messages, tools=TOOLS, tokenize=False, add_generation_prompt=True, chat_template=ours.chat_template
    )
