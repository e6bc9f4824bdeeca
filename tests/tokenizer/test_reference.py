"""The references the other modules build by naming the tokenizer class are what
AutoTokenizer builds for the same GGUF files (AutoTokenizer also reads the model config
through the stock GGUF reader: slow)."""

from __future__ import annotations

import json

import pytest

from .cases import REFERENCE_CLASS, load_reference


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "qwen2.5-coder-0.5b", "gemma3-270m"])
def test_named_class_is_what_autotokenizer_builds(name):
    auto = load_reference(name, auto=True)
    named = load_reference(name)
    assert type(auto).__name__ == REFERENCE_CLASS[name]
    assert json.loads(auto.backend_tokenizer.to_str()) == json.loads(named.backend_tokenizer.to_str())
    assert auto.special_tokens_map == named.special_tokens_map
    assert auto.chat_template == named.chat_template
