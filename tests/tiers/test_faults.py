"""Faults while streaming: the file shrinks, disappears, or a read fails. The request ends with a
clear ModelFileError; nothing crashes, nothing wrong is produced, and the engine recovers when the
fault goes away."""

from __future__ import annotations

import errno
import os

import pytest

from sparsetier.engine import GREEDY, Engine
from sparsetier.errors import ModelFileError
from sparsetier.tiers import storage

PROMPT = "Once upon a time"


def load(path: str) -> Engine:
    return Engine.load(path, threads=2, ctx_size=128, progress=False, memory_budget="25%", prefault=False)


def run(engine: Engine, n: int) -> list[int]:
    engine.slots[0].tokens.clear()
    return list(engine.generate(engine.tokenizer.encode(PROMPT), GREEDY, max_tokens=n, stop_ids=set()))


def test_truncated_mid_run(smol_private: str) -> None:
    e = load(smol_private)
    try:
        good = run(e, 3)
        gen = e.generate(e.tokenizer.encode(PROMPT), GREEDY, max_tokens=30, stop_ids=set())
        e.slots[0].tokens.clear()
        out = [next(gen), next(gen)]
        os.truncate(smol_private, os.path.getsize(smol_private) // 2)
        with pytest.raises(ModelFileError, match="truncated"):
            out += list(gen)
        assert out[:2] == good[:2]  # what came before the fault was right
        with pytest.raises(ModelFileError, match="truncated"):  # and stays a clean error
            run(e, 3)
    finally:
        e.tiers.close()


def test_deleted_mid_run(smol_private: str) -> None:
    e = load(smol_private)
    try:
        run(e, 2)
        os.remove(smol_private)
        with pytest.raises(ModelFileError, match="deleted"):
            run(e, 5)
    finally:
        e.tiers.close()


def test_read_error_then_recovery(smol_private: str, monkeypatch) -> None:
    e = load(smol_private)
    try:
        good = run(e, 6)
        real = os.preadv

        def failing(fd, bufs, offset):
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        monkeypatch.setattr(storage.os, "preadv", failing)
        with pytest.raises(ModelFileError, match="read error"):
            run(e, 6)
        monkeypatch.setattr(storage.os, "preadv", real)
        assert run(e, 6) == good
    finally:
        e.tiers.close()
