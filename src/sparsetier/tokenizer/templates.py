"""Built-in chat templates, for model files that store none (the Gemma 3 GGUF we ship has none).

`fallback_template` picks by architecture and vocabulary:
  * Gemma (architecture gemma*, or `<start_of_turn>`/`<end_of_turn>` in the vocabulary): Gemma's
    turn format, `<bos><start_of_turn>user\\n...<end_of_turn>\\n<start_of_turn>model\\n`, with a
    system message folded into the first user turn, as Gemma 3's own template does;
  * Llama 3 (`<|start_header_id|>` and `<|eot_id|>` in the vocabulary): its header format;
  * anything else: ChatML (`<|im_start|>role\\n...<|im_end|>\\n`), the most common format.
"""

from __future__ import annotations

from typing import Protocol

# A message's text: a string, or the text parts of an OpenAI-style list of content parts.
_TEXT = (
    "{%- macro text(content) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- elif content is iterable -%}"
    "{%- for part in content -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{%- endmacro -%}"
)

GEMMA_TEMPLATE = _TEXT + (
    "{{- bos_token -}}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set prefix = text(messages[0]['content']) + '\n\n' -%}"
    "{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set prefix = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{- '<start_of_turn>' + role + '\n' + (prefix if loop.first else '') -}}"
    "{{- text(message['content']) | trim -}}"
    "{{- '<end_of_turn>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}"
)

LLAMA3_TEMPLATE = _TEXT + (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' -}}"
    "{{- text(message['content']) | trim -}}"
    "{{- '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}{%- endif -%}"
)

CHATML_TEMPLATE = _TEXT + (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' -}}{{- text(message['content']) -}}{{- '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)


class _Vocab(Protocol):
    architecture: str | None

    def token_to_id(self, token: str) -> int | None: ...


def fallback_template(tokenizer: _Vocab) -> str:
    """The built-in template for a tokenizer whose model stores no chat template."""
    has = tokenizer.token_to_id
    arch = (tokenizer.architecture or "").lower()
    if arch.startswith("gemma") or (has("<start_of_turn>") is not None and has("<end_of_turn>") is not None):
        return GEMMA_TEMPLATE
    if has("<|start_header_id|>") is not None and has("<|eot_id|>") is not None:
        return LLAMA3_TEMPLATE
    return CHATML_TEMPLATE
