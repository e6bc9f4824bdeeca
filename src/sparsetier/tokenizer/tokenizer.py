"""The tokenizer the engine uses: text <-> token ids, built from a GGUF file or a Hugging Face
folder without importing transformers (the Rust `tokenizers` library does the work)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from tokenizers import Tokenizer as Backend

from .gguf_vocab import build_gguf_vocab
from .hf_folder import read_hf_folder
from .templates import fallback_template

if TYPE_CHECKING:
    from ..weights.gguf import GGUFFile

# Tokens that end a turn or a document in common chat formats; one of them stops generation
# when the vocabulary has it as a special token and the chat template writes it.
_END_OF_TURN = (
    "<|im_end|>",
    "<end_of_turn>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|end_of_text|>",
    "<EOT>",
    "<｜end▁of▁sentence｜>",
    "<|END_OF_TURN_TOKEN|>",
)
# Ends a document: always a sensible place to stop, template or not.
_END_OF_TEXT = "<|endoftext|>"


class Tokenizer:
    """Text to token ids and back, with the model's special tokens and chat template.

    Special tokens written in the text (`<|im_start|>`) are matched as special tokens, as
    transformers does by default.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        vocab_size: int,
        add_bos: bool,
        special_tokens: dict[str, str],
        bos_id: int | None,
        eos_id: int | None,
        extra_eos_ids: Iterable[int] = (),
        chat_template: str | None = None,
        architecture: str | None = None,
        byte_token_ids: frozenset[int] = frozenset(),
    ):
        self.backend = backend
        self.vocab_size = vocab_size
        self.add_bos = add_bos  # the model's default for encode(add_bos=None)
        self.special_tokens = special_tokens  # "bos_token", "eos_token", ... -> text, for templates
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.chat_template = chat_template
        self.architecture = architecture
        self.byte_token_ids = byte_token_ids  # byte-fallback pieces, see StreamDecoder
        self.special_ids = frozenset(i for i, t in backend.get_added_tokens_decoder().items() if t.special)
        self.eos_ids = self._stop_ids(eos_id, extra_eos_ids)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_gguf(cls, gguf_file: GGUFFile | Mapping[str, Any] | str | os.PathLike[str]) -> Tokenizer:
        """Build from the vocabulary in a GGUF file's metadata: an open GGUFFile, a path, or the
        metadata itself as a mapping (GGUF key -> value; tests build small vocabularies so)."""
        if isinstance(gguf_file, (str, os.PathLike)):
            from ..weights.gguf import GGUFFile

            gguf_file = GGUFFile(gguf_file)
        vocab = build_gguf_vocab(gguf_file)
        ids, tokens = vocab.special_ids, vocab.tokens
        names = {"bos": "bos_token", "eos": "eos_token", "unknown": "unk_token", "padding": "pad_token"}
        special = {name: tokens[ids[key]] for key, name in names.items() if ids.get(key) is not None}
        template = gguf_file.get("tokenizer.chat_template")
        return cls(
            vocab.backend,
            vocab_size=len(tokens),
            add_bos=vocab.add_bos,
            special_tokens=special,
            bos_id=ids.get("bos"),
            eos_id=ids.get("eos"),
            extra_eos_ids=[i for i in (ids.get("eot"), ids.get("eom")) if i is not None],
            chat_template=template if isinstance(template, str) and template else None,
            architecture=gguf_file.get("general.architecture"),
            byte_token_ids=vocab.byte_token_ids,
        )

    @classmethod
    def from_hf_folder(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Build from a Hugging Face folder: tokenizer.json, tokenizer_config.json and, where
        present, chat_template.jinja / generation_config.json / config.json."""
        info = read_hf_folder(path)
        backend = info.backend
        ids = {name: backend.token_to_id(text) for name, text in info.special_tokens.items()}
        bos_id = ids.get("bos_token", info.config_bos_id)
        add_bos = info.add_bos
        if add_bos is None:  # not in the config: whatever tokenizer.json's post-processor does
            probe = backend.encode("", add_special_tokens=True).ids
            add_bos = bos_id is not None and probe[:1] == [bos_id]
        vocab = backend.get_vocab(with_added_tokens=True)
        return cls(
            backend,
            vocab_size=max(vocab.values()) + 1 if vocab else 0,
            add_bos=add_bos,
            special_tokens=info.special_tokens,
            bos_id=bos_id,
            eos_id=ids.get("eos_token", info.extra_eos_ids[0] if info.extra_eos_ids else None),
            extra_eos_ids=info.extra_eos_ids,
            chat_template=info.chat_template,
            architecture=info.architecture,
            byte_token_ids=_byte_fallback_ids(backend),
        )

    def _stop_ids(self, eos_id: int | None, extra: Iterable[int]) -> frozenset[int]:
        stops = {i for i in (eos_id, *extra) if i is not None}
        template = self.chat_template or fallback_template(self)
        for text in (*_END_OF_TURN, _END_OF_TEXT):
            i = self.backend.token_to_id(text)
            if i is not None and i in self.special_ids and (text == _END_OF_TEXT or text in template):
                stops.add(i)
        return frozenset(stops)

    # -- text <-> ids -------------------------------------------------------------------------

    @property
    def bos_token(self) -> str | None:
        return self.special_tokens.get("bos_token")

    @property
    def eos_token(self) -> str | None:
        return self.special_tokens.get("eos_token")

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids for `text`; `add_bos=None` follows the model (tokenizer.ggml.add_bos_token)."""
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids.insert(0, self.bos_id)
        return ids

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Text for `ids`. Ids the vocabulary lacks decode to nothing (a model's embedding can be
        larger than its tokenizer's vocabulary, e.g. Qwen's padding rows)."""
        ids = ids if isinstance(ids, list) else list(ids)
        if ids and min(ids) < 0:
            raise ValueError(f"negative token id {min(ids)}")
        return self.backend.decode(ids, skip_special_tokens=skip_special)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(token_id)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, bos_id={self.bos_id}, eos_ids={sorted(self.eos_ids)}, "
            f"add_bos={self.add_bos}, chat_template={'yes' if self.chat_template else 'no'})"
        )


def _byte_fallback_ids(backend: Backend) -> frozenset[int]:
    model = backend.model
    if not getattr(model, "byte_fallback", False):
        return frozenset()
    ids = (backend.token_to_id(f"<0x{b:02X}>") for b in range(256))
    return frozenset(i for i in ids if i is not None)
