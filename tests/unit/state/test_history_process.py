"""The SQLite history's writer process (``router.state.history_process``) behind the state store: whole
rows and prunes are committed by a process of its own, readable when the write returns; a process that
died or failed a batch costs no row (the store writes that batch itself, and starts the process again
later); the process ends with the store."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from router.state import StateStore, history_process
from router.state.history import Change, whole_row
from tests.stores import SQLITE_URL
from tests.waiting import process_gone, until


def sync_row(rid: str, at: float, function: str = "f") -> tuple[object, ...]:
    return whole_row([Change(rid, function, at, "succeeded",
                             {"route": "r", "source": "webhook", "invocation_type": "sync", "started_at": at},
                             {"finished_at": at + 0.5, "result": b'{"ok":1}'},
                             {"attempt": 1, "started_at": at, "ended_at": at + 0.5})])


@pytest.fixture
async def store(tmp_path: Path):
    store = StateStore.from_url(SQLITE_URL, tmp_path)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def writer(store: StateStore) -> history_process.HistoryProcess:
    process = store._history_process  # the store's own: what these tests are about
    assert process is not None
    return process


async def ids(store: StateStore, function: str = "f") -> list[str]:
    return [r["request_id"] for r in await store.invocations(function=function, limit=100)]


async def test_whole_rows_and_prunes_are_committed_by_the_process(store: StateStore) -> None:
    await store.record_history([], rows=[sync_row(f"a-{i}", float(i)) for i in range(6)])
    pid = writer(store).pid
    assert pid is not None
    assert pid != os.getpid()
    assert not process_gone(pid)
    row, _ = await store.invocation("a-5", "destination")  # readable as soon as the write returned
    assert row is not None
    assert (row["status"], row["result"], row["invocation_type"]) == ("succeeded", b'{"ok":1}', "sync")
    assert row["attempt_log"] == '[{"attempt":1,"started_at":5.0,"ended_at":5.5}]'
    # prunes by count (newest 3 kept) and by age (started before 4.0), in the same transaction as rows
    await store.record_history([], rows=[sync_row("a-6", 6.0)], prune={"f": (4.0, 3)})
    assert await ids(store) == ["a-6", "a-5", "a-4"]
    assert writer(store).pid == pid  # one process, kept
    await store.record_history([], prune={"f": (6.0, 100)})  # a prune alone
    assert await ids(store) == ["a-6"]


async def test_the_process_ends_with_the_store(tmp_path: Path) -> None:
    store = StateStore.from_url(SQLITE_URL, tmp_path)
    await store.open()
    await store.record_history([], rows=[sync_row("x", 1.0)])
    pid = writer(store).pid
    assert pid is not None
    await store.close()  # waits for it: it has exited and been reaped
    assert process_gone(pid)
    again = StateStore.from_url(SQLITE_URL, tmp_path)
    await again.open()
    try:
        assert await ids(again) == ["x"]
    finally:
        await again.close()


async def test_a_killed_process_loses_no_row_and_is_started_again(
        store: StateStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(history_process, "RESTART_EVERY", 0.0)
    await store.record_history([], rows=[sync_row("before", 1.0)])
    pid = writer(store).pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with caplog.at_level(logging.WARNING, logger="router.state"):
        await store.record_history([], rows=[sync_row("during", 2.0)])  # the store writes it itself
    assert "history writer process stopped" in caplog.text
    assert process_gone(pid)
    assert sorted(await ids(store)) == ["before", "during"]
    await store.record_history([], rows=[sync_row("after", 3.0)])  # a new process
    new = writer(store).pid
    assert new is not None
    assert new != pid
    assert sorted(await ids(store)) == ["after", "before", "during"]


async def test_no_restart_sooner_than_restart_every(store: StateStore,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history_process, "RESTART_EVERY", 3600.0)
    await store.record_history([], rows=[sync_row("one", 1.0)])
    pid = writer(store).pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    for i in range(3):  # written by the store meanwhile, no process started
        await store.record_history([], rows=[sync_row(f"two-{i}", 2.0 + i)])
        assert writer(store).pid is None
    assert len(await ids(store)) == 4


async def test_a_batch_the_process_refuses_is_written_by_the_store(
        store: StateStore, caplog: pytest.LogCaptureFixture) -> None:
    process = writer(store)
    broken = dataclasses.replace(process._statements, prune_by_age="DELETE FROM no_such_table")
    process._statements = broken
    with caplog.at_level(logging.WARNING, logger="router.state"):
        await store.record_history([], rows=[sync_row(f"b-{i}", float(i)) for i in range(3)],
                                   prune={"f": (1.0, 100)})
    assert "could not write a batch" in caplog.text
    assert "no_such_table" in caplog.text
    assert await ids(store) == ["b-2", "b-1"]  # rows and prune, by the store: b-0 started before 1.0
    assert process.pid is not None  # still running: it refused one batch, it did not end


async def test_close_ends_a_process_stuck_on_a_batch_within_its_grace(store: StateStore,
                                                                     tmp_path: Path) -> None:
    process = writer(store)
    await store.record_history([], rows=[sync_row("first", 1.0)])
    pid = process.pid
    assert pid is not None
    blocker = sqlite3.connect(tmp_path / "state" / "router.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # holds the write lock: the process waits for it (busy timeout)
    try:
        stuck = asyncio.create_task(process.write([sync_row("second", 2.0)]))
        await until(lambda: process._owed == 1, what="the batch in the pipe, its reply awaited")
        # Ends within its grace, not after the process's 30 s busy timeout (the deadline is 10 s)
        async with asyncio.timeout(10):
            await process.close(grace=0.5)
        assert process_gone(pid)
        with pytest.raises(history_process.HistoryProcessFailed):
            await stuck
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
