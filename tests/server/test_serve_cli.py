"""`sparsetier serve` as users run it: a subprocess on loopback, its API key from the
environment, a clean exit on Ctrl-C, and bad flags as one-line errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.helpers import real_model_path
from tests.server.helpers import MODEL


def serve_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sparsetier.cli.main", "serve", *args]


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--port", "70000"], "--port"),
        (["--parallel", "0"], "--parallel"),
        (["--port", "BUSY"], "cannot listen"),
    ],
)
def test_bad_flags_are_one_line_errors(args, needle, busy_port):
    args = [str(busy_port) if a == "BUSY" else a for a in args]
    proc = subprocess.run(serve_cmd(MODEL, *args), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("sparsetier: error: ") and needle in lines[0], proc.stderr


def test_serve_binds_loopback_checks_the_key_and_exits_cleanly(tmp_path):
    real_model_path(MODEL)  # pulled before the clock starts
    log = tmp_path / "serve.log"
    env = {**os.environ, "SPARSETIER_API_KEY": "k3y"}
    cmd = serve_cmd(
        MODEL,
        "--port",
        "0",
        "--parallel",
        "1",
        "--ctx-size",
        "128",
        "--threads",
        "1",
        "--log-level",
        "warning",
    )
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        deadline = time.monotonic() + 120
        url = None
        while url is None:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            for line in log.read_text().splitlines():
                if " on http://" in line:
                    url = line.split(" on ", 1)[1].split()[0]  # http://127.0.0.1:PORT/v1
            time.sleep(0.1)
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url + "/models", timeout=30).status_code == 401
        auth = {"Authorization": "Bearer k3y"}
        assert httpx.get(url + "/models", headers=auth, timeout=30).json()["data"][0]["id"] == MODEL
        r = httpx.post(
            url + "/completions",
            headers=auth,
            timeout=120,
            json={"model": MODEL, "prompt": "Hello", "max_tokens": 2, "temperature": 0},
        )
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log.read_text()
    assert "Traceback" not in log.read_text()
