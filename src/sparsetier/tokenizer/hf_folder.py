"""Read the tokenizer files of a Hugging Face model folder."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from tokenizers import Tokenizer as Backend

from ..errors import ModelFileError

_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")


@dataclass
class HFTokenizerInfo:
    backend: Backend
    special_tokens: dict[str, str]
    add_bos: bool | None  # None: the config does not say
    chat_template: str | None
    extra_eos_ids: list[int] = field(default_factory=list)
    config_bos_id: int | None = None
    architecture: str | None = None


def _read_json(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise ModelFileError(f"cannot read {path}: {e}") from None
    if not isinstance(value, dict):
        raise ModelFileError(f"{path} does not hold a JSON object")
    return value


def _token_text(value: Any) -> str | None:
    # tokenizer_config.json writes a token as a string or as an AddedToken dict.
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _ids(value: Any) -> list[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int)]
    return []


def _chat_template(folder: str, config: dict[str, Any]) -> str | None:
    # Newer saves keep the template in its own file; older ones in tokenizer_config.json,
    # possibly as a list of named templates.
    jinja = os.path.join(folder, "chat_template.jinja")
    if os.path.isfile(jinja):
        with open(jinja, encoding="utf-8") as f:
            return f.read()
    template = _read_json(os.path.join(folder, "chat_template.json")).get("chat_template")
    if template is None:
        template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default", next(iter(named.values()), None))
    return template if isinstance(template, str) and template else None


def read_hf_folder(path: str | os.PathLike[str]) -> HFTokenizerInfo:
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise ModelFileError(f"not a folder: {folder}")
    tokenizer_json = os.path.join(folder, "tokenizer.json")
    if not os.path.isfile(tokenizer_json):
        raise ModelFileError(f"{folder} has no tokenizer.json (only fast-tokenizer folders are supported)")
    try:
        backend = Backend.from_file(tokenizer_json)
    except Exception as e:  # the Rust side raises a bare Exception on malformed files
        raise ModelFileError(f"cannot load {tokenizer_json}: {e}") from None
    config = _read_json(os.path.join(folder, "tokenizer_config.json"))
    model_config = _read_json(os.path.join(folder, "config.json"))
    generation = _read_json(os.path.join(folder, "generation_config.json"))

    # Older folders keep the special tokens in special_tokens_map.json only.
    fallback = _read_json(os.path.join(folder, "special_tokens_map.json"))
    special = {
        name: text
        for name in _NAMES
        if (text := _token_text(config.get(name)) or _token_text(fallback.get(name))) is not None
    }
    add_bos = config.get("add_bos_token")
    archs = model_config.get("architectures")
    arch = model_config.get("model_type") or (archs[0] if isinstance(archs, list) and archs else None)
    extra_eos = _ids(generation.get("eos_token_id")) + _ids(model_config.get("eos_token_id"))
    bos_ids = _ids(generation.get("bos_token_id")) or _ids(model_config.get("bos_token_id"))
    return HFTokenizerInfo(
        backend=backend,
        special_tokens=special,
        add_bos=add_bos if isinstance(add_bos, bool) else None,
        chat_template=_chat_template(folder, config),
        extra_eos_ids=list(dict.fromkeys(extra_eos)),
        config_bos_id=bos_ids[0] if bos_ids else None,
        architecture=arch,
    )
