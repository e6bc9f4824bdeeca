"""Chat templates: render a conversation into the prompt text the model was trained on.

Templates are Jinja run in a sandbox (`ImmutableSandboxedEnvironment`; a template comes from a
model file, so it is untrusted code), with what Hugging Face templates expect: trim_blocks and
lstrip_blocks, `raise_exception`, `strftime_now`, a `tojson` that does not escape HTML, the
`loop` controls extension (`break`/`continue`), a `{% generation %}` tag, and the special tokens
(`bos_token`, `eos_token`, ...) as variables. A model that stores no template gets a built-in
one (see `templates.fallback_template`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import SparsetierError
from .templates import fallback_template
from .tokenizer import Tokenizer


class ChatTemplateError(SparsetierError):
    """The chat template rejected the conversation (e.g. roles that do not alternate) or is broken."""


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for training masks; here
    it only renders its body."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller: Callable[[], str]) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes <, >, & for HTML, which would change the prompt.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _Namespace(jinja2.utils.Namespace):
    """`namespace(...)` that refuses underscore names (no reaching into Python internals)."""

    def __init__(*args: Any, **kwargs: Any):  # noqa: N805 -- Jinja's signature trick
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates cannot set underscore names ({name!r})")


def _dict(*args: Any, **kwargs: Any) -> dict:
    return dict(*args, **kwargs)


@lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals.update(
        raise_exception=_raise_exception, strftime_now=_strftime_now, namespace=_Namespace, dict=_dict
    )
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ChatTemplateError(f"the chat template does not parse: {e} (line {e.lineno})") from None


def _plain(value: Any) -> Any:
    """Only JSON-like data reaches the template: objects with methods are a sandbox risk."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    # Subclasses (enums, numpy scalars...) carry extra methods: back to the base type.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if type(value).__module__ == "numpy" and callable(getattr(value, "item", None)):
        return _plain(value.item())
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):  # pydantic models (the server's requests)
        return _plain(value.model_dump())
    return f"<{type(value).__name__}>"


_REASONING = ("reasoning_content", "thinking", "reasoning")


def _prepare(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for message in messages:
        if not isinstance(message, Mapping):
            raise ChatTemplateError(f"a chat message must be a dict, got {type(message).__name__}")
        # Keys set to None are dropped: templates test for presence ("content": None from
        # OpenAI clients would otherwise print "None").
        plain = {k: v for k, v in _plain(message).items() if v is not None}
        reasoning = next((plain[k] for k in _REASONING if k in plain), None)
        if reasoning is not None:  # templates read this under different names
            plain = {"thinking": reasoning, **plain, "reasoning_content": reasoning}
        out.append(plain)
    return out


def chat_template_for(tokenizer: Tokenizer) -> str:
    """The template `render_chat` uses: the model's own, else a built-in one."""
    return tokenizer.chat_template or fallback_template(tokenizer)


def render_chat(
    tokenizer: Tokenizer,
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
    **template_vars: Any,
) -> str:
    """The prompt text for `messages` ([{"role": ..., "content": ...}, ...]).

    `tools` are JSON schemas (dicts); extra keyword arguments become template variables
    (e.g. `enable_thinking=False`).
    """
    if not messages:
        raise ChatTemplateError("cannot render an empty conversation")
    if tools is not None and not all(isinstance(t, Mapping) for t in tools):
        raise ChatTemplateError("tools must be JSON-schema dicts")
    template = _compile(chat_template_for(tokenizer))
    variables = {**tokenizer.special_tokens, **_plain(template_vars)}
    try:
        return template.render(
            messages=_prepare(messages),
            tools=_plain(tools),
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **variables,
        )
    except jinja2.exceptions.TemplateError as e:
        raise ChatTemplateError(f"chat template error: {e}") from None


def encode_chat(
    tokenizer: Tokenizer,
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
    add_bos: bool | None = None,
    **template_vars: Any,
) -> list[int]:
    """Token ids of the rendered conversation.

    `add_bos=None`: add BOS when the model wants one and the template did not already write it
    (a template that emits `bos_token` must not get a second one). Token ids then match
    transformers' `apply_chat_template(..., tokenize=True)` whenever the template writes its
    own BOS or the model wants none; for a model that wants BOS whose template omits it we add
    it, as llama.cpp does, where transformers adds none.
    """
    text = render_chat(tokenizer, messages, add_generation_prompt, tools, **template_vars)
    if add_bos is None:
        bos = tokenizer.bos_token
        add_bos = tokenizer.add_bos and not (bos and text.startswith(bos))
    return tokenizer.encode(text, add_bos=add_bos)
