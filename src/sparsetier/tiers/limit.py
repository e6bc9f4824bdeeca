"""From a limit on the whole process (a memory cgroup, a small machine) to a weight budget.

The budget is what is left of the limit after what the process already holds (interpreter,
torch, tokenizer: its resident set now), the KV cache, the working buffers of a forward pass,
and a margin for the page cache the process keeps hot (shared libraries, model metadata) and for
allocator slack.
"""

from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass
from typing import Any

from ..errors import SparsetierError
from .budget import fmt_size
from .cgroup import own_usage_and_limit

# Allocator slack and the few pages of page cache the process keeps hot. Page cache is
# reclaimable (the cgroup evicts it before killing anyone), so this need not cover it all.
MARGIN_BYTES = 32 << 20
MARGIN_FRACTION = 0.01
_PREFILL_CHUNK_ELEMS = 4 << 20  # kernels: prefill dequantizes at most this many weights at a time


def trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc keeps them after a big temporary, such as the
    tokenizer's build), so they neither count nor mislead the resident-set reading."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def resident_bytes() -> int:
    """This process's resident set now (VmRSS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def kv_bytes(cfg: Any, ctx: int, n_slots: int) -> int:
    return 2 * cfg.n_layers * n_slots * cfg.n_kv_heads * ctx * cfg.head_dim * 4


def work_bytes(cfg: Any, ctx: int, chunk: int) -> int:
    """Peak activations of a forward pass over `chunk` tokens (float32), plus the prefill's
    dequantized weight chunk (float32 at most) and logits."""
    q = cfg.n_heads * cfg.head_dim
    per_token = 6 * cfg.dim + 3 * cfg.ffn_dim + q + 2 * cfg.n_kv_heads * cfg.head_dim
    attention = 2 * cfg.n_heads * chunk * ctx + chunk * ctx
    scratch = min(_PREFILL_CHUNK_ELEMS, max(cfg.ffn_dim, q) * cfg.dim)
    return 4 * (chunk * per_token + attention + scratch + 2 * cfg.vocab_size)


def held_bytes(limit: int) -> int:
    """What already counts against `limit`: the charge of our memory cgroup when we run inside
    one with that limit (the bench), else our resident set."""
    own = own_usage_and_limit()
    if own is not None and own[1] is not None and own[1] <= limit:
        return own[0]
    return resident_bytes()


@dataclass
class LimitBudget:
    """How a limit on the whole process splits: what is held already, the KV cache, working
    buffers, the margin, and what is left for weights (the budget)."""

    limit: int
    held: int
    kv: int
    work: int
    margin: int
    budget: int
    prefill_chunk: int


def budget_for_limit(limit: int, cfg: Any, ctx: int, n_slots: int, weight_bytes: int) -> LimitBudget:
    """The weight budget (and prefill chunk) that keep this process inside `limit` bytes; a clear
    error if nothing is left for weights. Prefill runs in chunks of 512 tokens when all the weights
    fit, else of 128 (smaller activations leave more of the limit to weights)."""
    trim_heap()
    held = held_bytes(limit)
    kv = kv_bytes(cfg, ctx, n_slots)
    margin = MARGIN_BYTES + int(MARGIN_FRACTION * limit)
    for chunk in (512, 128):
        work = work_bytes(cfg, ctx, chunk)
        budget = limit - held - kv - work - margin
        if budget >= weight_bytes:
            break
    if budget <= 0:
        raise SparsetierError(
            f"memory limit {fmt_size(limit)} leaves nothing for weights: the process holds "
            f"{fmt_size(held)}, the KV cache needs {fmt_size(kv)}, working buffers {fmt_size(work)}, "
            f"margin {fmt_size(margin)}"
        )
    return LimitBudget(limit, held, kv, work, margin, budget, chunk)
