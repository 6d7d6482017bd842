"""Group commit: one writer task inserts the rows of many concurrent callers in one transaction each."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from router.errors import StateStoreError
from router.state.errors import describe

log = logging.getLogger("router.state")


@dataclass(slots=True)
class _Pending:
    row: dict[str, Any]
    future: asyncio.Future[None]


Write = Callable[[list[dict[str, Any]]], Awaitable[object]]
"""Inserts the rows in one transaction (one ``executemany``); committed when it returns."""


class GroupCommitWriter:
    """Insert rows in batches with ``write``; ``submit`` returns once its row is committed.

    The writer task drains the bounded queue into one ``write`` (one transaction) per batch, so N concurrent
    callers cost about one commit, not N. A caller cancelled while waiting does not withdraw its row:
    once queued, a row is written whole or not at all (at-least-once; the caller saw no acknowledgement).
    """

    def __init__(
        self, write: Write, *, where: str, max_pending: int = 2048, max_batch: int = 512,
    ) -> None:
        self._write = write
        self._where = where
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max_pending)
        self._task: asyncio.Task[None] | None = None
        self._closing = False  # no new submissions
        self._stopped = False  # the writer task has ended; nothing queued will be written

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="state-store-writer")

    async def submit(self, row: dict[str, Any]) -> None:
        """Queue ``row`` and wait until its transaction committed; raises ``StateStoreError``."""
        if self._closing or self._task is None:
            raise StateStoreError(f"{self._where}: the store is closed; the event was not accepted")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(row, future))  # waits for room: backpressure, nothing queued yet
        if self._stopped and not future.done():
            # The writer ended while this caller waited for room: nobody will write the row.
            future.set_exception(self._closed_error())
        await future

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

    def _closed_error(self) -> StateStoreError:
        return StateStoreError(f"{self._where}: closed before the event was committed; it was not accepted")

    async def _run(self) -> None:
        batch: list[_Pending] = []
        try:
            while True:
                batch = [await self._queue.get()]
                while len(batch) < self._max_batch:
                    try:
                        batch.append(self._queue.get_nowait())
                    except asyncio.QueueEmpty:
                        break
                error: StateStoreError | None = None
                try:
                    await self._write([p.row for p in batch])
                except Exception as exc:
                    error = StateStoreError(f"{self._where}: could not write events ({describe(exc)})")
                    log.error("%s: could not write %d event(s) (%s)", self._where, len(batch), describe(exc))
                for pending in batch:
                    if not pending.future.done():  # done: the caller was cancelled; row written anyway
                        if error is None:
                            pending.future.set_result(None)
                        else:
                            pending.future.set_exception(error)
                    self._queue.task_done()
                batch = []
        finally:
            self._stopped = True
            error = self._closed_error()
            while True:  # the unfinished batch (commit state unknown: report failure) and the queue
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                    self._queue.task_done()
                try:
                    batch = [self._queue.get_nowait()]
                except asyncio.QueueEmpty:
                    break
