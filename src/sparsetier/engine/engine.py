"""The engine: a loaded model, its tokenizer and KV cache, and token generation.

`generate` is a generator of token ids: it prefills the prompt in chunks (reusing whatever
prefix of it the slot's cache already holds, so a chat never recomputes earlier turns),
then decodes one token per step from the cache.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from ..errors import ContextLengthError, SparsetierError
from ..kvcache import KVCache
from ..models import Batch, Model, build_model
from ..progress import byte_bar
from ..tiers import TieredWeights, budget_for_limit
from ..tokenizer import Tokenizer
from ..weights.loader import ModelSource, open_model
from .sampling import Sampler, SamplingParams


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV was reused, not recomputed
    generated_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    finish_reason: str = ""  # "stop" (EOS or stop string), "length" (max tokens or context full)

    @property
    def prefill_tok_s(self) -> float:
        n = self.prompt_tokens - self.cached_tokens
        return n / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tok_s(self) -> float:
        # the first token comes from the prefill's logits; decode steps produce the rest
        n = self.generated_tokens - 1
        return n / self.decode_s if self.decode_s > 0 and n > 0 else 0.0


@dataclass
class Slot:
    tokens: list[int] = field(default_factory=list)  # what the slot's KV cache holds, in order


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _prefault(source: ModelSource, progress: bool) -> None:
    """Touch every page of the weights once (reading one byte per page), so loading is paid
    here, with a progress bar, rather than hidden in the first token's latency."""
    tensors = list(source.weights.values())
    with byte_bar(source.weight_bytes, "loading", progress) as bar:
        for t in tensors:
            flat = t.data.reshape(-1).view(torch.uint8) if t.data.dtype != torch.uint8 else t.data.reshape(-1)
            flat[::4096].sum()
            bar.update(t.nbytes)


class Engine:
    def __init__(
        self,
        source: ModelSource,
        tokenizer: Tokenizer,
        *,
        ctx_size: int | None = None,
        n_slots: int = 1,
        prefill_chunk: int = 512,
    ):
        self.source = source
        self.cfg = source.config
        self.tokenizer = tokenizer
        self.model: Model = build_model(self.cfg, source.weights)
        self.ctx_size = min(ctx_size or 4096, self.cfg.context_length)
        self.prefill_chunk = prefill_chunk
        self.cache = KVCache(
            self.cfg.n_layers, self.cfg.n_kv_heads, self.cfg.head_dim, self.ctx_size, n_slots
        )
        self.slots = [Slot() for _ in range(n_slots)]
        self.stats = GenerationStats()
        self.last_reused = 0
        self.tiers: TieredWeights | None = None  # set when loaded under a memory budget

    @classmethod
    def load(
        cls,
        model: str | None = None,
        *,
        threads: int | None = None,
        ctx_size: int | None = None,
        n_slots: int = 1,
        progress: bool = True,
        prefault: bool = True,
        memory_budget: int | str | None = None,
        memory_limit: int | None = None,
        predictors: str | None = None,
        neuron_cache: str = "lfu",
    ) -> Engine:
        """`memory_budget` (bytes, "1G", "25%" of the weights) caps the weight bytes held in memory:
        the rest streams from disk (tiers/). `memory_limit` caps the whole process instead: the
        budget is what the runtime, tokenizer, KV cache and working buffers leave of it. Under
        either, `predictors` (a PowerInfer-format folder) makes the FFNs read only their
        predicted-active neurons from disk, through a cold-neuron cache (`neuron_cache`: lfu, lru)."""
        if threads is not None and threads < 1:
            raise SparsetierError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads or default_threads())
        source = open_model(model)
        tokenizer = Tokenizer.from_gguf(source.gguf) if source.gguf else Tokenizer.from_hf_folder(source.path)
        tiers = None
        prefill_chunk = 512
        if memory_budget is not None or memory_limit is not None:
            split = None
            if memory_budget is None:
                ctx = min(ctx_size or 4096, source.config.context_length)
                split = budget_for_limit(memory_limit, source.config, ctx, n_slots, source.weight_bytes)
                memory_budget, prefill_chunk = split.budget, split.prefill_chunk
            preds = None
            if predictors is not None:
                from ..sparsity.predictor import load_powerinfer

                preds = load_powerinfer(predictors, source.config.n_layers)
            tiers = TieredWeights.load(
                source, memory_budget, progress=progress, predictors=preds, cache_policy=neuron_cache
            )
            tiers.limit = split
        elif prefault:
            _prefault(source, progress)
        engine = cls(source, tokenizer, ctx_size=ctx_size, n_slots=n_slots, prefill_chunk=prefill_chunk)
        if tiers is not None:
            tiers.install(engine.model)
            engine.tiers = tiers
            if tiers.stream is not None and torch.get_num_threads() > 1:
                # the stream's reader threads need a core too: with every core computing, their
                # wake-ups stall the kernels' thread barriers (7-10x slower decode, docs/tiers.md)
                torch.set_num_threads(torch.get_num_threads() - 1)
        return engine

    def forward_tokens(self, tokens: list[int], slot: int, start: int) -> torch.Tensor:
        """Run tokens at positions start.. of one slot; return the last position's logits [vocab].
        The caller keeps `self.slots[slot].tokens` in step (prefill and generate do)."""
        ids = torch.tensor([tokens], dtype=torch.long)
        return self.model.forward(ids, self.cache, Batch([slot], [start]))[0]

    @torch.inference_mode()
    def prefill(self, prompt: list[int], slot: int = 0) -> torch.Tensor:
        """Run the prompt into the slot's cache in chunks; return the last position's logits.

        Whatever prefix of the prompt the slot already holds is reused, not recomputed
        (the last prompt token is always recomputed, for its logits)."""
        state = self.slots[slot]
        reuse = 0
        limit = min(len(state.tokens), len(prompt) - 1)
        while reuse < limit and state.tokens[reuse] == prompt[reuse]:
            reuse += 1
        state.tokens = prompt[:reuse]
        self.last_reused = reuse
        logits = None
        for start in range(reuse, len(prompt), self.prefill_chunk):
            chunk = prompt[start : start + self.prefill_chunk]
            logits = self.forward_tokens(chunk, slot, start)
            state.tokens.extend(chunk)
        return logits

    @torch.inference_mode()
    def generate(
        self,
        prompt: list[int],
        params: SamplingParams | None = None,
        max_tokens: int = 128,
        stop_ids: set[int] | None = None,
        slot: int = 0,
    ) -> Iterator[int]:
        """Yield generated token ids. `stop_ids` (default: the tokenizer's EOS set) end the
        generation; the stop token itself is not yielded. Stats land in `self.stats`."""
        if not prompt:
            raise SparsetierError("the prompt is empty (no tokens)")
        if len(prompt) >= self.ctx_size:
            raise ContextLengthError(
                f"the prompt has {len(prompt)} tokens but the context size is {self.ctx_size} "
                "(raise --ctx-size or shorten the prompt)"
            )
        sampler = Sampler(params or SamplingParams())
        stop_ids = self.tokenizer.eos_ids if stop_ids is None else stop_ids
        state = self.slots[slot]
        stats = self.stats = GenerationStats(prompt_tokens=len(prompt))
        t0 = time.perf_counter()
        logits = self.prefill(prompt, slot)
        stats.prefill_s = time.perf_counter() - t0
        stats.cached_tokens = self.last_reused

        history = list(prompt)
        t1 = time.perf_counter()
        while True:
            token = sampler(logits, history)
            if token in stop_ids:
                stats.finish_reason = "stop"
                break
            stats.generated_tokens += 1
            history.append(token)
            yield token
            if stats.generated_tokens >= max_tokens or len(state.tokens) + 1 >= self.ctx_size:
                stats.finish_reason = "length"
                break
            logits = self.forward_tokens([token], slot, len(state.tokens))
            state.tokens.append(token)
            stats.decode_s = time.perf_counter() - t1
        stats.decode_s = time.perf_counter() - t1
