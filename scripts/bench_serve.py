"""Load test for `sparsetier serve`: one streaming client, then N concurrent ones; aggregate tok/s.

Continuous batching shows as aggregate decode tok/s with N clients well above one client's.
Each request streams a fixed number of tokens (greedy, EOS ignored), so every run does the same
work. The two phases alternate for --rounds rounds and each figure is the median over rounds (so a
burst of background load hits both alike). Bounded: rounds x (1 + clients) x requests requests,
each with a timeout.

    python scripts/bench_serve.py                       # starts its own server on smollm2-135m
    python scripts/bench_serve.py --url http://127.0.0.1:8000 --model smollm2-135m
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import httpx

TOPICS = ["rivers", "volcanoes", "bread", "trains", "owls", "glass", "maps", "bells", "salt", "kites",
          "bridges", "tides", "paper", "clocks", "honey", "lighthouses"]


@dataclass
class Result:
    tokens: int = 0
    sent: float = 0.0  # perf_counter() when the request went out
    first: float = 0.0  # ... when its first text arrived
    last: float = 0.0  # ... when its last text arrived
    gaps: list[float] = field(default_factory=list)  # between consecutive streamed chunks


async def one_request(client: httpx.AsyncClient, model: str, prompt: str, max_tokens: int) -> Result:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    res = Result(sent=time.perf_counter())
    async with client.stream("POST", "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                res.tokens = chunk["usage"]["completion_tokens"]
            if chunk.get("choices") and chunk["choices"][0]["text"]:
                now = time.perf_counter()
                if res.first:
                    res.gaps.append(now - res.last)
                else:
                    res.first = now
                res.last = now
    return res


async def phase(url: str, model: str, clients: int, per_client: int, max_tokens: int, timeout: float,
                headers: dict[str, str]) -> tuple[float, list[Result]]:
    """`clients` concurrent clients, each sending `per_client` requests one after another."""
    async with httpx.AsyncClient(base_url=url, timeout=timeout, headers=headers) as client:
        async def worker(c: int) -> list[Result]:
            out = []
            for i in range(per_client):
                topic = TOPICS[(c * per_client + i) % len(TOPICS)]
                prompt = f"Client {c}, request {i}. Write a short paragraph about {topic}."
                out.append(await one_request(client, model, prompt, max_tokens))
            return out

        t0 = time.perf_counter()
        results = await asyncio.gather(*(worker(c) for c in range(clients)))
        return time.perf_counter() - t0, [r for rs in results for r in rs]


def decoding_time(results: list[Result]) -> float:
    """Wall time during which at least one request was decoding (from its first token to its last)."""
    total, end = 0.0, float("-inf")
    for r in sorted(results, key=lambda r: r.first):
        total += max(0.0, r.last - max(r.first, end))
        end = max(end, r.last)
    return total


def summarize(clients: int, wall: float, results: list[Result]) -> dict:
    tokens = sum(r.tokens for r in results)
    gaps = [g for r in results for g in r.gaps]
    return {
        "clients": clients, "requests": len(results), "tokens": tokens, "wall_s": wall,
        # decode: the tokens after each request's first, over the time something was decoding
        # (prefill chunks interleaved with decode steps count; the idle start of a phase does not)
        "decode_tok_s": sum(r.tokens - 1 for r in results) / decoding_time(results),
        "output_tok_s": tokens / wall,
        "per_stream_tok_s": statistics.mean((r.tokens - 1) / (r.last - r.first) for r in results
                                            if r.tokens > 1 and r.last > r.first),
        "ttft_s_mean": statistics.mean(r.first - r.sent for r in results),
        "itl_ms_p50": 1000 * statistics.median(gaps) if gaps else 0.0,
        "itl_ms_max": 1000 * max(gaps) if gaps else 0.0,
    }


def median_row(rows: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in rows) if isinstance(rows[0][k], float) else rows[0][k]
            for k in rows[0]}


def table(rows: list[dict]) -> str:
    base = rows[0]
    lines = ["| clients | requests | tokens | wall s | aggregate decode tok/s | vs 1 client | output tok/s "
             "| vs 1 client | per-stream tok/s | mean TTFT s | ITL p50 ms | ITL max ms |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['clients']} | {r['requests']} | {r['tokens']} | {r['wall_s']:.1f} "
                     f"| {r['decode_tok_s']:.1f} | {r['decode_tok_s'] / base['decode_tok_s']:.2f}x "
                     f"| {r['output_tok_s']:.1f} | {r['output_tok_s'] / base['output_tok_s']:.2f}x "
                     f"| {r['per_stream_tok_s']:.1f} | {r['ttft_s_mean']:.2f} | {r['itl_ms_p50']:.0f} "
                     f"| {r['itl_ms_max']:.0f} |")
    return "\n".join(lines)


def measure(url: str, args: argparse.Namespace, headers: dict[str, str]) -> dict[int, list[dict]]:
    """Alternate the one-client and the many-client phase; every round's summary by client count."""
    runs: dict[int, list[dict]] = {1: [], args.clients: []}
    for r in range(args.rounds):
        for clients, rows in runs.items():
            wall, results = asyncio.run(phase(url, args.model, clients, args.requests, args.max_tokens,
                                              args.timeout, headers))
            rows.append(summarize(clients, wall, results))
            row = rows[-1]
            print(f"round {r + 1}, {clients} client(s): decode {row['decode_tok_s']:.1f} tok/s, "
                  f"output {row['output_tok_s']:.1f} tok/s", file=sys.stderr)
    return runs


def start_server(args: argparse.Namespace, log: str) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "sparsetier.cli.main", "serve", args.model, "--port", "0",
           "--parallel", str(args.clients), "--ctx-size", str(args.ctx_size), "--log-level", "warning"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        found = re.search(r"on (http://\S+)/v1 ", open(log).read())
        if found:
            url = found.group(1)
            for _ in range(600):
                try:
                    if httpx.get(url + "/health", timeout=5).status_code == 200:
                        return proc, url
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"the server did not start:\n{open(log).read()[-2000:]}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=None, help="a running server (default: start one)")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--clients", type=int, default=8, help="clients in the second phase (default 8)")
    p.add_argument("--requests", type=int, default=2, help="requests per client (default 2)")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per request (default 64)")
    p.add_argument("--ctx-size", type=int, default=512, help="per-slot context of the started server")
    p.add_argument("--threads", type=int, default=None, help="--threads of the started server")
    p.add_argument("--rounds", type=int, default=3, help="alternate the phases this many times (default 3)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per request")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    headers = {"Authorization": f"Bearer {os.environ['SPARSETIER_API_KEY']}"} \
        if os.environ.get("SPARSETIER_API_KEY") else {}

    proc = None
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url
        if url is None:
            proc, url = start_server(args, os.path.join(tmp, "server.log"))
        try:
            runs = measure(url, args, headers)
            rows = [median_row(rs) for rs in runs.values()]
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"median": rows, "runs": runs}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
