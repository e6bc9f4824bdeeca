"""A bounded soak: a fixed mix of good requests, bad requests and clients that hang up mid-stream,
four at a time. The server must end healthy and idle, answer every good request exactly as it
did alone, and hold its memory flat."""

from __future__ import annotations

import gc
import json
import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from sparsetier import kernels
from tests.server.helpers import MODEL, health, metric, serve, wait_idle

# ~30 s with the C++ kernels; many minutes with the PyTorch reference ones
pytestmark = [] if kernels.has_extension() else [pytest.mark.slow]

PROMPTS = [
    "The capital of France is",
    "Water boils at",
    "The first three prime numbers are",
    "def add(a, b):",
]
BAD = [
    b"{oops",
    json.dumps({"model": MODEL}).encode(),
    json.dumps({"model": "nope", "prompt": "x"}).encode(),
    json.dumps({"model": MODEL, "prompt": "x", "max_tokens": 0}).encode(),
    json.dumps({"model": MODEL, "prompt": "x", "n": 3}).encode(),
    json.dumps({"model": MODEL, "prompt": "x " * 400}).encode(),
]
ROUNDS = 3  # memory after the last round is compared with after the first (the warm-up)
PER_ROUND = 40


@pytest.fixture(scope="module")
def url(make_engine):
    with serve(make_engine(n_slots=2), max_queue=4, max_body_bytes=64 * 1024) as u:
        yield u


def good(client: httpx.Client, i: int, stream: bool) -> str:
    body = {"model": MODEL, "prompt": PROMPTS[i], "max_tokens": 4, "temperature": 0, "stream": stream}
    if not stream:
        r = client.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["text"]
    text, done = "", False
    with client.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                text += json.loads(line[6:])["choices"][0]["text"]
            done = done or line == "data: [DONE]"
    assert done
    return text


def hang_up(client: httpx.Client, i: int) -> None:
    body = {"model": MODEL, "prompt": PROMPTS[i], "max_tokens": 200, "ignore_eos": True, "stream": True}
    with client.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                break  # leave with the stream still running


def test_soak(url):
    rng = random.Random(0)
    client = httpx.Client(base_url=url, timeout=60)
    expected = [good(client, i, stream=False) for i in range(len(PROMPTS))]
    ops = [
        (rng.choice(["good", "good", "bad", "hang_up"]), rng.randrange(len(PROMPTS)), rng.random() < 0.5)
        for _ in range(ROUNDS * PER_ROUND)
    ]
    cancelled = metric(url, "sparsetier_requests_cancelled_total")

    def run(op: tuple[str, int, bool]) -> None:
        kind, i, stream = op
        with httpx.Client(base_url=url, timeout=60) as c:
            if kind == "good":
                assert good(c, i, stream) == expected[i]
            elif kind == "bad":
                r = c.post("/v1/completions", content=BAD[i % len(BAD) if stream else -1 - i % 2])
                assert 400 <= r.status_code < 500, r.text
                assert set(r.json()["error"]) == {"message", "type", "param", "code"}
            else:
                hang_up(c, i)

    rss = []
    with ThreadPoolExecutor(4) as pool:
        for r in range(ROUNDS):
            list(pool.map(run, ops[r * PER_ROUND : (r + 1) * PER_ROUND]))  # re-raises any failed check
            wait_idle(url)
            gc.collect()
            rss.append(psutil.Process().memory_info().rss)

    h = health(url)
    assert h["status"] == "ok" and h["slots_busy"] == h["queue"] == h["in_flight"] == 0
    assert metric(url, "sparsetier_kv_cache_used_tokens") == 0
    hung_up = sum(kind == "hang_up" for kind, _, _ in ops)
    assert metric(url, "sparsetier_requests_cancelled_total") - cancelled == hung_up
    growth = (rss[-1] - rss[0]) / 2**20
    assert growth < 16, f"resident memory grew {growth:.1f} MiB over {(ROUNDS - 1) * PER_ROUND} requests"
    assert [good(client, i, stream=True) for i in range(len(PROMPTS))] == expected
