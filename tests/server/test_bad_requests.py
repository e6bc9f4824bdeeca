"""Bad input never hurts the server: every case is a 4xx with an OpenAI-shaped error body,
a full queue answers 429, and a client that goes away frees its slot at once."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.server.helpers import MODEL, health, metric, serve, wait_idle

CTX = 256


@pytest.fixture(scope="module")
def url(make_engine):
    # one slot and one queue place: the third concurrent request is refused
    with serve(make_engine(n_slots=1, ctx_size=CTX), max_queue=1, max_body_bytes=64 * 1024) as u:
        yield u


def post(url: str, path: str, body: object = None, *, raw: bytes | None = None, **kw) -> httpx.Response:
    content = raw if raw is not None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    return httpx.post(url + path, content=content, headers=headers, timeout=60, **kw)


def assert_error(r: httpx.Response, status: int, param: str | None = "-", code: str | None = "-") -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param != "-":
        assert err["param"] == param, err
    if code != "-":
        assert err["code"] == code, err
    return err


GOOD = {"model": MODEL, "prompt": "Hi", "max_tokens": 1}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}

# (path, body, status, param) -- bodies that must be refused before any generation
BAD = [
    ("/v1/completions", [1, 2], 400, None),
    ("/v1/completions", "text", 400, None),
    ("/v1/completions", {"prompt": "Hi"}, 400, "model"),
    ("/v1/completions", {"model": MODEL}, 400, "prompt"),
    ("/v1/chat/completions", {"model": MODEL}, 400, "messages"),
    ("/v1/chat/completions", {**CHAT, "messages": []}, 400, "messages"),
    ("/v1/chat/completions", {**CHAT, "messages": "Hi"}, 400, "messages"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "x", "content": "Hi"}]}, 400, "messages.0.role"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"content": "Hi"}]}, 400, "messages.0.role"),
    (
        "/v1/chat/completions",
        {
            **CHAT,
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}
            ],
        },
        400,
        "messages.0.content",
    ),
    ("/v1/completions", {**GOOD, "max_tokens": "5"}, 400, "max_tokens"),
    ("/v1/completions", {**GOOD, "max_tokens": 1.5}, 400, "max_tokens"),
    ("/v1/completions", {**GOOD, "max_tokens": True}, 400, "max_tokens"),
    ("/v1/completions", {**GOOD, "temperature": "hot"}, 400, "temperature"),
    ("/v1/completions", {**GOOD, "stream": "yes"}, 400, "stream"),
    ("/v1/completions", {**GOOD, "prompt": 5}, 400, "prompt"),
    ("/v1/completions", {**GOOD, "prompt": ["a", "b"]}, 400, "prompt"),
    ("/v1/completions", {**GOOD, "stop": 3}, 400, "stop"),
    ("/v1/completions", {**GOOD, "seed": 2**70}, 400, "seed"),
    ("/v1/completions", {**GOOD, "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/completions", {**GOOD, "max_tokens": -3}, 400, "max_tokens"),
    ("/v1/completions", {**GOOD, "max_tokens": CTX}, 400, "max_tokens"),
    ("/v1/chat/completions", {**CHAT, "max_tokens": 10**6}, 400, "max_tokens"),
    ("/v1/chat/completions", {**CHAT, "max_completion_tokens": 0}, 400, "max_completion_tokens"),
    ("/v1/completions", {**GOOD, "prompt": "word " * (2 * CTX)}, 400, "prompt"),
    ("/v1/completions", {**GOOD, "prompt": []}, 400, "prompt"),
    ("/v1/completions", {**GOOD, "prompt": [1, 10**9]}, 400, "prompt"),
    ("/v1/completions", {**GOOD, "temperature": -1}, 400, "temperature"),
    ("/v1/completions", {**GOOD, "temperature": 3}, 400, "temperature"),
    ("/v1/completions", {**GOOD, "top_p": 0}, 400, "top_p"),
    ("/v1/completions", {**GOOD, "top_k": -1}, 400, "top_k"),
    ("/v1/completions", {**GOOD, "min_p": 1}, 400, "min_p"),
    ("/v1/completions", {**GOOD, "repeat_penalty": 0}, 400, "repeat_penalty"),
    ("/v1/completions", {**GOOD, "n": 2}, 400, "n"),
    ("/v1/completions", {**GOOD, "logprobs": 3}, 400, "logprobs"),
    ("/v1/completions", {**GOOD, "echo": True}, 400, "echo"),
    ("/v1/completions", {**GOOD, "best_of": 3}, 400, "best_of"),
    ("/v1/completions", {**GOOD, "presence_penalty": 0.5}, 400, "presence_penalty"),
    ("/v1/completions", {**GOOD, "logit_bias": {"42": 5}}, 400, "logit_bias"),
    ("/v1/completions", {**GOOD, "frobnicate": 1}, 400, "frobnicate"),
    ("/v1/chat/completions", {**CHAT, "logprobs": True}, 400, "logprobs"),
    ("/v1/chat/completions", {**CHAT, "tools": [{"type": "function", "function": {}}]}, 400, "tools"),
    ("/v1/chat/completions", {**CHAT, "tool_choice": "required"}, 400, "tool_choice"),
    ("/v1/chat/completions", {**CHAT, "response_format": {"type": "json"}}, 400, "response_format.type"),
    ("/v1/completions", {**GOOD, "model": "gpt-4"}, 404, "model"),
    ("/v1/chat/completions", {**CHAT, "model": ""}, 404, "model"),
]


@pytest.mark.parametrize("path,body,status,param", BAD, ids=[f"{i}" for i in range(len(BAD))])
def test_bad_body_is_refused(url, path, body, status, param):
    assert_error(post(url, path, body), status, param)


MALFORMED = [
    b"{bad json",
    b"",
    b"\xff\xfe\x00garbage",
    b"[" * 30_000 + b"]" * 30_000,
    b'{"model": "%s", "prompt": "Hi", "temperature": NaN}' % MODEL.encode(),
    b'{"model": "%s", "prompt": "Hi", "max_tokens": 1%s}' % (MODEL.encode(), b"0" * 5000),
]


@pytest.mark.parametrize("raw", MALFORMED, ids=["syntax", "empty", "not-utf8", "deep", "nan", "huge-int"])
def test_malformed_json_is_refused(url, raw):
    assert_error(post(url, "/v1/completions", raw=raw), 400)


def test_body_over_the_limit_is_413(url):
    big = {**GOOD, "prompt": "x" * 100_000}
    assert_error(post(url, "/v1/completions", big), 413, code="request_too_large")

    def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(100):
            yield b" " * 4096

    r = httpx.post(url + "/v1/completions", content=chunks(), timeout=60)
    assert_error(r, 413, code="request_too_large")


def test_unknown_route_and_method_keep_the_error_shape(url):
    assert_error(httpx.get(url + "/v1/nothing-here", timeout=10), 404)
    assert_error(httpx.get(url + "/v1/completions", timeout=10), 405)
    assert_error(httpx.get(url + "/v1/models/gpt-4", timeout=10), 404, code="model_not_found")


def test_server_is_healthy_after_bad_input(url):
    assert health(url)["status"] == "ok"
    r = post(url, "/v1/completions", GOOD)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 1
    assert metric(url, "sparsetier_requests_total") > len(BAD)


class Stream:
    """A streaming request held open in a thread until `close()` (the client going away)."""

    def __init__(self, url: str, body: dict):
        self.first = threading.Event()
        self.status = 0
        self.chunks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, body), daemon=True)
        self._thread.start()

    def _run(self, url: str, body: dict) -> None:
        with httpx.Client(timeout=60) as c, c.stream("POST", url + "/v1/completions", json=body) as r:
            self.status = r.status_code
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    self.chunks += 1
                    self.first.set()
                if self._stop.is_set():
                    break  # leaving the block closes the connection mid-stream
        self.first.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)


LONG = {
    "model": MODEL,
    "prompt": "Count: one, two, three,",
    "max_tokens": 200,
    "ignore_eos": True,
    "stream": True,
    "temperature": 0,
}


def test_disconnect_mid_stream_frees_the_slot(url):
    cancelled = metric(url, "sparsetier_requests_cancelled_total")
    s = Stream(url, LONG)
    assert s.first.wait(60) and s.status == 200
    h = health(url)
    assert h["slots_busy"] == 1 and metric(url, "sparsetier_kv_cache_used_tokens") > 0
    s.close()
    assert s.chunks < 200
    wait_idle(url, timeout=10)
    assert metric(url, "sparsetier_requests_cancelled_total") == cancelled + 1
    assert metric(url, "sparsetier_kv_cache_used_tokens") == 0


def test_disconnect_while_waiting_for_a_plain_reply_frees_the_slot(url):
    cancelled = metric(url, "sparsetier_requests_cancelled_total")
    body = {**LONG, "stream": False}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/completions", json=body, timeout=httpx.Timeout(60, read=1.0))
    wait_idle(url, timeout=10)
    assert metric(url, "sparsetier_requests_cancelled_total") == cancelled + 1


def test_full_queue_answers_429_and_recovers(url):
    running, waiting = Stream(url, LONG), None
    try:
        assert running.first.wait(60)
        waiting = Stream(url, LONG)  # holds the one queue place
        deadline = time.monotonic() + 10
        while health(url)["in_flight"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = post(url, "/v1/completions", GOOD)
        err = assert_error(r, 429, code="queue_full")
        assert r.headers["retry-after"] == "1" and "busy" in err["message"]
        assert health(url)["queue"] == 1
    finally:
        running.close()
        if waiting is not None:
            waiting.close()
    wait_idle(url, timeout=10)
    assert post(url, "/v1/completions", GOOD).status_code == 200


def test_a_failing_step_fails_only_its_requests(make_engine):
    """An exception inside the engine (a bug, out of memory) answers 500 to the requests of that
    step, in the OpenAI shape, and the server goes on serving."""
    engine = make_engine(n_slots=1, ctx_size=CTX)
    real = engine.forward_tokens
    poison = 13

    def forward_tokens(tokens, slot, start):
        if poison in tokens:
            raise RuntimeError("injected failure")
        return real(tokens, slot, start)

    engine.forward_tokens = forward_tokens
    with serve(engine) as u:
        bad = post(u, "/v1/completions", {**GOOD, "prompt": [1, poison, 2]})
        assert_error(bad, 500)
        assert bad.json()["error"]["type"] == "server_error"
        with httpx.stream(
            "POST", u + "/v1/completions", json={**GOOD, "prompt": [poison], "stream": True}, timeout=60
        ) as r:
            lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
        assert json.loads(lines[0][6:])["error"]["type"] == "server_error" and lines[-1] == "data: [DONE]"
        ok = post(u, "/v1/completions", GOOD)
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 1
        assert health(u)["status"] == "ok"
