"""The processes of an execution environment: its tree, ending it whole, its memory, and the watchdog.

An environment is its worker process and every process it started. The worker is a child subreaper
(``PR_SET_CHILD_SUBREAPER``: the Python bootstrap and a fork-started environment set it on themselves,
a ``provided`` runtime gets it in its ``preexec_fn``), so a descendant orphaned by its parent, e.g. a
daemon that double-forked and called ``setsid`` to leave the worker's session and process group, is
re-parented to the worker instead of init: it stays in the worker's tree, where ``kill_tree`` finds it.

``kill_tree`` stops the whole tree with SIGSTOP (a stopped process cannot fork), scans it again until
no new process appears, then SIGKILLs every process found: nothing an invocation started outlives
its environment. The tree is read from ``/proc/PID/task/TID/children`` (no scan of every process).

The watchdog covers the router's own death (a SIGKILL, a crash, the OOM killer): a parent-death
SIGKILL would kill the worker alone, and its children would be re-parented to init and live on. So a
watched worker's parent-death signal is SIGSTOP: it freezes the moment the router dies, before it can
end on its own (a worker whose Runtime API connection is lost exits, which would orphan its children
before the watchdog got to them; seen under load); the router tells a small watchdog process
(this file run as a script, stdlib only) each worker it starts (pid and start time, so a reused pid
is never taken for it) and each that ends, over a pipe only the router holds. When the pipe reaches
its end, because the router exited in any way, the watchdog ends the tree of every worker still
registered, then exits.

Standalone (stdlib only) because the watchdog runs it as ``python -I -S proctree.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

log = logging.getLogger("router.runtime")

MAX_PROCESSES = 10_000
"""Most processes ``descendants`` returns (a fork bomb is still stopped and killed in rounds)."""
MAX_ROUNDS = 50
"""Scans of a tree being stopped; each stops what the previous found."""
RESTART_DELAY = 1.0
"""A watchdog that ended within this many seconds of its start is started again only after as long."""
_PR_SET_CHILD_SUBREAPER = 36


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (those of every thread), [] when it is gone or unreadable."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in tids:
        try:
            fd = os.open(f"/proc/{pid}/task/{tid}/children", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            data = b""
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            data = b""
        finally:
            os.close(fd)
        found.extend(int(p) for p in data.split())
    return found


def descendants(root: int) -> list[int]:
    """Every process below ``root`` in the process tree (not ``root`` itself), parents first."""
    found: list[int] = []
    seen = {root}
    frontier = [root]
    while frontier and len(found) < MAX_PROCESSES:
        nxt: list[int] = []
        for pid in frontier:
            for child in children(pid):
                if child not in seen:
                    seen.add(child)
                    found.append(child)
                    nxt.append(child)
        frontier = nxt
    return found


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def kill_tree(root: int, *, include_root: bool = True) -> set[int]:
    """SIGKILL ``root`` and every process below it (only those below it when not ``include_root``: a
    worker ending its own descendants); returns the pids signalled.

    First everything is stopped (SIGSTOP), scanning again until a scan finds nothing new (a process
    that forked between a scan and its stop shows its child in the next scan), so no process can
    start another while the tree is being ended; then each gets SIGKILL. Synchronous and short
    (``/proc`` reads, served from kernel memory).
    """
    stopped: set[int] = set()
    for round_ in range(MAX_ROUNDS):
        tree = [root, *descendants(root)] if include_root and round_ == 0 else descendants(root)
        new = [pid for pid in tree if pid not in stopped]
        if not new and round_ > 0:
            break
        for pid in new:
            _signal(pid, signal.SIGSTOP)
        stopped.update(new)
    for pid in stopped:
        _signal(pid, signal.SIGKILL)
    return stopped


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, ``/proc/PID/stat`` field 22), None when gone:
    with the pid it names one process, even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_kb(pids: list[int]) -> int:
    """The sum of the peak resident sets (``VmHWM``) of ``pids``, in kB (0 for those gone): at least the
    most they held at once."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                text = f.read()
            start = text.index(b"VmHWM:") + 6
            total += int(text[start:text.index(b"kB", start)])
        except (OSError, ValueError):
            continue
    return total


def set_child_subreaper() -> bool:
    """Make this process the subreaper of its descendants (Linux); False when the platform cannot."""
    try:
        import ctypes

        return int(ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


# --- the router's side of the watchdog ---------------------------------------------------------------


class _Exit(asyncio.SubprocessProtocol):
    def __init__(self, exited: asyncio.Future[None]) -> None:
        self._exited = exited

    def process_exited(self) -> None:
        if not self._exited.done():
            self._exited.set_result(None)


class Watchdog:
    """The router's watchdog process (see the module doc): ``register`` each worker when it starts,
    ``unregister`` it when it has ended. Started by ``start``; ``close`` stops it (workers still
    registered are then ended with it). A watchdog that dies is started again by the next
    ``register``, which hands it every worker still running."""

    def __init__(self) -> None:
        self._roots: dict[int, int] = {}  # worker pid -> start time
        self._fd = -1  # write end of the watchdog's stdin
        self._transport: asyncio.SubprocessTransport | None = None
        self._exited: asyncio.Future[None] | None = None
        self._restart: asyncio.Task[None] | None = None
        self._started_at = 0.0
        self._closed = False

    @property
    def running(self) -> bool:
        """Whether a watchdog process holds the pipe (a watched worker may go without parent-death signal)."""
        return self._fd >= 0 and self._exited is not None and not self._exited.done()

    async def start(self) -> None:
        """Start the watchdog process; on failure, log it: workers then keep their parent-death signal."""
        loop = asyncio.get_running_loop()
        read_end, write_end = os.pipe()
        exited: asyncio.Future[None] = loop.create_future()
        try:
            transport, _ = await loop.subprocess_exec(
                lambda: _Exit(exited), sys.executable, "-I", "-S", __file__, stdin=read_end,
                stdout=asyncio.subprocess.DEVNULL, stderr=None, start_new_session=True,
                env={},  # nothing of the router's environment: it could be read from /proc/PID/environ
            )
        except OSError as exc:
            os.close(write_end)
            log.warning("process watchdog: cannot start %s, got %s; a worker's children may outlive a "
                        "router that is killed", sys.executable, exc)
            return
        finally:
            os.close(read_end)
        os.set_blocking(write_end, False)
        self._transport, self._exited, self._fd = transport, exited, write_end
        self._started_at = loop.time()
        exited.add_done_callback(self._lost)
        for pid, started in self._roots.items():
            self._send(b"+%d %d\n" % (pid, started))

    def register(self, pid: int) -> None:
        """``pid`` is a new worker: end its tree if the router dies."""
        started = start_time(pid)
        if started is None:
            return  # gone already
        self._roots[pid] = started
        self._send(b"+%d %d\n" % (pid, started))

    def unregister(self, pid: int) -> None:
        """The worker ``pid`` has ended (and been reaped)."""
        if self._roots.pop(pid, None) is not None:
            self._send(b"-%d\n" % pid)

    def _send(self, line: bytes) -> None:
        if self._fd < 0:
            return
        try:
            os.write(self._fd, line)  # under PIPE_BUF: whole or not at all
        except BlockingIOError:
            log.warning("process watchdog: not reading its pipe; restarting it")
            self._stop_process()
        except OSError:
            self._stop_process()  # it died: _lost restarts it

    def _stop_process(self) -> None:
        if self._transport is not None:
            with contextlib.suppress(ProcessLookupError):
                self._transport.kill()

    def _lost(self, _: asyncio.Future[None]) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._closed:
            return
        log.warning("process watchdog ended; starting another")
        if self._restart is None or self._restart.done():
            loop = asyncio.get_running_loop()
            soon = loop.time() - self._started_at < RESTART_DELAY  # one that keeps dying: not in a loop
            self._restart = loop.create_task(self._start_again(RESTART_DELAY if soon else 0.0),
                                             name="process watchdog")

    async def _start_again(self, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        await self.start()

    async def close(self) -> None:
        """Stop the watchdog: it ends the workers still registered (none after an orderly shutdown)."""
        self._closed = True
        if self._restart is not None:
            self._restart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restart
        exited = self._exited
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if exited is not None and not exited.done():
            _, pending = await asyncio.wait([exited], timeout=5.0)
            if pending:
                self._stop_process()
                await asyncio.wait([exited], timeout=5.0)
        if self._transport is not None:
            self._transport.close()
            self._transport = None


# --- the watchdog process -----------------------------------------------------------------------------


def watch(fd: int = 0) -> None:
    """Read ``+PID START`` / ``-PID`` lines from ``fd`` until its end, then end every registered tree."""
    roots: dict[int, int] = {}
    pending = b""
    while True:
        try:
            data = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not data:
            break
        *lines, pending = (pending + data).split(b"\n")
        for line in lines:
            try:
                if line.startswith(b"+"):
                    pid_text, started_text = line[1:].split()
                    roots[int(pid_text)] = int(started_text)
                elif line.startswith(b"-"):
                    roots.pop(int(line[1:]), None)
            except ValueError:
                continue
    for pid, started in roots.items():
        if start_time(pid) == started:  # the same process, not a reused pid
            kill_tree(pid)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the router's to handle
    watch()
