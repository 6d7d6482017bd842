"""An enqueue that cannot commit within ``write_timeout`` fails with ``StateStoreUnavailable`` and its
event is never committed later (issue 9 defect 6); ``durability`` picks SQLite's synchronous mode.

The stall is real: another SQLite connection holds the database's write lock, so the store's INSERT
waits in its thread (busy timeout) past the caller's deadline, then goes on once the lock is free.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from router.errors import StateStoreUnavailable, Unavailable
from router.state import StateStore
from router.state.writer import GroupCommitWriter, Seal

FAR_FUTURE = 1e12


async def _enqueue(store: StateStore, request_id: str) -> None:
    await store.enqueue(function="f", request_id=request_id, payload=b"{}", source="webhook", route="r",
                        now=100.0)


async def test_a_write_stalled_past_its_timeout_is_withdrawn_and_never_committed(tmp_path: Path) -> None:
    store = StateStore.from_url("sqlite:///state.db", tmp_path, write_timeout=0.3)
    await store.open()
    try:
        blocker = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the write lock: the store's INSERT waits for it
        try:
            # Both rows go into one batch whose INSERT waits for the lock; both callers give up at their
            # deadline. (Rows still queued behind a stalled batch: see the writer's own test below.)
            results = await asyncio.gather(_enqueue(store, "stuck"), _enqueue(store, "stuck-too"),
                                           return_exceptions=True)
        finally:
            blocker.execute("COMMIT")  # the stalled INSERT now goes on: the seal must roll it back
            blocker.close()
        for result in results:
            assert isinstance(result, StateStoreUnavailable), result
            assert isinstance(result, Unavailable)
            assert result.retry_after == 1
            assert "not committed within 0.3s" in str(result)
            assert "withdrawn and not accepted" in str(result)
        await _enqueue(store, "after")  # written after the stalled batch was rolled back
        events = await store.claim("f", 100, FAR_FUTURE, 10.0)
        assert [e.request_id for e in events] == ["after"]
    finally:
        await store.close()


async def test_writer_drops_withdrawn_rows_and_callers_waiting_for_room_give_up() -> None:
    """The writer's contract on its own: a write that stalls until released, then seals and commits."""
    release = asyncio.Event()
    committed: list[str] = []

    async def write(rows: list[dict[str, Any]], seal: Seal) -> None:
        await release.wait()
        seal()
        committed.extend(row["id"] for row in rows)

    writer = GroupCommitWriter(write, where="test", timeout=0.2, max_pending=1, max_batch=1)
    writer.start()
    try:
        # "a" is taken by the stalled write, "b" fills the queue, "c" waits for room: all give up.
        results = await asyncio.gather(*(writer.submit({"id": i}) for i in "abc"), return_exceptions=True)
        messages = [str(r) for r in results]
        assert all(isinstance(r, StateStoreUnavailable) for r in results), results
        assert "withdrawn and not accepted" in messages[0]
        assert "withdrawn and not accepted" in messages[1]
        assert "events waiting to be written" in messages[2]
        release.set()
        await writer.submit({"id": "d"})
        assert committed == ["d"]  # "a" was refused at its seal, "b" dropped unwritten, "c" never queued
    finally:
        await writer.stop(1.0)


@pytest.mark.parametrize(("durability", "expected"), [("fsync", 2), ("normal", 1)])
async def test_durability_sets_sqlite_synchronous(tmp_path: Path, durability: str, expected: int) -> None:
    store = StateStore.from_url("sqlite:///state.db", tmp_path, durability=durability)
    await store.open()
    try:
        mode = await store._transact(
            "pragma", lambda conn: conn.exec_driver_sql("PRAGMA synchronous").scalar())
        assert mode == expected  # FULL = 2, NORMAL = 1
    finally:
        await store.close()


async def test_a_commit_under_way_at_the_deadline_is_reported_as_maybe_committed() -> None:
    """The one ambiguous window: sealed (the COMMIT is on its way) when the caller's time runs out."""
    release = asyncio.Event()
    committed: list[str] = []

    async def write(rows: list[dict[str, Any]], seal: Seal) -> None:
        seal()
        await release.wait()  # the COMMIT, held up
        committed.extend(row["id"] for row in rows)

    writer = GroupCommitWriter(write, where="test", timeout=0.2)
    writer.start()
    try:
        with pytest.raises(StateStoreUnavailable, match=r"did not complete within 0\.2s; the event was not "
                           r"accepted \(it may still be committed\)"):
            await writer.submit({"id": "a"})
        release.set()
        await writer.submit({"id": "b"})
        assert committed == ["a", "b"]  # "a" landed after its 503: the client's retry makes a duplicate
    finally:
        await writer.stop(1.0)
