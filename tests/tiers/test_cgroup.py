"""The memory cgroup runner: a child inside the limit runs, one over it is killed and that is
reported; nothing is left behind. Skipped where no memory cgroup can be made."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sparsetier.tiers.cgroup import MemoryCgroup, unavailable_reason

REASON = unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

TOUCH = "b = bytearray({n}); b[::4096] = bytes(len(b[::4096])); print('ok')"


def run_in(limit: int, nbytes: int) -> tuple[int, MemoryCgroup]:
    cg = MemoryCgroup(limit)
    try:
        code = TOUCH.format(n=nbytes)
        argv = cg.wrap([sys.executable, "-c", code])
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        return proc.returncode, cg
    finally:
        cg.remove()


def test_inside_the_limit_runs() -> None:
    rc, cg = run_in(150 << 20, 60 << 20)
    assert rc == 0
    assert not os.path.exists(cg.path)  # removed


def test_over_the_limit_is_killed_and_reported() -> None:
    cg = MemoryCgroup(100 << 20)
    try:
        code = TOUCH.format(n=300 << 20)
        proc = subprocess.run(cg.wrap([sys.executable, "-c", code]), capture_output=True, timeout=60)
        stats = cg.stats()
    finally:
        cg.remove()
    assert proc.returncode == -9
    assert stats.oom_kills >= 1 and stats.peak_bytes is not None and stats.peak_bytes <= 100 << 20
    assert not os.path.exists(cg.path)
