"""The SQLite invocation history's writes in a process of their own, so they share no GIL with the
event loop.

On SQLite the state store runs every transaction in one thread of the router's process. Writing the
history there (a row for every invocation) cost a saturated router 2-9 % of its throughput, and most of
it was not SQL: it was the event loop waiting for the GIL while that thread bound a statement's
parameters, and the forced switches between the two threads (measured with py-spy; see bench/RESULTS.md).
Here the rows are pickled on the event loop (about a microsecond a row) and sent down a pipe to a small
process that binds and commits them with its own connection to the same database file: SQLite's WAL
lets it write while the router reads, and serialises its writes with the router's own (each waits up
to the busy timeout for the other's write lock).

The process writes only whole rows and prunes (statements that read nothing back into Python); changes
merged into a stored row stay in the router's store thread. Each batch is one transaction, begun
``IMMEDIATE`` (it takes the write lock at its start: it never has to upgrade a read) and acknowledged
once committed, so a row the recorder has handed over is readable by the time ``write`` returns.
Should the process be gone or fail, ``write`` raises ``HistoryProcessFailed`` and the caller writes the
batch itself: the upsert of a whole row is idempotent, so a batch the process may also have committed
is not written twice. A process that ended is started again at the next batch, at most once every
``RESTART_EVERY`` seconds.

The process runs ``history_writer.py`` beside this file as ``python -I -S``: stdlib only, so it costs
~12 MB, not the router's imports. The router sends it the SQL at start; it trusts its input (pickles
from the one process that holds the pipe's other end).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pickle
import struct
import sys
import time
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("router.state")

_HEADER = struct.Struct("<I")  # a frame's length, before its pickle (history_writer.py reads the same)
_PROGRAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "history_writer.py")
RESTART_EVERY = 10.0
"""Seconds between two starts of the process after it ended (the caller writes in between)."""
WRITE_TIMEOUT = 60.0
"""Seconds a batch may take in the process (twice SQLite's busy timeout) before it is given up on."""


class HistoryProcessFailed(Exception):
    """The process did not write the batch (it is gone, failed, or timed out): write it another way."""


@dataclasses.dataclass(frozen=True, slots=True)
class Statements:
    """What the process runs, made by the router from its own schema (``router.state.history``)."""

    database: str  # path of the SQLite file
    synchronous: str  # FULL or NORMAL
    busy_timeout_ms: int
    upsert_head: str  # "INSERT ... VALUES " before the rows' groups
    upsert_group: str  # "(?, ?, ...)": one row's parameters
    upsert_tail: str  # " ON CONFLICT ..." after them
    rows_per_statement: int
    prune_by_age: str  # named parameters :p_function, :p_older_than
    prune_by_count: str  # named parameters :p_function, :p_keep


class HistoryProcess:
    """The writer process of one state store, started at its first batch, ended by ``close``."""

    def __init__(self, statements: Statements, *, where: str) -> None:
        self._statements = statements
        self._where = where
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()  # one batch in the pipe at a time
        self._owed = 0  # replies not read yet (a writer cancelled while it waited for its own)
        self._started_at: float | None = None  # monotonic time of the last start
        self._closed = False

    async def write(self, rows: Sequence[tuple[Any, ...]],
                    prune: Sequence[tuple[str, float, int]] = ()) -> None:
        """Write ``rows`` (whole rows, ``router.state.history.COLUMNS`` order) and prune (function, older
        than, rows kept) in one transaction, committed when this returns; ``HistoryProcessFailed`` when
        the process did not."""
        frame = pickle.dumps((list(rows), list(prune)), protocol=pickle.HIGHEST_PROTOCOL)
        async with self._lock:
            proc = await self._running()
            assert proc.stdin is not None
            assert proc.stdout is not None
            try:
                async with asyncio.timeout(WRITE_TIMEOUT):
                    proc.stdin.write(_HEADER.pack(len(frame)) + frame)
                    self._owed += 1
                    await proc.stdin.drain()
                    while self._owed > 1:  # the replies of writers cancelled before they read theirs
                        await proc.stdout.readline()
                        self._owed -= 1
                    reply = await proc.stdout.readline()
                    self._owed -= 1
            except (OSError, TimeoutError, ValueError) as exc:  # ValueError: a reply past readline's limit
                await self._end(f"cannot send it a batch ({type(exc).__name__}: {exc})")
                raise HistoryProcessFailed(str(exc)) from None
            if reply == b"ok\n":
                return
            if not reply:  # it ended
                await self._end("it ended")
                raise HistoryProcessFailed("the process ended")
            message = reply.decode("utf-8", "replace").strip()
            log.warning("%s: the history writer process could not write a batch (%s); written in the "
                        "router instead", self._where, message)
            raise HistoryProcessFailed(message)

    async def close(self, grace: float = 10.0) -> None:
        """End the process: it finishes the batch it holds and exits when its input ends; killed after
        ``grace`` seconds (also when a batch still in the pipe holds it that long)."""
        self._closed = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace), self._lock:
                proc = self._proc
                if proc is None:
                    return
                assert proc.stdin is not None
                proc.stdin.close()
                await proc.wait()
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    @property
    def pid(self) -> int | None:
        """The running process's pid (for tests), or None."""
        return None if self._proc is None or self._proc.returncode is not None else self._proc.pid

    async def _running(self) -> asyncio.subprocess.Process:
        """The process, started if it is not running (``HistoryProcessFailed`` when it may not be yet)."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            return proc
        if proc is not None:
            await self._end(f"it exited ({proc.returncode})")
        if self._closed:
            raise HistoryProcessFailed("closed")
        now = time.monotonic()
        if self._started_at is not None and now - self._started_at < RESTART_EVERY:
            raise HistoryProcessFailed("restarted too recently")
        self._started_at = now
        try:
            # In a session of its own: a signal to the router's process group (Ctrl-C, an init that
            # signals the group) does not end it before the router has sent its last batches.
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", _PROGRAM,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            log.warning("%s: cannot start the history writer process (%s); the history is written in "
                        "the router", self._where, exc)
            raise HistoryProcessFailed(str(exc)) from None
        assert proc.stdin is not None
        # a dict: the process has no ``router`` package to unpickle the class from
        init = pickle.dumps(dataclasses.asdict(self._statements), protocol=pickle.HIGHEST_PROTOCOL)
        proc.stdin.write(_HEADER.pack(len(init)) + init)
        self._proc, self._owed = proc, 0
        return proc

    async def _end(self, why: str) -> None:
        proc, self._proc = self._proc, None
        self._owed = 0
        if proc is None:
            return
        if not self._closed:
            log.warning("%s: the history writer process stopped: %s; the history is written in the "
                        "router until it is started again", self._where, why)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
