"""Build a `tokenizers.Tokenizer` from the vocabulary a GGUF file stores in its metadata.

The pipelines mirror transformers' GGUF loader (our reference), with two deliberate
differences where the file says more than the reference reads:
  * SentencePiece vocabularies honour `tokenizer.ggml.add_space_prefix` (the reference always
    prepends a space; the two agree whenever the key is absent or true);
  * byte-level vocabularies keep a control or user-defined token whose text lies outside the
    byte alphabet (DeepSeek's `<｜begin▁of▁sentence｜>`) at its own id, where the reference
    respells it and appends a duplicate token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from tokenizers import AddedToken, decoders, normalizers, pre_tokenizers
from tokenizers import Tokenizer as Backend
from tokenizers.models import BPE

from ..errors import ModelFileError, UnsupportedModelError
from .merges import derive_merges
from .pretokenizers import byte_level_pre_tokenizer

# llama.cpp's token types (gguf.TokenType).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

_GEMMA_ARCHS = {"gemma", "gemma2", "gemma3", "gemma3n"}
_SPECIAL_KEYS = ("bos", "eos", "unknown", "padding")


@dataclass
class GGUFVocab:
    """A backend tokenizer plus what the file says about its special tokens."""

    backend: Backend
    tokens: list[str]
    token_types: list[int] | None
    special_ids: dict[str, int | None]  # "bos", "eos", "unknown", "padding", "eot", "eom"
    add_bos: bool
    byte_token_ids: frozenset[int]  # SentencePiece byte-fallback pieces <0x00>..<0xFF>


@lru_cache(maxsize=1)
def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table (bytes_to_unicode)."""
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _list(meta: Any, key: str, n: int | None = None) -> list | None:
    value = meta.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise ModelFileError(f"GGUF metadata {key} is not an array")
    if n is not None and len(value) != n:
        raise ModelFileError(f"GGUF metadata {key} has {len(value)} entries for {n} tokens")
    return value


def build_gguf_vocab(meta: Any) -> GGUFVocab:
    """`meta` is anything with `.get(key, default)` over GGUF metadata (a GGUFFile, a dict)."""
    model = meta.get("tokenizer.ggml.model")
    if model is None:
        raise ModelFileError("GGUF file has no tokenizer (metadata tokenizer.ggml.model is missing)")
    tokens = _list(meta, "tokenizer.ggml.tokens")
    if not tokens:
        raise ModelFileError("GGUF file has no vocabulary (tokenizer.ggml.tokens is missing or empty)")
    if not isinstance(tokens[0], str):
        raise ModelFileError("GGUF metadata tokenizer.ggml.tokens is not an array of strings")
    n = len(tokens)
    types = _list(meta, "tokenizer.ggml.token_type", n)
    arch = meta.get("general.architecture", "")

    special_ids: dict[str, int | None] = {}
    for key in (*_SPECIAL_KEYS, "eot", "eom"):
        value = meta.get(f"tokenizer.ggml.{key}_token_id")
        if value is not None and not (isinstance(value, int) and 0 <= value < n):
            raise ModelFileError(
                f"GGUF metadata tokenizer.ggml.{key}_token_id={value!r} is outside the {n}-token vocabulary"
            )
        special_ids[key] = value

    if model == "gpt2":
        backend, vocab = _byte_level(meta, tokens, types)
        byte_ids: frozenset[int] = frozenset()
        add_bos_default = False
    elif model in ("llama", "gemma4"):
        backend, vocab, byte_ids = _sentencepiece(meta, tokens, types, arch, model, special_ids)
        # Older files have no flag; llama.cpp adds BOS to SentencePiece vocabularies by default.
        add_bos_default = model == "llama"
    else:
        raise UnsupportedModelError(
            f"GGUF tokenizer model {model!r} is not supported (supported: 'gpt2' byte-level BPE, "
            "'llama'/'gemma4' SentencePiece BPE)"
        )
    _add_special_tokens(backend, tokens, types, special_ids, vocab)
    add_bos = meta.get("tokenizer.ggml.add_bos_token")
    if model == "gemma4":  # its template writes <bos> itself (as the reference does)
        add_bos = False
    return GGUFVocab(
        backend=backend,
        tokens=tokens,
        token_types=types,
        special_ids=special_ids,
        add_bos=bool(add_bos_default if add_bos is None else add_bos),
        byte_token_ids=byte_ids,
    )


def _byte_level(meta: Any, tokens: list[str], types: list[int] | None) -> tuple[Backend, dict[str, int]]:
    merges_raw = _list(meta, "tokenizer.ggml.merges")
    if not merges_raw:
        raise ModelFileError("GGUF byte-level BPE vocabulary has no merges (tokenizer.ggml.merges)")
    spell = _byte_alphabet()
    outside = re.compile("[^" + re.escape("".join(spell.values())) + "]")
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if outside.search("".join(tokens)):  # one scan; almost always nothing to do
        vocab = {}
        for i, tok in enumerate(tokens):
            # Normal tokens are stored in the byte alphabet; raw text (rare) gets respelled.
            # Added tokens keep their text: they are matched in the raw input, not by BPE.
            added = types is not None and types[i] in (CONTROL, USER_DEFINED)
            if not added and outside.search(tok):
                tok = "".join(spell[b] for b in tok.encode("utf-8"))
            vocab[tok] = i
    merges = [tuple(m.split(" ", 1)) for m in merges_raw]
    bpe = BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)
    backend = Backend(bpe)
    backend.pre_tokenizer = byte_level_pre_tokenizer(meta.get("tokenizer.ggml.pre"))
    backend.decoder = decoders.ByteLevel()
    return backend, vocab


def _sentencepiece(
    meta: Any, tokens: list[str], types: list[int] | None, arch: str, model: str, special_ids: dict
) -> tuple[Backend, dict[str, int], frozenset[int]]:
    n = len(tokens)
    gemma = model == "llama" and arch in _GEMMA_ARCHS
    if gemma:
        # Gemma stores runs of spaces as real spaces; the pipeline looks them up as "▁▁".
        tokens = ["▁" * len(t) if " " in t and not t.strip() else t for t in tokens]
    merges_raw = _list(meta, "tokenizer.ggml.merges")
    if merges_raw:
        merges = [tuple(m.split(" ", 1)) for m in merges_raw]
    else:
        if gemma:  # Gemma's scores do not follow its merge order; its token order does
            scores = -np.arange(n, dtype=np.float64)
        else:
            raw = _list(meta, "tokenizer.ggml.scores", n)
            if raw is None:
                raise ModelFileError("GGUF SentencePiece vocabulary has neither merges nor scores")
            scores = np.asarray(raw, dtype=np.float64)
        merges = derive_merges(tokens, scores)
    vocab = {t: i for i, t in enumerate(tokens)}
    unk = special_ids.get("unknown")
    bpe = BPE(
        vocab=vocab,
        merges=merges,
        unk_token=tokens[unk] if unk is not None else None,
        fuse_unk=True,
        byte_fallback=True,
    )
    backend = Backend(bpe)
    strip_decoder: list[decoders.Decoder] = []
    if gemma or model == "gemma4":
        # No prefix space; spaces become "▁" before BPE, which sees the text whole.
        backend.normalizer = normalizers.Replace(" ", "▁")
        backend.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    elif arch == "phi3":
        # Phi-3 adds its prefix space in the normalizer, so "  hi" keeps both spaces.
        backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        strip_decoder = [decoders.Strip(content=" ", left=1)]
    else:
        prefix = meta.get("tokenizer.ggml.add_space_prefix")
        prefix = True if prefix is None else bool(prefix)
        backend.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement="▁", prepend_scheme="first" if prefix else "never", split=False
        )
        if prefix:
            strip_decoder = [decoders.Strip(content=" ", left=1)]
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), *strip_decoder]
    )
    if types is not None:
        byte_ids = frozenset(i for i, t in enumerate(types) if t == BYTE)
    else:
        byte_ids = frozenset(i for i, t in enumerate(tokens) if len(t) == 6 and t.startswith("<0x"))
    return backend, vocab, byte_ids


def _add_special_tokens(
    backend: Backend, tokens: list[str], types: list[int] | None, special_ids: dict, vocab: dict[str, int]
) -> None:
    """Control tokens become special added tokens, user-defined ones plain added tokens, so that
    text like `<|im_start|>` or `<start_of_turn>` is matched whole instead of being cut up."""
    types = types or []
    control = [tokens[i] for i, t in enumerate(types) if t == CONTROL]
    # A user token respelled for the model (Gemma's runs of spaces, now "▁▁") is found by BPE
    # under its new name and is not added as text (as the reference).
    user = [tokens[i] for i, t in enumerate(types) if t == USER_DEFINED and tokens[i] in vocab]
    named = [special_ids[k] for k in _SPECIAL_KEYS if special_ids.get(k) is not None]
    known = set(control) | set(user)
    # bos/eos/unk/pad marked otherwise (e.g. <unk> as UNKNOWN) are still special tokens.
    extra = [tokens[i] for i in named if tokens[i] not in known]
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in control])
    if user:
        backend.add_tokens([AddedToken(t, normalized=False, special=False) for t in user])
    if extra:
        extra = list(dict.fromkeys(extra))
        backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in extra])
