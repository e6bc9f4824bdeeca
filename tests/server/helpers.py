"""Helpers for the server tests: a real uvicorn server in a thread, and /health, /metrics readers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from sparsetier.engine import Engine
from sparsetier.server.app import ServerConfig, create_app

MODEL = "smollm2-135m"


@contextmanager
def serve(engine: Engine, **config) -> Iterator[str]:
    """Run the app under uvicorn in a thread on 127.0.0.1; yield its base URL."""
    app = create_app(engine, ServerConfig(model_name=MODEL, **config))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def health(url: str) -> dict:
    return httpx.get(url + "/health", timeout=10).json()


def wait_idle(url: str, timeout: float = 20) -> dict:
    """Poll /health until no request holds a slot or waits; return the last reading."""
    deadline = time.monotonic() + timeout
    while True:
        h = health(url)
        if h["slots_busy"] == 0 and h["queue"] == 0 and h["in_flight"] == 0:
            return h
        assert time.monotonic() < deadline, f"server still busy: {h}"
        time.sleep(0.05)


def metric(url: str, name: str) -> float:
    """Sum of every sample of one metric in /metrics (labels ignored)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total
