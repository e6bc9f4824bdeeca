"""The measuring process: `python -m sparsetier.bench.worker JOB.json RESULT.json`.

One fresh process per measurement, so its peak resident memory is that engine's alone. It
imports only the engine's own runtime. Modes: `generate` (load a model, warm up, time one
greedy generation), `import` (the memory cost of importing a runtime), `bandwidth`.
Any failure becomes {"error": "..."} in RESULT.json; the traceback goes to stderr.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from typing import Any

from ..errors import SparsetierError
from .measure import disk_read_bytes, peak_rss_bytes, time_generation

WARMUP_TOKENS = 2


def run_generate(job: dict[str, Any]) -> dict[str, Any]:
    runner = importlib.import_module(job["runner"])
    prompt: list[int] = job["prompt"]
    n: int = job["gen_tokens"]
    t0 = time.perf_counter()
    loaded = runner.load(job["path"], job["threads"], len(prompt) + n + 16, job["options"])
    load_s = time.perf_counter() - t0
    if job["warmup"]:
        # One untimed pass over the same shapes: page faults, thread pools, kernel JIT/caches.
        time_generation(loaded.generate(prompt, WARMUP_TOKENS), WARMUP_TOKENS)
    disk0 = disk_read_bytes()
    timing = time_generation(loaded.generate(prompt, n), n)
    disk1 = disk_read_bytes()
    if len(timing.tokens) != n:
        raise RuntimeError(f"the engine stopped after {len(timing.tokens)} of {n} tokens")
    return {
        "load_s": load_s,
        "prefill_tok_s": len(prompt) / timing.ttft_s,
        "decode_tok_s": (n - 1) / timing.decode_s if n > 1 and timing.decode_s > 0 else None,
        "ttft_s": timing.ttft_s,
        "peak_rss_bytes": peak_rss_bytes(),
        "weight_bytes_per_token": loaded.weight_bytes_per_token,
        # storage reads during the timed run (prefill included), per generated token: 0 when the
        # weights stay in memory; what a memory budget or limit turns into disk traffic
        "disk_read_bytes_per_token": (disk1 - disk0) / n if disk0 is not None and disk1 is not None else None,
        "tokens": timing.tokens,
        **(loaded.info() if loaded.info else {}),
    }


def run_import(job: dict[str, Any]) -> dict[str, Any]:
    before = peak_rss_bytes()
    importlib.import_module(job["module"])
    return {"import_rss_bytes": peak_rss_bytes() - before, "python_rss_bytes": before}


def run_bandwidth(job: dict[str, Any]) -> dict[str, Any]:
    from .roofline import measure_bandwidth

    value, method = measure_bandwidth(job["threads"])
    return {"bandwidth_bytes_s": value, "method": method}


def run_prepare(job: dict[str, Any]) -> dict[str, Any]:
    runner = importlib.import_module(job["runner"])
    return {"options": runner.prepare(job["path"], job["options"])}


def run_disk(job: dict[str, Any]) -> dict[str, Any]:
    from ..tiers.storage import probe_read_bandwidth

    return {"disk_bytes_s": probe_read_bandwidth(job["path"])}


MODES = {
    "generate": run_generate,
    "import": run_import,
    "bandwidth": run_bandwidth,
    "disk": run_disk,
    "prepare": run_prepare,
}


def main(argv: list[str]) -> int:
    with open(argv[0]) as f:
        job = json.load(f)
    try:
        result = MODES[job["mode"]](job)
    except Exception as e:  # the parent reports it as this engine's result; keep the details
        traceback.print_exc()
        msg = str(e) if isinstance(e, SparsetierError) else f"{type(e).__name__}: {e}"
        result = {"error": (msg.splitlines() or [type(e).__name__])[0][:300]}
    with open(argv[1], "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
