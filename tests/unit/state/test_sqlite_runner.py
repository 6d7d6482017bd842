"""SQLite runs each transaction whole in one thread: what a cancelled caller leaves behind."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from router.state import StateStore
from router.state.runner import SqliteRunner


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    store = StateStore.from_url("sqlite:///state/router.db", tmp_path)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def gate(monkeypatch: pytest.MonkeyPatch, store: StateStore
         ) -> tuple[threading.Event, threading.Event, threading.Event]:
    """Hold the next transaction in the store's thread: events (started, proceed, next one started)."""
    runner = store._runner
    assert isinstance(runner, SqliteRunner)
    started, proceed, then = threading.Event(), threading.Event(), threading.Event()
    real = runner._run

    def run(fn: Callable[[Any], Any]) -> Any:
        if not started.is_set():
            started.set()
            assert proceed.wait(10), "the test never let the transaction go on"
        else:
            then.set()
        return real(fn)

    monkeypatch.setattr(runner, "_run", run)
    return started, proceed, then


async def put(store: StateStore, n: int) -> None:
    for i in range(n):
        await store.enqueue(function="f", request_id=f"r{i}", payload=b"{}", source="webhook",
                            route=None, now=100.0)


async def test_a_claim_cancelled_while_it_runs_is_handed_back(
        store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    await put(store, 5)
    started, proceed, undo_started = gate(monkeypatch, store)
    claim = asyncio.create_task(store.claim("f", 3, now=100.0, lease=3600.0))
    assert await asyncio.to_thread(started.wait, 10)  # the claim's transaction is in the thread

    claim.cancel()
    with pytest.raises(asyncio.CancelledError):
        await claim
    proceed.set()  # it commits (3 leased), then its leases are released in a transaction of its own

    assert await asyncio.to_thread(undo_started.wait, 10), "the cancelled claim was not handed back"

    assert await store.depth() == {"f": 5}  # runs after the hand-back: one thread, in order
    assert len(await store.claim("f", 10, now=100.0, lease=3600.0)) == 5


async def test_a_transaction_cancelled_before_it_starts_never_runs(
        store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    await put(store, 4)
    started, proceed, _ = gate(monkeypatch, store)
    blocker = asyncio.create_task(store.depth())  # holds the thread
    assert await asyncio.to_thread(started.wait, 10)
    claim = asyncio.create_task(store.claim("f", 2, now=100.0, lease=3600.0))
    complete = asyncio.create_task(store.complete(1))
    await asyncio.sleep(0)  # both are queued behind the blocker

    claim.cancel()
    complete.cancel()
    # Both callers end while the blocker still holds the thread, so their jobs are cancelled before
    # the thread could pick them up (setting `proceed` first would race the cancellation).
    results = await asyncio.gather(claim, complete, return_exceptions=True)
    proceed.set()

    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert await blocker == {"f": 4}
    assert await store.depth() == {"f": 4}  # nothing claimed, nothing deleted


async def test_failed_transaction_rolls_back_and_the_store_goes_on(store: StateStore) -> None:
    await put(store, 1)

    def half_then_fail(conn: Any) -> None:
        from router.state.schema import async_events

        conn.execute(async_events.delete())
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await store._transact("test", half_then_fail)

    assert await store.depth() == {"f": 1}


async def test_close_finishes_queued_transactions_then_refuses_new_ones(tmp_path: Path) -> None:
    store = StateStore.from_url("sqlite:///state/router.db", tmp_path)
    await store.open()
    await put(store, 3)
    runner = store._runner
    assert runner is not None
    pending = [asyncio.create_task(store.complete(i)) for i in (1, 2)]
    await asyncio.sleep(0)  # submitted to the thread before close

    await store.close()

    assert await asyncio.gather(*pending) == [None, None]
    with pytest.raises(Exception, match="the store is closed"):
        await runner.transact(lambda conn: None)
    reopened = StateStore.from_url("sqlite:///state/router.db", tmp_path)
    await reopened.open()
    try:
        assert await reopened.depth() == {"f": 1}
    finally:
        await reopened.close()
