"""The decode roofline: weight bytes a decode step must read, and how fast this machine reads memory.

A decode step reads every weight once (all layers plus the output head) and one row of the
embedding table; when the head is tied to the embedding it reads the whole table as the head.
An engine's roofline fraction is decode tok/s x bytes per token / read bandwidth.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

EMBED = "token_embd.weight"
HEAD = "output.weight"


def decode_bytes_per_token(nbytes: Mapping[str, int], embed_rows: int) -> int:
    """Bytes of weights one decode step reads, from {tensor name: bytes} in GGUF naming."""
    embed = nbytes.get(EMBED, 0)
    rest = sum(v for k, v in nbytes.items() if k != EMBED)
    head = embed if HEAD not in nbytes else 0  # tied: the head is the whole table
    return rest + head + (embed // embed_rows if embed_rows else 0)


def gguf_bytes_per_token(path: str) -> int:
    """Decode bytes per token of a GGUF file, as stored (what we and llama.cpp read)."""
    from ..weights.gguf import GGUFFile

    tensors = GGUFFile(path).tensors
    rows = tensors[EMBED].shape[0] if EMBED in tensors else 0
    return decode_bytes_per_token({k: t.nbytes for k, t in tensors.items()}, rows)


def _torch_read_bandwidth(threads: int, nbytes: int = 512 << 20, reps: int = 10) -> float:
    """Fallback probe: best of `reps` full reads of a buffer far larger than the caches (a max
    reduction: one vector compare per load, so the loop waits on memory, not arithmetic)."""
    import torch

    torch.set_num_threads(threads)
    x = torch.ones(nbytes // 4, dtype=torch.float32)
    best = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        x.amax()
        best = max(best, nbytes / (time.perf_counter() - t0))
    return best


def measure_bandwidth(threads: int) -> tuple[float, str]:
    """(bytes/s, how it was measured): the kernels' own probe when this build has it,
    else a PyTorch streaming read."""
    try:
        from ..kernels import measure_read_bandwidth  # wide loads, each thread its own part; GB/s
    except ImportError:
        return _torch_read_bandwidth(threads), "torch"
    import torch

    torch.set_num_threads(threads)  # the probe uses torch's thread count
    return measure_read_bandwidth() * 1e9, "sparsetier.kernels"
