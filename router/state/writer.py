"""Group commit: one writer task inserts the rows of many concurrent callers in one transaction each.

A caller waits at most ``timeout`` seconds for its row to be committed. When that runs out its row is
*withdrawn*, and the outcome is unambiguous:

- a withdrawn row that the writer has not taken yet is dropped, never written;
- a withdrawn row in the batch being written is never committed either: the write calls ``seal()``
  inside its transaction, after the INSERT and before COMMIT; ``seal`` refuses (``Withdrawn``, the
  transaction rolls back) when a row of the batch was withdrawn, and the writer writes the others again
  at once. Once sealed, rows can no longer be withdrawn.

The one window left is a sealed batch whose COMMIT is on its way when the caller's time runs out (a
database that stalls at that very moment): the caller is told the event may have been committed, and
answers 503 all the same. If the COMMIT did land, the client's retry makes a duplicate: at-least-once,
the safe side (answering 202 without knowing could lose the event). On PostgreSQL the server also
aborts a transaction whose next statement does not arrive within the timeout
(``idle_in_transaction_session_timeout``), which narrows that window to a COMMIT the server received.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from router.errors import StateStoreError, StateStoreUnavailable
from router.state.errors import describe

log = logging.getLogger("router.state")

_WAITING, _SEALED, _WITHDRAWN = range(3)


class Withdrawn(Exception):
    """Raised by ``seal()`` when a row of the batch was withdrawn: roll the transaction back."""


@dataclass(slots=True)
class _Pending:
    row: dict[str, Any]
    future: asyncio.Future[None]
    state: int = _WAITING


Seal = Callable[[], None]
Write = Callable[[list[dict[str, Any]], Seal], Awaitable[object]]
"""Inserts the rows in one transaction (one ``executemany``), calls ``seal()`` after the insert and
before the commit (in the thread that runs the transaction), and commits. Committed when it returns."""


def _consume(future: asyncio.Future[None]) -> None:
    """Retrieve the outcome of a row whose caller gave up, so asyncio does not report it as lost."""
    if not future.cancelled():
        future.exception()


class GroupCommitWriter:
    """Insert rows in batches with ``write``; ``submit`` returns once its row is committed.

    The writer task drains the bounded queue into one ``write`` (one transaction) per batch, so N
    concurrent callers cost about one commit, not N. A caller that gives up (``timeout``, or cancelled)
    withdraws its row when it can (see the module doc): once the caller has had no acknowledgement, the
    row is not written behind its back.
    """

    def __init__(
        self, write: Write, *, where: str, timeout: float = 5.0, max_pending: int = 2048,
        max_batch: int = 512,
    ) -> None:
        self._write = write
        self._where = where
        self._timeout = timeout
        self._retry_after = math.ceil(timeout)
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max_pending)
        self._lock = threading.Lock()  # pending states: the loop withdraws, the SQLite thread seals
        self._task: asyncio.Task[None] | None = None
        self._closing = False  # no new submissions
        self._stopped = False  # the writer task has ended; nothing queued will be written

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="state-store-writer")

    async def submit(self, row: dict[str, Any]) -> None:
        """Queue ``row`` and wait until its transaction committed.

        Raises ``StateStoreUnavailable`` when it was not committed within the timeout (the row is then
        withdrawn), could not be written, or the store is closing.
        """
        if self._closing or self._task is None:
            raise self._unavailable("the store is closed; the event was not accepted")
        pending = _Pending(row, asyncio.get_running_loop().create_future())
        queued = False
        try:
            async with asyncio.timeout(self._timeout):
                await self._queue.put(pending)  # waits for room: backpressure, nothing queued yet
                queued = True
                if self._stopped and not pending.future.done():
                    # The writer ended while this caller waited for room: nobody will write the row.
                    pending.future.set_exception(self._closed_error())
                await asyncio.shield(pending.future)
        except TimeoutError:
            if pending.future.done() and not pending.future.cancelled() \
                    and pending.future.exception() is None:
                return  # committed just as the time ran out
            pending.future.add_done_callback(_consume)  # nobody awaits it any more
            if not queued:
                raise self._unavailable(
                    f"{self._queue.qsize()} events waiting to be written, none committed within "
                    f"{self._timeout:g}s; the event was not accepted (state.write_timeout)") from None
            if self._withdraw(pending):
                raise self._unavailable(
                    f"not committed within {self._timeout:g}s (is the database stalled?); the event was "
                    "withdrawn and not accepted (state.write_timeout)") from None
            log.warning("%s: an event's commit was under way when its %gs ran out; it was answered as not "
                        "accepted and may still be committed (a retry can deliver it twice)",
                        self._where, self._timeout)
            raise self._unavailable(
                f"the commit did not complete within {self._timeout:g}s; the event was not accepted "
                "(it may still be committed)") from None
        except asyncio.CancelledError:
            pending.future.add_done_callback(_consume)
            if queued:
                self._withdraw(pending)
            raise

    async def stop(self, grace: float) -> None:
        """Refuse new rows, commit what is queued within ``grace`` seconds, then end the writer.

        Callers whose rows were not committed by then get ``StateStoreError``; none is left waiting.
        """
        self._closing = True
        task, self._task = self._task, None
        if task is None:
            return
        try:
            if not task.done():
                await asyncio.wait_for(self._queue.join(), grace)
        except TimeoutError:
            log.warning("%s: %d event(s) not committed within %.1fs of close",
                        self._where, self._queue.qsize(), grace)
        finally:  # also when we are cancelled ourselves: the writer never outlives the store
            task.cancel()
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                log.error("%s: the writer failed", self._where, exc_info=task.exception())

    # --- internals ------------------------------------------------------------------------------------

    def _unavailable(self, what: str) -> StateStoreUnavailable:
        return StateStoreUnavailable(f"{self._where}: {what}", self._retry_after)

    def _closed_error(self) -> StateStoreError:
        return self._unavailable("closed before the event was committed; it was not accepted")

    def _withdraw(self, pending: _Pending) -> bool:
        """Withdraw a row not sealed yet; False when its batch is already being committed."""
        with self._lock:
            if pending.state == _WAITING:
                pending.state = _WITHDRAWN
            return pending.state == _WITHDRAWN

    def _seal(self, batch: list[_Pending]) -> None:
        """In the transaction, before COMMIT: refuse if any row was withdrawn, else seal them all."""
        with self._lock:
            if any(p.state == _WITHDRAWN for p in batch):
                raise Withdrawn
            for p in batch:
                p.state = _SEALED

    async def _run(self) -> None:
        taken: list[_Pending] = []  # got from the queue, task_done not yet called
        try:
            while True:
                if not taken:
                    taken = [await self._queue.get()]
                while len(taken) < self._max_batch:
                    try:
                        taken.append(self._queue.get_nowait())
                    except asyncio.QueueEmpty:
                        break
                batch = [p for p in taken if p.state != _WITHDRAWN]  # withdrawn: their callers are gone
                error: StateStoreError | None = None
                again = False
                if batch:
                    try:
                        await self._write([p.row for p in batch], functools.partial(self._seal, batch))
                    except Withdrawn:
                        again = True  # rolled back: write the rows still wanted at once
                    except Exception as exc:
                        error = self._unavailable(f"could not write events ({describe(exc)})")
                        log.error("%s: could not write %d event(s) (%s)", self._where, len(batch),
                                  describe(exc))
                if again:
                    keep = [p for p in taken if p.state == _WAITING]
                    for _ in range(len(taken) - len(keep)):
                        self._queue.task_done()
                    taken = keep
                    continue
                for pending in batch:
                    if not pending.future.done() and pending.state != _WITHDRAWN:
                        if error is None:
                            pending.future.set_result(None)
                        else:
                            pending.future.set_exception(error)
                for _ in taken:
                    self._queue.task_done()
                taken = []
        finally:
            self._stopped = True
            error = self._closed_error()
            while True:  # the unfinished batch (commit state unknown: report failure) and the queue
                for pending in taken:
                    if not pending.future.done() and pending.state != _WITHDRAWN:
                        pending.future.set_exception(error)
                    self._queue.task_done()
                try:
                    taken = [self._queue.get_nowait()]
                except asyncio.QueueEmpty:
                    break
