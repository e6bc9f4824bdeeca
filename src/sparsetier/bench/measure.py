"""What every runner hands the worker, and how the worker times it: one definition for all engines.

Times are wall clock around the token stream, the same for every engine: TTFT is from asking
for the first token until it is in hand (the whole prefill plus one sampling step), decode is
from the first token to the last.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class Loaded:
    """An engine with a model loaded. `generate(ids, n)` starts from an empty KV cache each call
    and yields n greedy token ids, ignoring end-of-sequence."""

    generate: Callable[[list[int], int], Iterator[int]]
    weight_bytes_per_token: int | None = None  # None: the model file's count (roofline.gguf_bytes_per_token)
    info: Callable[[], dict[str, Any]] | None = None  # engine-specific figures, read after the timed run


@dataclass
class Timing:
    ttft_s: float
    decode_s: float
    tokens: list[int]


def time_generation(stream: Iterator[int], n: int) -> Timing:
    tokens: list[int] = []
    t0 = time.perf_counter()
    first = t0
    for token in stream:  # the generator does nothing until the first next(): t0 is before the prefill
        if not tokens:
            first = time.perf_counter()
        tokens.append(int(token))
        if len(tokens) >= n:
            break
    end = time.perf_counter()
    return Timing(ttft_s=first - t0, decode_s=end - first, tokens=tokens)


def peak_rss_bytes() -> int:
    """This process's peak resident memory. VmHWM belongs to the process's own address space;
    ru_maxrss would also count the parent's memory inherited across fork/exec."""
    if sys.platform.startswith("linux"):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def disk_read_bytes() -> int | None:
    """Bytes this process has made the kernel fetch from storage (page-cache misses, mmap faults
    included); None where /proc/self/io is unavailable."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("read_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None
