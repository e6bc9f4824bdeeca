"""Chat templates: the Jinja environment (same output as transformers' for the features HF
templates use, sandboxed), the built-in templates, and BOS handling in encode_chat."""

from __future__ import annotations

import datetime

import pytest

from sparsetier.tokenizer import ChatTemplateError, Tokenizer, chat_template_for, encode_chat, render_chat
from sparsetier.tokenizer.templates import CHATML_TEMPLATE, GEMMA_TEMPLATE, LLAMA3_TEMPLATE

from .cases import CONVERSATION, TOOLS
from .synth import bpe_metadata, spm_metadata


def tokenizer_with(template: str | None = None, spm: bool = False, **meta) -> Tokenizer:
    base = spm_metadata if spm else bpe_metadata
    return Tokenizer.from_gguf(base(**{"tokenizer.chat_template": template, **meta}))


def transformers_render(tok: Tokenizer, template: str, messages, **kwargs) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
    rendered, _ = render_jinja_template(
        conversations=[messages], chat_template=template, **tok.special_tokens, **kwargs
    )
    return rendered[0]


# Features HF templates use: loop controls, namespace, tojson options, filters, tests,
# slicing, string methods, bos/eos variables, the generation tag, raise_exception guards.
FEATURE_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(n=0) %}"
    "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}"
    "{% set ns.n = ns.n + 1 %}[{{ loop.index }}:{{ m.role | upper }}] {{ m.content | trim }}\n"
    "{% if loop.index > 5 %}{% break %}{% endif %}{% endfor %}"
    "{% if tools %}{{ tools | tojson }}|{{ tools[0] | tojson(indent=2) }}{% endif %}"
    "{% generation %}gen{{ ns.n }}{% endgeneration %}"
    "{{ messages[-1].content.split(' ')[0] }}{{ messages | length }}{{ eos_token }}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_environment_matches_transformers():
    tok = tokenizer_with(FEATURE_TEMPLATE)
    for tools in (None, TOOLS):
        for gen in (True, False):
            ours = render_chat(tok, CONVERSATION, add_generation_prompt=gen, tools=tools)
            assert ours == transformers_render(
                tok, FEATURE_TEMPLATE, CONVERSATION, tools=tools, add_generation_prompt=gen
            )
    assert "<b>now</b> & later" in render_chat(tok, CONVERSATION, tools=TOOLS)  # no HTML escaping


def test_extra_variables_and_strftime():
    tok = tokenizer_with("{{ strftime_now('%Y') }} {{ enable_thinking }} {{ messages[0].content }}")
    year = str(datetime.date.today().year)
    assert (
        render_chat(tok, CONVERSATION, enable_thinking=False) == f"{year} False You are a concise assistant."
    )


def test_none_values_and_reasoning_aliases():
    tok = tokenizer_with(
        "{% for m in messages %}{{ m.content is defined }} {{ m.reasoning_content }}|{% endfor %}"
    )
    messages = [{"role": "assistant", "content": None, "reasoning": "because"}]
    assert render_chat(tok, messages) == "False because|"


@pytest.mark.parametrize(
    "template",
    [
        "{{ raise_exception('roles must alternate') }}",
        "{% for x in %}",  # does not parse
        "{{ messages.__class__.__mro__ }}",  # sandbox
        "{{ ''.__class__.__subclasses__() }}",
        "{% set ns = namespace() %}{% set ns._x = 1 %}",
    ],
)
def test_template_errors(template):
    with pytest.raises(ChatTemplateError) as info:
        render_chat(tokenizer_with(template), CONVERSATION)
    assert "\n" not in str(info.value)


def test_bad_messages():
    tok = tokenizer_with()
    with pytest.raises(ChatTemplateError):
        render_chat(tok, [])
    with pytest.raises(ChatTemplateError):
        render_chat(tok, ["hello"])
    with pytest.raises(ChatTemplateError):
        render_chat(tok, CONVERSATION, tools=[print])


def test_fallback_selection():
    assert chat_template_for(tokenizer_with()) == CHATML_TEMPLATE
    gemma = Tokenizer.from_gguf(spm_metadata(**{"general.architecture": "gemma3"}))
    assert chat_template_for(gemma) == GEMMA_TEMPLATE
    assert chat_template_for(tokenizer_with(spm=True)) == CHATML_TEMPLATE
    vocab = bpe_metadata()
    tokens = vocab["tokenizer.ggml.tokens"] + ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    llama3 = Tokenizer.from_gguf(
        {
            **vocab,
            "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": vocab["tokenizer.ggml.token_type"] + [3] * 3,
        }
    )
    assert chat_template_for(llama3) == LLAMA3_TEMPLATE
    assert llama3.token_to_id("<|eot_id|>") in llama3.eos_ids
    own = tokenizer_with("{{ messages[0].content }}")
    assert chat_template_for(own) == own.chat_template


@pytest.mark.parametrize("template", [CHATML_TEMPLATE, GEMMA_TEMPLATE, LLAMA3_TEMPLATE])
def test_builtin_templates_render_as_in_transformers(template):
    tok = tokenizer_with()
    parts = [dict(m) for m in CONVERSATION]
    parts[1]["content"] = [{"type": "text", "text": "What is 2 + 2?"}]  # OpenAI-style content parts
    for messages in (CONVERSATION, CONVERSATION[1:], parts):
        for gen in (True, False):
            rendered = _render(tok, template, messages, gen)
            assert rendered == transformers_render(tok, template, messages, add_generation_prompt=gen)
            assert "What is 2 + 2?" in rendered


def _render(tok: Tokenizer, template: str, messages, gen: bool) -> str:
    tok = Tokenizer(
        tok.backend,
        vocab_size=tok.vocab_size,
        add_bos=tok.add_bos,
        special_tokens=tok.special_tokens,
        bos_id=tok.bos_id,
        eos_id=tok.eos_id,
        chat_template=template,
    )
    return render_chat(tok, messages, add_generation_prompt=gen)


def test_chatml_fallback_output():
    tok = tokenizer_with()
    assert render_chat(tok, CONVERSATION[:2]) == (
        "<|im_start|>system\nYou are a concise assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_gemma_roles_must_alternate():
    gemma = Tokenizer.from_gguf(spm_metadata(**{"general.architecture": "gemma3"}))
    with pytest.raises(ChatTemplateError, match="alternate"):
        render_chat(gemma, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_encode_chat_bos():
    """BOS once: from the template if it writes one, else added when the model wants it."""
    with_bos = tokenizer_with("{{ bos_token }}{{ messages[0].content }}", spm=True)
    without_bos = tokenizer_with("{{ messages[0].content }}", spm=True)
    no_bos_model = tokenizer_with(
        "{{ messages[0].content }}", spm=True, **{"tokenizer.ggml.add_bos_token": False}
    )
    messages = [{"role": "user", "content": "hello"}]
    for tok in (with_bos, without_bos):
        ids = encode_chat(tok, messages)
        assert ids[0] == tok.bos_id and ids[1] != tok.bos_id and tok.decode(ids, skip_special=True) == "hello"
    assert encode_chat(no_bos_model, messages)[0] != no_bos_model.bos_id
    assert encode_chat(without_bos, messages, add_bos=False)[0] != without_bos.bos_id
