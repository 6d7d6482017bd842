"""The history recorder (``router.core.history``) over a real SQLite store: recording never waits for the
store, reads see what is not written yet, a full buffer drops its oldest changes and counts them, shutdown
writes what is buffered, the logs tail is redacted and cut, payloads only when asked for."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from router.core.history import LOG_TAIL, HistoryRecorder
from router.invocation import Invocation, Result
from router.metrics import Metrics
from router.redaction import REDACTOR, install
from router.state import StateStore
from tests.unit.core.helpers import make_config
from tests.waiting import until

CONFIG = make_config({"kept": {"history": {"payloads": True, "max_payload": 8}}, "bare": {},
                      "off": {"history": {"enabled": False}}})


@pytest.fixture
async def recorder(store: StateStore, metrics: Metrics) -> AsyncIterator[HistoryRecorder]:
    rec = HistoryRecorder(store, CONFIG, metrics, flush_interval=3600.0)  # written at close only
    rec.start()
    try:
        yield rec
    finally:
        await rec.close()


def dropped(metrics: Metrics, reason: str) -> float:
    return metrics.registry.get_sample_value("router_history_dropped_total", {"reason": reason}) or 0.0


async def test_reads_see_buffered_changes_and_close_writes_them(store: StateStore, metrics: Metrics) -> None:
    rec = HistoryRecorder(store, CONFIG, metrics, flush_interval=3600.0)
    rec.start()
    inv = Invocation(function="kept", payload=b'{"long": "payload"}', source="webhook", route="r",
                     invocation_type="async")
    rec.accepted(inv)
    row = await rec.lookup(inv.request_id)
    assert row is not None
    assert row["status"] == "queued"
    assert (await store.invocation(inv.request_id, "destination"))[0] is None  # not written yet
    assert row["payload"] == b'{"long":'
    assert row["payload_truncated"]
    await rec.close()
    stored, _ = await store.invocation(inv.request_id, "destination")
    assert stored is not None
    assert stored["status"] == "queued"


async def test_functions_without_history_are_not_recorded(recorder: HistoryRecorder) -> None:
    inv = Invocation(function="off", payload=b"{}", source="webhook")
    recorder.sync_done(inv, Result(payload=b"1"), 0.01)
    assert await recorder.lookup(inv.request_id) is None
    bare = Invocation(function="bare", payload=b'{"a":1}', source="webhook")
    recorder.sync_done(bare, Result(payload=b"1"), 0.01)
    row = await recorder.lookup(bare.request_id)
    assert row is not None
    assert row["payload"] is None
    assert row["status"] == "succeeded"


async def test_a_full_buffer_drops_the_oldest_and_counts(store: StateStore, metrics: Metrics) -> None:
    rec = HistoryRecorder(store, CONFIG, metrics, capacity=3, flush_interval=3600.0)
    invs = [Invocation(function="bare", payload=b"{}", source="webhook") for _ in range(5)]
    for inv in invs:
        rec.sync_done(inv, Result(payload=b"1"), 0.01)
    assert dropped(metrics, "buffer_full") == 2
    await rec.close()
    assert [r["request_id"] for r in await store.invocations(function="bare")] == [
        i.request_id for i in reversed(invs[2:])]


async def test_the_writer_flushes_in_the_background(store: StateStore, metrics: Metrics) -> None:
    rec = HistoryRecorder(store, CONFIG, metrics, flush_interval=0.01)
    rec.start()
    try:
        inv = Invocation(function="bare", payload=b"{}", source="sqs", route="q")
        rec.sync_done(inv, Result.error("ValueError", "bad input"), 0.5)
        rows = await until(lambda: store.invocations(function="bare"), what="the row written")
        assert rows[0]["status"] == "failed"
        assert (rows[0]["error_type"], rows[0]["error_message"]) == ("ValueError", "bad input")
    finally:
        await rec.close()


async def test_logs_are_redacted_and_cut_to_their_tail(store: StateStore, metrics: Metrics) -> None:
    install({"s3cr3t-value": "API_KEY"})
    try:
        rec = HistoryRecorder(store, CONFIG, metrics, flush_interval=3600.0)
        inv = Invocation(function="bare", payload=b"{}", source="webhook")
        logs = "x" * 10_000 + "key=s3cr3t-value end\n"
        rec.sync_done(inv, Result(payload=b"1", logs=logs), 0.01)
        await rec.close()
    finally:
        REDACTOR.clear()
    row, _ = await store.invocation(inv.request_id, "destination")
    assert row is not None
    assert len(row["logs"]) == LOG_TAIL
    assert row["logs"].endswith("key=${API_KEY} end\n")
    assert "s3cr3t" not in row["logs"]


class StalledStore:
    """A store whose writes never finish (a database that stopped answering)."""

    def __init__(self) -> None:
        self.calls = 0

    async def record_history(self, changes: object, prune: object = None) -> set[str]:
        self.calls += 1
        await asyncio.Event().wait()
        return set()


async def test_close_is_bounded_in_time_and_counts_what_it_could_not_write(metrics: Metrics) -> None:
    store = StalledStore()
    rec = HistoryRecorder(store, CONFIG, metrics, flush_interval=3600.0)  # type: ignore[arg-type]
    for _ in range(3):
        inv = Invocation(function="bare", payload=b"{}", source="webhook")
        rec.sync_done(inv, Result(payload=b"1"), 0.01)
    async with asyncio.timeout(5):
        await rec.close(grace=0.1)
    assert store.calls == 1
    assert dropped(metrics, "shutdown") == 3
