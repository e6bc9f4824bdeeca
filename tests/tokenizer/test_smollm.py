"""SmolLM2 (byte-level BPE, pre=smollm, ChatML template) against transformers' tokenizer
built from the same GGUF, and the Hugging Face folder route."""

from __future__ import annotations

import pytest

from sparsetier.tokenizer import Tokenizer, encode_chat, render_chat

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
)


@pytest.fixture(scope="module")
def path() -> str:
    return model_path("smollm2-135m")


@pytest.fixture(scope="module")
def ours(path) -> Tokenizer:
    return Tokenizer.from_gguf(path)


@pytest.fixture(scope="module")
def reference():
    return load_reference("smollm2-135m")


@pytest.fixture(scope="module")
def fixed_reference():
    """The reference with SmolLM2's own split rule (tokenizer.json: Digits(individual) then
    ByteLevel). transformers' GGUF loader has no entry for pre=smollm and falls back to GPT-2's
    rule, which differs before digits: "a  1" is `a Ġ Ġ 1` there, `a ĠĠ 1` in SmolLM2 and
    llama.cpp. We follow the model."""
    from tokenizers import pre_tokenizers

    ref = load_reference("smollm2-135m")
    ref.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    return ref


def test_metadata(ours):
    assert ours.vocab_size == 49152
    assert ours.bos_id == 1 and ours.add_bos is False
    assert ours.eos_ids == {2, 0}  # <|im_end|> (eos, ends a turn) and <|endoftext|>
    assert ours.chat_template and "<|im_start|>" in ours.chat_template


def test_encode_matches_reference(ours, fixed_reference):
    assert_encodings_match(ours, fixed_reference, [MIXED_TEXT, *EXTRA_TEXTS])


def test_known_divergence_before_digits(ours, reference):
    # Everything else is the unpatched reference's output too; only whitespace before a digit differs.
    assert ours.encode("hello world, 123 and 4567") == reference.encode("hello world, 123 and 4567")
    ours_tokens = [ours.id_to_token(i) for i in ours.encode("a  123")]
    assert ours_tokens == ["a", "ĠĠ", "1", "2", "3"]
    assert reference.tokenize("a  123") == ["a", "Ġ", "Ġ", "1", "2", "3"]


def test_decode(ours, reference):
    assert_decodes_match(ours, reference, [MIXED_TEXT, *EXTRA_TEXTS])
    assert_round_trip(ours, MIXED_TEXT)


def test_streaming(ours):
    assert_streaming_matches(ours, MIXED_TEXT)


def test_chat_template(ours, reference):
    for gen in (True, False):
        assert render_chat(ours, CONVERSATION, add_generation_prompt=gen) == reference.apply_chat_template(
            CONVERSATION, tokenize=False, add_generation_prompt=gen
        )
    # no system message: the template adds its default one
    assert render_chat(ours, CONVERSATION[1:]) == reference.apply_chat_template(
        CONVERSATION[1:], tokenize=False, add_generation_prompt=True
    )
    ids = reference.apply_chat_template(
        CONVERSATION, tokenize=True, add_generation_prompt=True, return_dict=False
    )
    assert encode_chat(ours, CONVERSATION) == ids


def test_hf_folder(reference, tmp_path):
    """A folder saved by transformers loads to the same tokenizer as transformers loads it."""
    from transformers import AutoTokenizer

    reference.save_pretrained(tmp_path)
    ref = AutoTokenizer.from_pretrained(tmp_path)
    ours = Tokenizer.from_hf_folder(tmp_path)
    assert_encodings_match(ours, ref, [MIXED_TEXT, *EXTRA_TEXTS])
    assert_decodes_match(ours, ref, [MIXED_TEXT])
    assert ours.bos_id == ref.bos_token_id and ours.add_bos is False
    assert ours.eos_ids == {2, 0}
    assert render_chat(ours, CONVERSATION) == ref.apply_chat_template(
        CONVERSATION, tokenize=False, add_generation_prompt=True
    )
