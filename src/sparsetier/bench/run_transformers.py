"""Runner: Hugging Face transformers on the same GGUF (dequantized at load to float32 or bfloat16),
decoding greedily step by step with its own KV cache."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from .measure import Loaded


def load(path: str, threads: int, ctx_size: int, options: dict[str, Any]) -> Loaded:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.set_num_threads(threads)
    dtype = getattr(torch, options.get("dtype", "float32"))
    path = os.path.abspath(path)
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=dtype
    )
    model.eval()

    return Loaded(greedy_generator(model), float_bytes_per_token(model))


def greedy_generator(model: Any) -> Callable[[list[int], int], Iterator[int]]:
    """Greedy decoding with transformers' own KV cache, one step per token."""
    import torch

    def step(ids: list[int], past: Any) -> tuple[int, Any]:
        with torch.inference_mode():
            # logits_to_keep=1: only the last position's logits, as the other engines compute
            out = model(torch.tensor([ids]), past_key_values=past, use_cache=True, logits_to_keep=1)
        return int(out.logits[0, -1].argmax()), out.past_key_values

    def generate(ids: list[int], n: int) -> Iterator[int]:
        token, past = step(ids, None)
        for i in range(n):
            yield token
            if i + 1 < n:
                token, past = step([token], past)

    return generate


def float_bytes_per_token(model: Any) -> int:
    """Parameter bytes a decode step reads: all of them, except that the embedding table counts
    as one row unless it is tied to the output head (then the head reads all of it)."""
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    total = sum(p.numel() * p.element_size() for p in model.parameters())  # tied weights counted once
    tied = head is not None and head.weight.data_ptr() == embed.data_ptr()
    row = embed.shape[1] * embed.element_size()
    return total + row - (0 if tied else embed.numel() * embed.element_size())
