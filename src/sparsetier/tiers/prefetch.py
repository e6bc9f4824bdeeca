"""The host tier's stream: a background reader that keeps the next units of weights coming.

A forward pass uses the streamed units in a fixed cyclic order (layer 0, 1, ..., the head, then
layer 0 of the next token). A reader thread reads units in that order into a few equal stream
buffers (slots), as far ahead as free slots allow; the model takes unit k (`acquire`, waiting if
it is not in yet), computes, and hands it back (`release`), which frees the slot for unit
k + slots. With 2 slots the next unit is read while the current one computes. A unit is read as
several aligned requests, `readers` of them in flight at once.

If the model asks for a unit out of order (an error interrupted a pass), the stream restarts at
that unit. A read error is raised to the model when it asks for that unit, as a ModelFileError;
the reader then pauses until the next pass restarts it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from .plan import Unit
from .storage import ALIGN, AlignedBuffer, ModelFile, align_up


@dataclass
class _Entry:
    slot: int
    unit: int
    gen: int
    ready: bool = False
    error: BaseException | None = None


@dataclass
class StreamStats:
    units: int = 0  # units handed to the model
    wait_s: float = 0.0  # time the model waited for reads (I/O not hidden behind compute)
    read_s: float = 0.0  # time the reader spent reading (the disk's busy time)
    restarts: int = 0


# A unit's extents are read in requests of at most this many bytes, `readers` of them in flight at
# once: a virtual disk serves several requests in parallel faster than one (docs/tiers.md).
REQUEST_BYTES = 8 << 20
MIN_REQUEST_BYTES = 1 << 20
READERS = 4


class Prefetcher:
    def __init__(
        self,
        file: ModelFile,
        units: list[Unit],
        slot_bytes: int,
        slots: int = 2,
        readers: int = READERS,
        request_bytes: int = REQUEST_BYTES,
    ):
        if not units:
            raise ValueError("nothing to stream")
        self.file = file
        self.units = units
        self.request_bytes = max(ALIGN, request_bytes // ALIGN * ALIGN)
        self.readers = max(1, readers)
        self._pool = ThreadPoolExecutor(readers, "sparsetier-read") if readers > 1 else None
        self.buffers = [AlignedBuffer(slot_bytes) for _ in range(slots)]
        self.stats = StreamStats()
        self._cond = threading.Condition()
        self._busy = [False] * slots  # a slot holds (or is being filled with) a unit
        self._queue: deque[_Entry] = deque()  # this generation's units, in read order
        self._gen = 0
        self._next = 0  # the unit the reader reads next
        self._expect = 0  # the unit the model should ask for next
        self._paused = False  # after a read error, until the model restarts the stream
        self._closed = False
        self._held: _Entry | None = None
        self._thread = threading.Thread(target=self._run, name="sparsetier-prefetch", daemon=True)
        self._thread.start()

    # -- the model's side -------------------------------------------------------------

    def acquire(self, k: int) -> torch.Tensor:
        """Unit k's stream buffer (uint8, its extents packed in order), once read."""
        t0 = time.perf_counter()
        with self._cond:
            if self._held is not None:  # a pass ended abnormally without releasing
                self._drop_held()
            head = self._queue[0] if self._queue else None
            if self._paused or (head.unit != k if head else self._next != k):
                self._restart(k)
            while not (self._queue and (self._queue[0].ready or self._queue[0].error)):
                if self._closed:
                    raise RuntimeError("the weight stream is closed")
                self._cond.wait()
            entry = self._queue[0]
            if entry.error is not None:
                err = entry.error
                self._restart(k)
                self._paused = True  # do not retry in the background: the next pass will
                raise err
            self._held = entry
        self.stats.wait_s += time.perf_counter() - t0
        self.stats.units += 1
        return self.buffers[entry.slot].tensor

    def release(self, k: int) -> None:
        with self._cond:
            entry = self._held
            if entry is None or entry.unit != k:
                return
            self._drop_held()
            self._expect = (k + 1) % len(self.units)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    # -- internals (called with the lock held) ----------------------------------------

    def _drop_held(self) -> None:
        entry = self._held
        self._held = None
        if self._queue and self._queue[0] is entry:
            self._queue.popleft()
        self._busy[entry.slot] = False
        self._cond.notify_all()

    def _restart(self, k: int) -> None:
        """Forget every unit read ahead and read from unit k on. A slot still being filled stays
        busy until its read returns (the reader then frees it)."""
        self._gen += 1
        for e in self._queue:
            if e.ready or e.error is not None:
                self._busy[e.slot] = False
        self._queue.clear()
        self._next = self._expect = k
        self._paused = False
        self.stats.restarts += 1
        self._cond.notify_all()

    # -- the reader thread ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._paused or all(self._busy)):
                    self._cond.wait()
                if self._closed:
                    return
                slot = self._busy.index(False)
                self._busy[slot] = True
                entry = _Entry(slot, self._next, self._gen)
                self._queue.append(entry)
                self._next = (self._next + 1) % len(self.units)
            t0 = time.perf_counter()
            try:
                self._read(self.units[entry.unit], self.buffers[slot])
            except BaseException as e:  # handed to the model, which raises it
                entry.error = e
            self.stats.read_s += time.perf_counter() - t0
            with self._cond:
                if entry.gen != self._gen:  # restarted meanwhile: nobody wants this unit
                    self._busy[slot] = False
                else:
                    entry.ready = entry.error is None
                    if entry.error is not None:
                        self._paused = True
                self._cond.notify_all()

    def _read(self, unit: Unit, buf: AlignedBuffer) -> None:
        if unit.index == 0:  # once per pass: the file must still be the one we planned for
            self.file.check_unchanged()
        # (file offset, buffer position, length): at most request_bytes each, and a small unit
        # still cut in about `readers` requests of at least MIN_REQUEST_BYTES
        size = max(MIN_REQUEST_BYTES, align_up(-(-unit.read_bytes // self.readers)))
        size = min(self.request_bytes, size)
        requests = []
        pos = 0
        for start, length in unit.extents:
            for off in range(0, length, size):
                requests.append((start + off, pos + off, min(size, length - off)))
            pos += length
        if self._pool is None or len(requests) == 1:
            for start, at, n in requests:
                self.file.read_aligned(start, buf.view[at : at + n])
            return
        futures = [self._pool.submit(self.file.read_aligned, s, buf.view[a : a + n]) for s, a, n in requests]
        for f in futures:  # every request finishes before the slot is handed out, even on an error
            f.exception()
        for f in futures:
            f.result()  # the first error, if any
