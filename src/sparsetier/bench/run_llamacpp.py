"""Runner: llama.cpp through llama-cpp-python, on the same GGUF file, with its default settings
(memory-mapped weights, 512-token batches) and our thread count for both prefill and decode."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .measure import Loaded


def load(path: str, threads: int, ctx_size: int, options: dict[str, Any]) -> Loaded:
    from llama_cpp import Llama

    options = {k: v for k, v in options.items() if k != "memory_limit"}  # the cgroup enforces it
    if options:
        raise ValueError(f"llama.cpp runner: unknown options {sorted(options)}")
    llm = Llama(
        model_path=path,
        n_ctx=ctx_size,
        n_threads=threads,
        n_threads_batch=threads,
        n_batch=512,
        n_ubatch=512,
        verbose=False,
    )

    def generate(ids: list[int], n: int) -> Iterator[int]:
        llm.reset()  # forget the warm-up: generate() would reuse its KV prefix
        # temp 0: llama.cpp's greedy sampler; generate() never stops at end-of-sequence itself.
        yield from llm.generate(ids, temp=0.0, repeat_penalty=1.0, reset=True)

    return Loaded(generate)  # bytes per token: the GGUF's own count
