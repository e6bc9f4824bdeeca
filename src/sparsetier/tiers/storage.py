"""The storage tier: reads of the model file that bypass the page cache.

Reads use O_DIRECT into page-aligned buffers, so the operating system never keeps a second copy
of the weights in its page cache (which would silently hold the whole model in memory, or, in a
memory cgroup, count against its limit). Where the file system refuses O_DIRECT (tmpfs), reads fall
back to buffered reads followed by posix_fadvise(DONTNEED) on what was read.

Every failure becomes a ModelFileError naming the file: a read error, a file that ended early
(truncated while running), or one deleted or replaced since it was opened.
"""

from __future__ import annotations

import mmap
import os
import threading
import time

import torch

from ..errors import ModelFileError

ALIGN = 4096  # O_DIRECT wants offsets, lengths and buffer addresses aligned to the device block
BOUNCE_BYTES = 4 << 20  # reads of unaligned ranges go through a buffer this large, in pieces


def align_down(n: int) -> int:
    return n & ~(ALIGN - 1)


def align_up(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


def aligned_range(offset: int, nbytes: int) -> tuple[int, int]:
    """The aligned (start, length) covering file bytes offset..offset+nbytes."""
    start = align_down(offset)
    return start, align_up(offset + nbytes) - start


class AlignedBuffer:
    """Page-aligned anonymous memory (an mmap), as a uint8 tensor and a memoryview."""

    def __init__(self, nbytes: int):
        self.nbytes = align_up(max(nbytes, 1))
        self._map = mmap.mmap(-1, self.nbytes)
        self.view = memoryview(self._map)
        self.tensor = torch.frombuffer(self._map, dtype=torch.uint8)


class ModelFile:
    """One model file opened for reading around the page cache; thread-safe (positional reads)."""

    def __init__(self, path: str, end: int | None = None):
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise ModelFileError(f"cannot open model file {path}: {e.strerror}") from None
        st = os.fstat(self.fd)
        self.identity = (st.st_dev, st.st_ino)
        self.end = st.st_size if end is None else end  # bytes the weights need
        try:
            self.dfd: int | None = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECT)
        except (OSError, AttributeError):  # tmpfs and some others refuse O_DIRECT
            self.dfd = None
        self.bytes_read = 0
        self.reads = 0
        self._bounce: AlignedBuffer | None = None
        self._lock = threading.Lock()  # guards the bounce buffer and counters

    @property
    def direct(self) -> bool:
        return self.dfd is not None

    def close(self) -> None:
        for fd in (self.fd, self.dfd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.dfd = None
        self._bounce = None

    def check_unchanged(self) -> None:
        """Raise if the file was deleted, replaced or cut shorter than the weights need."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise ModelFileError(f"model file {self.path} was deleted while the model was running") from None
        except OSError as e:
            raise ModelFileError(f"model file {self.path}: {e.strerror}") from None
        if (st.st_dev, st.st_ino) != self.identity:
            raise ModelFileError(f"model file {self.path} was replaced while the model was running")
        if st.st_size < self.end:
            raise ModelFileError(
                f"model file {self.path} was truncated to {st.st_size} bytes while the model was running "
                f"(its weights need {self.end})"
            )

    def read_aligned(self, offset: int, out: memoryview) -> None:
        """Fill `out` (page-aligned, length a multiple of ALIGN) from aligned `offset`; the part
        past the end of the file is left as is, but the file must hold the weights' bytes."""
        want = min(len(out), max(0, self.end - offset))
        done = 0
        try:
            while done < want:
                ask = len(out) - done
                if self.dfd is not None:
                    n = os.preadv(self.dfd, [out[done:]], offset + done)
                else:
                    n = os.preadv(self.fd, [out[done:]], offset + done)
                    os.posix_fadvise(self.fd, offset + done, n, os.POSIX_FADV_DONTNEED)
                done += n
                # A short read of a regular file is its end; stop there (an O_DIRECT read cannot
                # resume at the unaligned offset anyway: it would fail with EINVAL).
                if n < ask:
                    break
        except OSError as e:
            raise ModelFileError(
                f"model file {self.path}: read error at byte {offset + done}: {e.strerror}"
            ) from None
        with self._lock:
            self.bytes_read += done
            self.reads += 1
        if done < want:
            raise ModelFileError(
                f"model file {self.path} ended at byte {offset + done} while reading its weights "
                f"(bytes {offset}..{offset + want}): was it truncated while the model was running?"
            )

    def read(self, offset: int, out: memoryview) -> None:
        """Fill `out` (any alignment) with file bytes offset..offset+len(out), through an aligned
        bounce buffer (loading pinned tensors, embedding rows)."""
        need = min(BOUNCE_BYTES, align_up(len(out)) + ALIGN)
        with self._lock:  # one bounce buffer: `read` is for one thread at a time (the model's)
            if self._bounce is None or self._bounce.nbytes < need:
                self._bounce = AlignedBuffer(need)
            bounce = self._bounce
        pos, end = 0, len(out)
        while pos < end:
            start = align_down(offset + pos)
            skip = offset + pos - start
            n = min(end - pos, bounce.nbytes - skip)
            length = align_up(skip + n)
            self.read_aligned(start, bounce.view[:length])
            out[pos : pos + n] = bounce.view[skip : skip + n]
            pos += n

    def drop_scratch(self) -> None:
        """Free the bounce buffer (after loading; row lookups allocate a small one again)."""
        with self._lock:
            self._bounce = None


def drop_page_cache(path: str) -> None:
    """Ask the kernel to evict a file's clean, unmapped pages (posix_fadvise DONTNEED)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        try:
            os.fdatasync(fd)  # dirty pages (a file just written) are not evicted: write them first
        except OSError:
            pass
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:  # not a regular file (a folder): nothing to evict
        pass
    finally:
        os.close(fd)


def probe_read_bandwidth(
    path: str, nbytes: int = 512 << 20, request: int = 8 << 20, readers: int = 4
) -> float:
    """O_DIRECT read speed of `path` in bytes/s: `nbytes` from the middle of the file in
    `request`-sized reads, `readers` in flight at once (the pattern the stream uses): the
    disk-read ceiling a streamed model can reach. Evicts what it read from the page cache."""
    from concurrent.futures import ThreadPoolExecutor

    f = ModelFile(path)
    try:
        size = os.fstat(f.fd).st_size
        request = align_up(request)
        nbytes = min(nbytes, align_down(size)) // request * request or align_down(size)
        start = align_down(max(0, (size - nbytes) // 2))
        bufs = [AlignedBuffer(request) for _ in range(readers)]
        offsets = list(range(start, start + nbytes, request))

        def read(i: int) -> None:
            buf = bufs[i % readers]  # reader i % readers owns this buffer: requests i, i + readers, ...
            for off in offsets[i::readers]:
                f.read_aligned(off, buf.view[: min(request, start + nbytes - off)])

        t0 = time.perf_counter()
        with ThreadPoolExecutor(readers) as pool:
            list(pool.map(read, range(readers)))
        return f.bytes_read / (time.perf_counter() - t0)
    finally:
        f.close()
        drop_page_cache(path)


def cached_bytes(path: str) -> int:
    """Bytes of `path` in the page cache now (mincore over a mapping of the file; Linux)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    size = os.path.getsize(path)
    if size == 0:
        return 0
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        try:
            page = mmap.PAGESIZE
            vec = (ctypes.c_ubyte * ((size + page - 1) // page))()
            if libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
            return sum(b & 1 for b in vec) * page
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)
