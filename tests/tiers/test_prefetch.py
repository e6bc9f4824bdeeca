"""The reader pipeline on a plain file: order, restarts, errors, read-ahead bounded by the slots."""

from __future__ import annotations

import errno
import os

import pytest

from sparsetier.errors import ModelFileError
from sparsetier.tiers import storage
from sparsetier.tiers.plan import Piece, Unit
from sparsetier.tiers.prefetch import Prefetcher
from sparsetier.tiers.storage import ModelFile

UNIT = 3 * 4096 + 100  # not aligned: the reads round out to whole pages


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data.bin"
    data = os.urandom(10 * UNIT + 5000)
    path.write_bytes(data)
    return str(path), data


def units(n: int = 10) -> list[Unit]:
    return [Unit(k, f"u{k}", k, [Piece(f"t{k}", 0, 1, 1000 + k * UNIT, UNIT)]) for k in range(n)]


def unit_bytes(buf, unit: Unit):
    piece = unit.pieces[0]
    start = unit.buffer_offset(piece)
    return bytes(buf[start : start + piece.nbytes].numpy())


def test_units_arrive_in_order_for_several_passes(data_file) -> None:
    path, data = data_file
    us = units()
    f = ModelFile(path)
    stream = Prefetcher(f, us, max(u.read_bytes for u in us), slots=2)
    try:
        for _ in range(3):
            for u in us:
                buf = stream.acquire(u.index)
                p = u.pieces[0]
                assert unit_bytes(buf, u) == data[p.offset : p.offset + p.nbytes]
                stream.release(u.index)
        assert stream.stats.restarts == 0 and stream.stats.units == 30
        # the reader never holds more than `slots` units: 30 units read, plus at most 2 ahead
        assert f.reads <= 32
    finally:
        stream.close()
        f.close()


def test_out_of_order_restarts(data_file) -> None:
    path, data = data_file
    us = units()
    f = ModelFile(path)
    stream = Prefetcher(f, us, max(u.read_bytes for u in us), slots=3)
    try:
        stream.acquire(0)
        stream.release(0)
        buf = stream.acquire(5)  # an interrupted pass: the next one starts elsewhere
        p = us[5].pieces[0]
        assert unit_bytes(buf, us[5]) == data[p.offset : p.offset + p.nbytes]
        stream.release(5)
        assert stream.stats.restarts == 1
        stream.acquire(0)  # acquire without release, then a new pass: recovers
        buf = stream.acquire(0)
        assert unit_bytes(buf, us[0]) == data[1000 : 1000 + UNIT]
        stream.release(0)
    finally:
        stream.close()
        f.close()


def test_read_error_reaches_the_model_then_recovers(data_file, monkeypatch) -> None:
    path, data = data_file
    us = units()
    f = ModelFile(path)
    real = os.preadv
    fail = {"on": True}

    def flaky(fd, bufs, offset):
        if fail["on"] and offset >= us[3].extents[0][0]:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(fd, bufs, offset)

    monkeypatch.setattr(storage.os, "preadv", flaky)
    stream = Prefetcher(f, us, max(u.read_bytes for u in us), slots=2)
    try:
        for k in range(3):
            stream.acquire(k)
            stream.release(k)
        with pytest.raises(ModelFileError, match="read error"):
            stream.acquire(3)
        fail["on"] = False
        for k in range(10):  # the next pass starts over and succeeds
            buf = stream.acquire(k)
            p = us[k].pieces[0]
            assert unit_bytes(buf, us[k]) == data[p.offset : p.offset + p.nbytes]
            stream.release(k)
    finally:
        stream.close()
        f.close()


def test_truncated_file_is_a_clear_error(data_file) -> None:
    path, _ = data_file
    us = units()
    f = ModelFile(path, end=us[-1].pieces[0].offset + UNIT)
    os.truncate(path, 4 * UNIT)
    stream = Prefetcher(f, us, max(u.read_bytes for u in us), slots=2)
    try:
        with pytest.raises(ModelFileError, match="truncated"):
            for k in range(10):
                stream.acquire(k)
                stream.release(k)
    finally:
        stream.close()
        f.close()


def test_parallel_requests_fill_the_buffer_in_order(data_file) -> None:
    """Several readers, each unit cut into page-sized requests: the same bytes as one read."""
    path, data = data_file
    us = [Unit(0, "all", 0, [Piece("t", 0, 1, 1000, 9 * UNIT)])]
    f = ModelFile(path)
    stream = Prefetcher(f, us, us[0].read_bytes, slots=2, readers=3, request_bytes=4096)
    try:
        for _ in range(2):
            buf = stream.acquire(0)
            assert unit_bytes(buf, us[0]) == data[1000 : 1000 + 9 * UNIT]
            stream.release(0)
        assert f.reads >= 2 * us[0].read_bytes // 4096
    finally:
        stream.close()
        f.close()
