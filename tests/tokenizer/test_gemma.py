"""Gemma 3 (SentencePiece-style BPE with byte fallback, 262k tokens, merges rebuilt from the
vocabulary; the file stores no chat template) against transformers' tokenizer built from the
same GGUF, plus the built-in Gemma template and the Hugging Face folder route."""

from __future__ import annotations

import json

import pytest

from sparsetier.tokenizer import Tokenizer, chat_template_for, encode_chat, render_chat
from sparsetier.tokenizer.templates import GEMMA_TEMPLATE

from .cases import (
    CONVERSATION,
    EXTRA_TEXTS,
    MIXED_TEXT,
    assert_decodes_match,
    assert_encodings_match,
    assert_round_trip,
    assert_streaming_matches,
    load_reference,
    model_path,
    stream,
)

# Gemma 3's turn format: the system message opens the first user turn.
EXPECTED_PROMPT = (
    "<bos><start_of_turn>user\nYou are a concise assistant.\n\nWhat is 2 + 2?<end_of_turn>\n"
    "<start_of_turn>model\n4.<end_of_turn>\n"
    "<start_of_turn>user\nAnd in Japanese?  日本語で。<end_of_turn>\n"
    "<start_of_turn>model\n"
)


@pytest.fixture(scope="module")
def path() -> str:
    return model_path("gemma3-270m")


@pytest.fixture(scope="module")
def ours(path) -> Tokenizer:
    return Tokenizer.from_gguf(path)


@pytest.fixture(scope="module")
def reference():
    return load_reference("gemma3-270m")


def test_metadata(ours):
    assert ours.vocab_size == 262144
    assert ours.bos_id == 2 and ours.add_bos is True
    assert ours.eos_ids == {1, 106}  # <eos>, <end_of_turn>
    assert ours.chat_template is None  # this file has none
    assert len(ours.byte_token_ids) == 256


def test_same_pipeline_as_reference(ours, reference):
    """Vocabulary, the merges rebuilt from it, and the added tokens are the reference's."""
    ref = json.loads(reference.backend_tokenizer.to_str())
    mine = json.loads(ours.backend.to_str())
    for key in ("normalizer", "pre_tokenizer", "decoder"):
        assert mine[key] == ref[key], key
    assert mine["model"]["vocab"] == ref["model"]["vocab"]
    assert mine["model"]["merges"] == ref["model"]["merges"]
    assert {json.dumps(t, sort_keys=True) for t in mine["added_tokens"]} == {
        json.dumps(t, sort_keys=True) for t in ref["added_tokens"]
    }


def test_encode_matches_reference(ours, reference):
    assert_encodings_match(ours, reference, [MIXED_TEXT, *EXTRA_TEXTS])


def test_decode(ours, reference):
    assert_decodes_match(ours, reference, [MIXED_TEXT, *EXTRA_TEXTS])
    assert_round_trip(ours, MIXED_TEXT)


def test_streaming(ours):
    assert_streaming_matches(ours, MIXED_TEXT)
    # A character the vocabulary lacks (U+20000) arrives as four <0xNN> pieces; its text comes
    # whole, once the run of pieces ends (a later byte could still make the run invalid).
    ids = ours.encode("a\U00020000b", add_bos=False)
    assert [i in ours.byte_token_ids for i in ids] == [False, True, True, True, True, False]
    assert stream(ours, ids) == ["a", "", "", "", "", "\U00020000b", ""]


def test_fallback_chat_template(ours, reference):
    assert chat_template_for(ours) == GEMMA_TEMPLATE
    assert render_chat(ours, CONVERSATION) == EXPECTED_PROMPT
    # transformers renders our template the same way (same Jinja environment)
    for messages in (CONVERSATION, CONVERSATION[1:]):
        assert render_chat(ours, messages) == reference.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, chat_template=GEMMA_TEMPLATE
        )
    # the template writes <bos>; encoding must not add a second one
    ids = encode_chat(ours, CONVERSATION)
    assert ids[0] == 2 and ids[1] != 2
    assert ids == ours.encode(EXPECTED_PROMPT, add_bos=False)
    assert ids[-3:] == ours.encode("<start_of_turn>model\n", add_bos=False)


def test_hf_folder(reference, tmp_path):
    """The saved folder's BOS comes from tokenizer.json's post-processor (no add_bos_token key)."""
    from transformers import AutoTokenizer

    reference.save_pretrained(tmp_path)
    ref = AutoTokenizer.from_pretrained(tmp_path)
    ours = Tokenizer.from_hf_folder(tmp_path)
    assert ours.add_bos is True and ours.bos_id == 2
    assert ours.eos_ids == {1, 106}
    assert_encodings_match(ours, ref, [MIXED_TEXT, *EXTRA_TEXTS[:10]])
    assert render_chat(ours, CONVERSATION) == EXPECTED_PROMPT
