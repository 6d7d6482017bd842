"""Memory of execution environments: the limit (cgroup v2 child or RLIMIT_AS) and Max Memory Used.

The limit: when the router runs in a cgroup v2 tree whose own cgroup delegates the ``memory`` controller
to children and is writable (a systemd ``Delegate=yes`` unit, a container given its own cgroup), each
worker goes into a child cgroup with ``memory.max`` = the function's memory and no swap: the kernel then
kills a worker that exceeds it (reported as ``Runtime.OutOfMemory``); the cgroup holds every process of
the environment, and its ``memory.peak`` is Max Memory Used. Otherwise the worker gets ``RLIMIT_AS`` =
memory + ``HEADROOM_MB``: allocations past it fail (Python raises ``MemoryError``, which the handler sees
like any exception); a Node.js worker gets ``RLIMIT_DATA`` instead (``data_limit``: V8 reserves far more
address space than it uses). That limit is per process (each child the function forks gets its own), and Max
Memory Used sums the peak resident sets of the worker and of the processes below it still running.

Headroom, measured on CPython 3.11 (x86_64, glibc, ``MALLOC_ARENA_MAX=2``): a bare interpreter with the
bootstrap's imports maps ~24 MB of address space for ~18 MB resident; awslambdaric ~18 MB; a thread adds
an 8 MB stack and may reserve a 64 MB malloc arena (glibc falls back to the main arena when that
reservation fails). 64 MB of headroom covers the interpreter's mapped-but-not-resident pages and a few
thread stacks, so a function of ``memory: 128`` can hold roughly its 128 MB of live data, as on Lambda
where the limit counts resident memory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from router.runtime import proctree

HEADROOM_MB = 64
LIBUV_THREAD_STACK_MB = 8
"""The stack libuv gives each thread of its pool (node's deps/uv/src/threadpool.c): a private writable
mapping, which RLIMIT_DATA counts in full from the moment the pool starts, though little of it is used."""
LIBUV_POOL_THREADS = (4, 1024)
"""libuv's thread pool size: by default, and at most (``UV_THREADPOOL_SIZE``)."""
TREE_SCAN_INTERVAL = 0.05
"""Seconds between scans for the processes below a multi-threaded worker (Max Memory Used)."""
_CGROUP_ROOT = Path("/sys/fs/cgroup")
log = logging.getLogger("router.runtime")


def address_space_limit(memory_mb: int) -> int:
    """RLIMIT_AS of a worker of a function of ``memory_mb``: memory + headroom, in bytes."""
    return (memory_mb + HEADROOM_MB) * 1024 * 1024


def data_limit(memory_mb: int, env: Mapping[str, str]) -> int:
    """RLIMIT_DATA of a Node.js worker, in bytes: memory + headroom + the stacks of libuv's thread pool
    (``UV_THREADPOOL_SIZE`` in ``env``, 4 threads by default), which node starts at its first
    asynchronous file, DNS, crypto or zlib call, and the router's bootstrap at its first ``/next`` read.
    Without them the pool's reservations alone would take 32 MB of the function's memory."""
    default, most = LIBUV_POOL_THREADS
    try:
        threads = min(max(int(env.get("UV_THREADPOOL_SIZE", default)), 1), most)
    except ValueError:
        threads = default
    return address_space_limit(memory_mb) + threads * LIBUV_THREAD_STACK_MB * 1024 * 1024


def rlimit_preexec(limit: int, *, data: bool = False) -> Callable[[], None]:
    """A ``preexec_fn`` that caps the worker's address space at ``limit`` bytes (``data``: its private
    writable memory, RLIMIT_DATA, instead)."""
    which = resource.RLIMIT_DATA if data else resource.RLIMIT_AS

    def apply() -> None:
        resource.setrlimit(which, (limit, limit))

    return apply


class ProcStatus:
    """``/proc/PID/status``, ``/proc/PID/schedstat`` and the main thread's ``children`` kept open: each
    is re-read with one pread (procfs regenerates the text on each read from offset 0). procfs is
    served from kernel memory and never waits on a disk, so this is safe on the event loop (a few
    microseconds; ``status`` is read after every invocation, since even a short one may raise the
    peak)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._fd = _open(f"/proc/{pid}/status")
        self._sched = _open(f"/proc/{pid}/schedstat")
        self._children = _open(f"/proc/{pid}/task/{pid}/children")
        self.below: dict[int, int] = {}  # the processes below it at the last look: pid -> start time
        self._scanned_at = -TREE_SCAN_INTERVAL
        self._below_sum = 0  # kB, at the last scan

    def max_memory_mb(self, reported: bytes | None = None) -> int | None:
        """The peak resident set (``VmHWM``) of the process and the processes below it now running,
        summed, in MB, or None when it is gone. Without a cgroup this is what the environment holds
        (a function that forks holds its children's memory too); a child that has already ended is
        not counted.

        ``reported``: the process's own ``VmHWM`` (kB) and ``Threads``, as ``b"KB THREADS"``, which
        the router's bootstraps read from their /proc/self/status as they post a result (the same
        kernel figures; generating that text costs ~7 us, which this way the worker pays, not the
        event loop). Read here when absent or malformed."""
        if self._fd is None:
            return None
        figures = _reported(reported) if reported is not None else None
        if figures is None:
            try:
                figures = self._own()
            except (OSError, ValueError):
                return None
        kb, threads = figures
        # Processes below it? One thread: its children file lists every child (one pread, the common
        # case); else each thread's must be read (``proctree.descendants``). They are scanned, and their
        # peaks summed, at most every TREE_SCAN_INTERVAL (a Node worker has ~10 threads, a Python one
        # with per_environment_concurrency a child per runtime worker: ~50-100 us a scan), the last sum
        # counted in between.
        below = threads > 1 or self._children is None
        if not below:
            try:
                below = bool(os.pread(self._children, 65536, 0).strip())  # type: ignore[arg-type]
            except OSError:
                below = False
        if below:
            now = time.monotonic()
            if now - self._scanned_at >= TREE_SCAN_INTERVAL:
                self._scanned_at = now
                self._below_sum = self._below_kb()
            kb += self._below_sum
        elif self.below:
            self.below, self._below_sum = {}, 0
        return -(-kb // 1024)  # kB -> MB, rounded up

    def _own(self) -> tuple[int, int]:
        """``VmHWM`` (kB) and ``Threads`` of the process, from its status file (one pread)."""
        assert self._fd is not None
        text = os.pread(self._fd, 8192, 0)
        start = text.index(b"VmHWM:") + 6
        kb = int(text[start:text.index(b"kB", start)])
        start = text.index(b"Threads:") + 8
        return kb, int(text[start:text.index(b"\n", start)])

    def _below_kb(self) -> int:
        """The summed peaks of the processes below, noted in ``below`` (with their start times, so the
        environment can end them even after the worker itself is gone and they were re-parented)."""
        pids = proctree.descendants(self.pid)
        known, self.below = self.below, {}
        for pid in pids:
            started = known.get(pid) or proctree.start_time(pid)
            if started is not None:
                self.below[pid] = started
        return proctree.peak_rss_kb(pids)

    def run_and_wait_ns(self) -> tuple[int, int] | None:
        """Nanoseconds the process has run on a CPU and waited runnable for one (``schedstat``); the rest
        of its life it slept (waited on I/O, say). None when it is gone or the kernel keeps no such
        count."""
        if self._sched is None:
            return None
        try:
            run, wait, _ = os.pread(self._sched, 128, 0).split()
            return int(run), int(wait)
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        for fd in (self._fd, self._sched, self._children):
            if fd is not None:
                os.close(fd)
        self._fd = self._sched = self._children = None


def _reported(value: bytes) -> tuple[int, int] | None:
    """``b"KB THREADS"`` as two non-negative ints, or None when it is not that."""
    parts = value.split()
    if len(parts) != 2 or not (parts[0].isdigit() and parts[1].isdigit()):
        return None
    return int(parts[0]), int(parts[1])


def _open(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


class CgroupV2:
    """A delegated cgroup v2 directory in which each environment gets a child with ``memory.max``."""

    def __init__(self, parent: Path) -> None:
        self.parent = parent

    @classmethod
    def detect(cls) -> CgroupV2 | None:
        """The router's own cgroup when it can host memory-limited children, else None. Blocking."""
        try:
            lines = Path("/proc/self/cgroup").read_text().splitlines()
            pure_v2 = (_CGROUP_ROOT / "cgroup.controllers").exists()
            if len(lines) != 1 or not lines[0].startswith("0::") or not pure_v2:
                return None
            own = _CGROUP_ROOT / lines[0][3:].lstrip("/")
            if "memory" not in (own / "cgroup.subtree_control").read_text().split():
                return None
            if not os.access(own, os.W_OK):
                return None
            return cls(own)
        except OSError:
            return None

    def create(self, name: str, memory_mb: int) -> Path:
        """Create the child cgroup ``name`` limited to ``memory_mb``. Blocking."""
        child = self.parent / name
        child.mkdir()
        (child / "memory.max").write_text(str(memory_mb * 1024 * 1024))
        with contextlib.suppress(OSError):  # no swap accounting
            (child / "memory.swap.max").write_text("0")
        return child

    @staticmethod
    def preexec(child: Path) -> Callable[[], None]:
        procs = str(child / "cgroup.procs")

        def join() -> None:
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)

        return join

    @staticmethod
    def oom_killed(child: Path) -> bool:
        """Whether the kernel killed a process of ``child`` for memory. Blocking."""
        try:
            for line in (child / "memory.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value) > 0
        except (OSError, ValueError):
            return False
        return False

    @staticmethod
    def peak_mb(child: Path) -> int | None:
        """The most memory the processes of ``child`` held at once (``memory.peak``, Linux 5.19; else
        ``memory.current`` now), in MB; None when unreadable. A read of cgroupfs: no disk wait."""
        for name in ("memory.peak", "memory.current"):
            try:
                fd = os.open(child / name, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                return -(-int(os.read(fd, 64)) // (1024 * 1024))
            except (OSError, ValueError):
                continue
            finally:
                os.close(fd)
        return None

    @staticmethod
    def kill(child: Path) -> bool:
        """SIGKILL every process of ``child`` at once (``cgroup.kill``, Linux 5.14); False when the
        kernel has no ``cgroup.kill`` (the caller then ends the process tree)."""
        try:
            fd = os.open(child / "cgroup.kill", os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            os.write(fd, b"1")
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    @staticmethod
    def remove(child: Path) -> None:
        """Remove ``child`` once its processes are gone. Blocking."""
        try:
            child.rmdir()
        except OSError as exc:
            log.warning("cgroup %s: cannot remove, got %s", child, exc)
