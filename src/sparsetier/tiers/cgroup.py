"""Run a process inside a memory cgroup: a machine with that much RAM, page cache included.

cgroup v1 (the memory controller mounted on its own, as in /sys/fs/cgroup/memory) or v2 (a
unified hierarchy whose parent delegates the memory controller). The child cgroup is made under
the cgroup this process is in, so it stays inside whatever limits that one has. Needs root (or a
delegated hierarchy); `unavailable_reason()` says why not where it cannot work.

A page already in the page cache stays charged to the cgroup that first read it: callers should
evict the files the child will read (storage.drop_page_cache) so they count against its limit.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from ..errors import SparsetierError


class CgroupUnavailable(SparsetierError):
    pass


def _mounts() -> list[tuple[str, str, set[str]]]:
    out = []
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 4:
                    out.append((parts[2], parts[1], set(parts[3].split(","))))
    except OSError:
        pass
    return out


def _own_paths() -> dict[str, str]:
    """{"memory": path} for v1, {"": path} for v2, from /proc/self/cgroup."""
    out = {}
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for c in controllers.split(",") if controllers else [""]:
                    out[c] = path
    except OSError:
        pass
    return out


def _parent_dir() -> tuple[int, str]:
    """(version, directory under which a memory cgroup can be made); CgroupUnavailable if none."""
    mounts, own = _mounts(), _own_paths()
    reasons = []
    for fstype, mountpoint, opts in mounts:
        if fstype == "cgroup" and "memory" in opts and "memory" in own:
            parent = os.path.join(mountpoint, own["memory"].lstrip("/"))
            if os.access(parent, os.W_OK):
                return 1, parent
            reasons.append(f"cgroup v1 memory controller at {parent} is not writable (not root?)")
    for fstype, mountpoint, _ in mounts:
        if fstype == "cgroup2" and "" in own:
            parent = os.path.join(mountpoint, own[""].lstrip("/"))
            try:
                with open(os.path.join(parent, "cgroup.controllers")) as f:
                    controllers = f.read().split()
            except OSError:
                controllers = []
            if "memory" not in controllers:
                reasons.append(f"cgroup v2 at {mountpoint} does not delegate the memory controller")
                continue
            if not os.access(parent, os.W_OK):
                reasons.append(f"cgroup v2 at {parent} is not writable (not root?)")
                continue
            return 2, parent
    if not reasons:
        reasons.append("no cgroup file system is mounted")
    raise CgroupUnavailable("no memory cgroup available: " + "; ".join(reasons))


def _own_dir() -> tuple[int, str] | None:
    """(version, directory) of the memory cgroup this process is in, if any is mounted."""
    mounts, own = _mounts(), _own_paths()
    for fstype, mountpoint, opts in mounts:
        if fstype == "cgroup" and "memory" in opts and "memory" in own:
            return 1, os.path.join(mountpoint, own["memory"].lstrip("/"))
    for fstype, mountpoint, _ in mounts:
        if fstype == "cgroup2" and "" in own:
            path = os.path.join(mountpoint, own[""].lstrip("/"))
            if os.path.exists(os.path.join(path, "memory.current")):
                return 2, path
    return None


def own_usage_and_limit() -> tuple[int, int | None] | None:
    """(bytes charged to this process's memory cgroup, its limit or None), or None outside one.
    The charge is what counts against the limit: anonymous memory plus the page cache the cgroup
    read first (pages other cgroups had cached already are not charged to it)."""
    found = _own_dir()
    if found is None:
        return None
    version, path = found
    names = (
        ("memory.usage_in_bytes", "memory.limit_in_bytes")
        if version == 1
        else ("memory.current", "memory.max")
    )
    try:
        with open(os.path.join(path, names[0])) as f:
            usage = int(f.read())
        with open(os.path.join(path, names[1])) as f:
            text = f.read().strip()
    except (OSError, ValueError):
        return None
    limit = None if text == "max" or int(text) >= 1 << 60 else int(text)
    return usage, limit


def unavailable_reason() -> str | None:
    """None when a memory cgroup can be made here, else why not (one line)."""
    try:
        _parent_dir()
    except CgroupUnavailable as e:
        return str(e)
    return None


@dataclass
class CgroupStats:
    peak_bytes: int | None
    oom_kills: int
    limit_hits: int | None  # v1 failcnt: times the limit was reached (reclaim started)


class MemoryCgroup:
    """A child memory cgroup with a hard limit; `wrap(argv)` runs a command inside it."""

    def __init__(self, limit: int, name: str | None = None):
        self.version, parent = _parent_dir()
        self.limit = limit
        self.path = os.path.join(parent, name or f"sparsetier-{os.getpid()}-{time.monotonic_ns()}")
        try:
            os.mkdir(self.path)
        except OSError as e:
            raise CgroupUnavailable(f"cannot create memory cgroup {self.path}: {e.strerror}") from None
        try:
            if self.version == 1:
                self._write("memory.limit_in_bytes", limit)
                if os.path.exists(os.path.join(self.path, "memory.memsw.limit_in_bytes")):
                    self._write("memory.memsw.limit_in_bytes", limit)  # no swapping around the limit
            else:
                self._write("memory.max", limit)
                if os.path.exists(os.path.join(self.path, "memory.swap.max")):
                    self._write("memory.swap.max", 0)
        except OSError as e:
            self.remove()
            raise CgroupUnavailable(f"cannot set a memory limit on {self.path}: {e.strerror}") from None

    def _write(self, name: str, value: int) -> None:
        with open(os.path.join(self.path, name), "w") as f:
            f.write(str(value))

    def _read(self, name: str) -> str | None:
        try:
            with open(os.path.join(self.path, name)) as f:
                return f.read()
        except OSError:
            return None

    def wrap(self, argv: list[str]) -> list[str]:
        """`argv` as a command that first moves itself into this cgroup (before exec, so the
        whole process, from its first allocation, counts)."""
        procs = os.path.join(self.path, "cgroup.procs")
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *argv]

    def stats(self) -> CgroupStats:
        def keyed(text: str | None, key: str) -> int:
            for line in (text or "").splitlines():
                k, _, v = line.partition(" ")
                if k == key:
                    return int(v)
            return 0

        if self.version == 1:
            peak = self._read("memory.max_usage_in_bytes")
            fail = self._read("memory.failcnt")
            return CgroupStats(
                int(peak) if peak else None,
                keyed(self._read("memory.oom_control"), "oom_kill"),
                int(fail) if fail else None,
            )
        peak = self._read("memory.peak")
        return CgroupStats(int(peak) if peak else None, keyed(self._read("memory.events"), "oom_kill"), None)

    def remove(self) -> None:
        """Remove the cgroup (its processes must have exited); retried briefly while the kernel
        finishes tearing the last one down."""
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)
