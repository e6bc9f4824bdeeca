"""Small synthetic GGUF files (metadata only, no tensors) for tokenizer tests: a
SentencePiece-style vocabulary and a byte-level BPE vocabulary trained on the spot."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import gguf

from .cases import MIXED_TEXT

# SentencePiece-style: specials, 256 byte pieces, a user-defined and a control token, pieces.
SPM_PIECES = [
    "▁",
    "e",
    "t",
    "a",
    "o",
    "i",
    "n",
    "s",
    "h",
    "r",
    "l",
    "d",
    "c",
    "u",
    "m",
    "w",
    "f",
    "g",
    "y",
    "p",
    "b",
    ",",
    ".",
    "1",
    "2",
    "3",
    "▁t",
    "he",
    "▁the",
    "in",
    "er",
    "▁a",
    "on",
    "▁w",
    "re",
    "at",
    "en",
    "▁s",
    "is",
    "it",
    "▁h",
    "ing",
    "▁th",
    "▁o",
    "or",
    "nd",
    "▁and",
    "▁is",
    "▁it",
    "▁wor",
    "ld",
    "▁world",
    "ll",
    "el",
    "hel",
    "▁he",
    "▁▁",
    "▁▁▁▁",
    "é",
    "日",
    "本",
    "日本",
    "12",
    "123",
    "▁hel",
    "lo",
    "▁hello",
]


def spm_metadata(gemma_specials: bool = False, **overrides: Any) -> dict[str, Any]:
    """Llama 2's specials (<unk> <s> </s>) or Gemma's (<pad> <eos> <bos> <unk> <mask>)."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] if gemma_specials else ["<unk>", "<s>", "</s>"]
    ids = {"pad": 0, "eos": 1, "bos": 2, "unk": 3} if gemma_specials else {"unk": 0, "bos": 1, "eos": 2}
    tokens = [*specials, *(f"<0x{b:02X}>" for b in range(256)), "<|user|>", "<|end|>", *SPM_PIECES]
    types = [2 if i == ids["unk"] else 3 for i in range(len(specials))]
    types += [6] * 256 + [4, 3] + [1] * len(SPM_PIECES)
    scores = [0.0] * (len(specials) + 258) + [-float(i) for i in range(len(SPM_PIECES))]
    meta = {
        "general.architecture": "llama",
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.bos_token_id": ids["bos"],
        "tokenizer.ggml.eos_token_id": ids["eos"],
        "tokenizer.ggml.unknown_token_id": ids["unk"],
        "tokenizer.ggml.padding_token_id": ids.get("pad"),
    }
    meta.update(overrides)
    return {k: v for k, v in meta.items() if v is not None}


@lru_cache(maxsize=1)
def _trained_bpe() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A ~600-token byte-level BPE trained on the test text and some prose."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    corpus = [MIXED_TEXT] * 5 + [topics[k] for k in sorted(topics)[:40]]
    tok.train_from_iterator(corpus, trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tuple(t for t, _ in vocab), tuple(merges)


def bpe_metadata(pre: str = "gpt2", **overrides: Any) -> dict[str, Any]:
    vocab, merges = _trained_bpe()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>"]
    tokens = [*vocab, *specials]
    types = [1] * len(vocab) + [3, 3, 3, 4]
    meta = {
        "general.architecture": "llama",
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": list(merges),
        "tokenizer.ggml.bos_token_id": len(vocab),
        "tokenizer.ggml.eos_token_id": len(vocab) + 2,
    }
    meta.update(overrides)
    return {k: v for k, v in meta.items() if v is not None}


def write_gguf(path: str, meta: dict[str, Any]) -> str:
    """Write `meta` (plus the model hyperparameters transformers wants) to a tensor-less GGUF."""
    arch = meta.get("general.architecture", "llama")
    writer = gguf.GGUFWriter(path, arch)
    hyper = {
        f"{arch}.context_length": 128,
        f"{arch}.embedding_length": 16,
        f"{arch}.block_count": 1,
        f"{arch}.feed_forward_length": 32,
        f"{arch}.attention.head_count": 2,
        f"{arch}.attention.head_count_kv": 2,
        f"{arch}.attention.layer_norm_rms_epsilon": 1e-5,
        f"{arch}.rope.dimension_count": 8,
    }
    for key, value in {**hyper, **meta}.items():
        if key == "general.architecture":
            continue
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, list):
            writer.add_array(key, value)
        else:
            raise TypeError(key)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def reference_for(path: str):
    """transformers' tokenizer for a synthetic GGUF."""
    import os

    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
