"""Run one whole store transaction: SQLite in a dedicated thread, PostgreSQL on the asyncpg engine.

A transaction is a plain function of a synchronous SQLAlchemy ``Connection``. On SQLite it runs in one
hop to the single thread that owns the only connection (SQLite serialises writers anyway), instead of
one hop per DBAPI call as an async driver does; on PostgreSQL it runs through ``run_sync`` inside an
``AsyncConnection`` transaction, so the asyncpg pool serves concurrent callers as before.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from router.errors import StateStoreError
from router.state.errors import describe

log = logging.getLogger("router.state")

T = TypeVar("T")
Transaction = Callable[[sa.Connection], T]
Undo = Callable[[T], Callable[[sa.Connection], object] | None]
"""Given a transaction's result, the transaction that undoes it (None: nothing to undo)."""


class Runner(Protocol):
    async def transact(self, fn: Transaction[T], *, undo: Undo[T] | None = None) -> T:
        """Run ``fn`` in one transaction, committed when it returns.

        Cancelled while ``fn`` runs, it still commits or rolls back whole; ``undo`` (if given) then runs
        on its result in a transaction of its own, where the runner supports that (SQLite).
        """
        ...

    async def close(self) -> None: ...


class SqliteRunner:
    """Owns a sync pysqlite engine and one connection, used by one worker thread only."""

    def __init__(self, url: URL, *, where: str, **options: Any) -> None:
        """``url`` names any SQLite driver; the sync ``pysqlite`` one is used."""
        self._where = where
        self._engine = sa.create_engine(url.set(drivername="sqlite+pysqlite"), **options)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="router-state"
        )
        self._conn: sa.Connection | None = None  # the worker thread's alone
        self._closed = False  # set in the worker thread: no transaction runs after close

    @property
    def engine(self) -> sa.Engine:
        """For event listeners (PRAGMAs at connect); never used outside the worker thread otherwise."""
        return self._engine

    async def transact(self, fn: Transaction[T], *, undo: Undo[T] | None = None) -> T:
        try:
            job = self._executor.submit(self._run, fn)
        except RuntimeError:  # the executor was shut down
            raise StateStoreError(f"{self._where}: the store is closed") from None
        try:
            # Cancelling this await cancels the job only if it has not started; a started one finishes.
            return await asyncio.wrap_future(job)
        except asyncio.CancelledError:
            if undo is not None:
                job.add_done_callback(lambda done: self._undo_abandoned(done, undo))
            raise

    async def close(self) -> None:
        """Finish the transactions already submitted, then close the connection and end the thread."""
        try:
            job = self._executor.submit(self._shutdown)
        except RuntimeError:
            return  # already closed
        self._executor.shutdown(wait=False)  # nothing new is accepted; the thread ends after the queue
        await asyncio.shield(asyncio.wrap_future(job))  # _shutdown never raises

    # --- in the worker thread ---------------------------------------------------------------------------

    def _run(self, fn: Transaction[T]) -> T:
        if self._closed:
            raise StateStoreError(f"{self._where}: the store is closed")
        conn = self._conn
        if conn is None:
            conn = self._conn = self._engine.connect()
        try:
            with conn.begin():
                return fn(conn)
        except BaseException:
            if conn.invalidated:  # the DBAPI connection is gone: connect afresh next time
                self._conn = None
                conn.close()
            raise

    def _shutdown(self) -> None:
        self._closed = True
        try:
            if self._conn is not None:
                self._conn.close()
            self._engine.dispose()
        except Exception as exc:
            log.warning("%s: error while closing (%s)", self._where, describe(exc))
        finally:
            self._conn = None

    def _undo_abandoned(self, done: concurrent.futures.Future[T], undo: Undo[T]) -> None:
        """Runs when a job whose caller was cancelled ends: hand back what it did."""
        if done.cancelled() or done.exception() is not None:
            return
        follow_up = undo(done.result())
        if follow_up is None:
            return
        try:
            self._executor.submit(self._run, follow_up).add_done_callback(self._log_undo_failure)
        except RuntimeError:
            log.warning("%s: closed before a cancelled claim was handed back; its leases run out",
                        self._where)

    def _log_undo_failure(self, done: concurrent.futures.Future[object]) -> None:
        if not done.cancelled() and (exc := done.exception()) is not None:
            log.warning("%s: cannot hand back a cancelled claim (%s); its leases run out",
                        self._where, describe(exc))


class AsyncEngineRunner:
    """An async engine (asyncpg) with its pool; each transaction runs via ``run_sync``."""

    def __init__(self, url: URL, **options: Any) -> None:
        self._engine = create_async_engine(url, **options)

    async def transact(self, fn: Transaction[T], *, undo: Undo[T] | None = None) -> T:
        # Cancelled mid-transaction, the context manager rolls it back; undo is not needed.
        async with self._engine.begin() as conn:
            return await conn.run_sync(fn)

    async def close(self) -> None:
        await self._engine.dispose()
