"""OpenAI request schemas (strict: mistyped or unknown fields are 400s) and response bodies.

Fields OpenAI defines but we do not implement are accepted only at their neutral value, so a
client asking for them gets a clear 400 rather than silently different behaviour.
Extensions, as llama.cpp and vLLM name them: top_k, min_p, repeat_penalty, ignore_eos.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..engine.sampling import SamplingParams
from .errors import bad_request

_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
# bounded: the stop matcher rescans up to the longest stop string for every token
_Stop = Annotated[str, Field(max_length=256)]


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = False


class TextPart(BaseModel):
    model_config = _STRICT
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = _STRICT
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ResponseFormat(BaseModel):
    model_config = _STRICT
    type: Literal["text"]


class GenerationRequest(BaseModel):
    """Fields shared by /v1/completions and /v1/chat/completions."""

    model_config = _STRICT
    model: str
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: _Stop | Annotated[list[_Stop], Field(max_length=16)] | None = None
    seed: Annotated[int, Field(ge=-(2**63), lt=2**64)] | None = None
    user: str | None = None  # accepted and ignored, as OpenAI documents it
    # accepted only at their neutral values (checked in `unsupported`)
    n: Annotated[int, Field(ge=1)] = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    # extensions
    top_k: Annotated[int, Field(ge=0)] | None = None
    min_p: Annotated[float, Field(ge=0, lt=1)] | None = None
    repeat_penalty: Annotated[float, Field(gt=0, le=10)] | None = None
    ignore_eos: bool = False

    def unsupported(self) -> list[str]:
        """Names of fields set to something we do not implement."""
        bad = []
        if self.n != 1:
            bad.append("n")
        if self.presence_penalty:
            bad.append("presence_penalty")
        if self.frequency_penalty:
            bad.append("frequency_penalty")
        if self.logit_bias:
            bad.append("logit_bias")
        return bad

    def sampling(self) -> SamplingParams:
        """Unset fields take the engine's defaults (as the CLI and llama.cpp's server do)."""
        p = SamplingParams(seed=self.seed)
        for name in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty"):
            value = getattr(self, name)
            if value is not None:
                setattr(p, name, value)
        return p

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(GenerationRequest):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)] | list[int]
    echo: bool = False
    suffix: str | None = None
    best_of: Annotated[int, Field(ge=1)] | None = None
    logprobs: int | None = None

    def unsupported(self) -> list[str]:
        bad = super().unsupported()
        bad += [n for n in ("echo", "suffix", "logprobs") if getattr(self, n)]
        if self.best_of not in (None, 1):
            bad.append("best_of")
        return bad


class ChatRequest(GenerationRequest):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    response_format: ResponseFormat | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    parallel_tool_calls: bool | None = None

    def unsupported(self) -> list[str]:
        bad = super().unsupported()
        bad += [n for n in ("logprobs", "top_logprobs", "tools", "functions") if getattr(self, n)]
        if self.tool_choice not in (None, "none"):
            bad.append("tool_choice")
        if self.function_call not in (None, "none"):
            bad.append("function_call")
        return bad

    def chat_messages(self) -> list[dict[str, str]]:
        # "developer" is OpenAI's newer name for "system"; chat templates know only the latter
        return [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in self.messages
        ]


def _param(loc: tuple, data: object, missing: bool) -> str | None:
    """The field path of an error as the client wrote it: pydantic's union-branch names
    (e.g. messages.0.content.str) are dropped by following the path through the data."""
    parts, node = [], data
    for i, key in enumerate(loc):
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            node = node[key]
        elif not (missing and i == len(loc) - 1):
            break
        parts.append(str(key))
    return ".".join(parts) or None


def parse(cls: type[GenerationRequest], data: Any) -> GenerationRequest:
    """Validate a decoded JSON body; the first problem becomes a 400 naming its field."""
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object")
    try:
        req = cls.model_validate(data)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        param = _param(errors[0]["loc"], data, errors[0]["type"] == "missing")
        # a union field fails once per branch: report the branch whose type matched, if any
        same = [x for x in errors if _param(x["loc"], data, x["type"] == "missing") == param]
        err = next((x for x in same if not x["type"].endswith("_type")), errors[0])
        if err["type"] == "extra_forbidden":
            raise bad_request(f"unrecognized request argument: {param}", param=param) from None
        if err["type"] == "missing":
            raise bad_request(f"missing required field: {param}", param=param) from None
        raise bad_request(f"invalid value for {param}: {err['msg']}", param=param) from None
    bad = req.unsupported()
    if bad:
        raise bad_request(
            f"unsupported parameter: {bad[0]} (sparsetier does not implement it)",
            param=bad[0],
            code="unsupported_parameter",
        )
    return req


# --- response bodies -------------------------------------------------------------------------


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _envelope(id: str, object: str, model: str, choices: list[dict], **extra: object) -> dict:
    """The fields every completion object and stream chunk share."""
    created = int(time.time())
    return {"id": id, "object": object, "created": created, "model": model, "choices": choices, **extra}


def completion(id: str, model: str, text: str, finish: str, use: dict[str, int]) -> dict:
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    return _envelope(id, "text_completion", model, [choice], usage=use)


def completion_chunk(id: str, model: str, text: str, finish: str | None) -> dict:
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    return _envelope(id, "text_completion", model, [choice])


def chat(id: str, model: str, text: str, finish: str, use: dict[str, int]) -> dict:
    message = {"role": "assistant", "content": text}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    return _envelope(id, "chat.completion", model, [choice], usage=use)


def chat_chunk(id: str, model: str, delta: dict[str, str], finish: str | None) -> dict:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return _envelope(id, "chat.completion.chunk", model, [choice])


def usage_chunk(id: str, model: str, object: str, use: dict[str, int]) -> dict:
    """stream_options.include_usage: a last chunk with no choices, only usage."""
    return _envelope(id, object, model, [], usage=use)
