"""The history recorder (``router.core.history``) over a real SQLite store: recording never waits for the
store, reads see what is not written yet, a full buffer drops its oldest changes and counts them, shutdown
writes what is buffered, the logs tail is redacted and cut, payloads only when asked for."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.clock import SystemClock
from router.core.history import BUSY, BUSY_EVERY, LOG_TAIL, HistoryRecorder, tail_bytes
from router.invocation import Invocation, Result
from router.metrics import Metrics
from router.redaction import REDACTOR, install
from router.state import StateStore
from tests.clocks import WallClock
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
    rec.attempt_started(inv)
    row = await rec.lookup(inv.request_id)
    assert row is not None
    assert row["status"] == "running"
    assert (await store.invocation(inv.request_id, "destination"))[0] is None  # not written yet
    assert row["payload"] == b'{"long":'
    assert row["payload_truncated"]
    await rec.close()
    stored, _ = await store.invocation(inv.request_id, "destination")
    assert stored is not None
    assert (stored["status"], stored["route"], stored["attempts"]) == ("running", "r", 1)


class CountingStore:
    """The real store, with the history batches it was given kept for the test to look at."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.batches: list[tuple[list[str], set[str]]] = []

    async def record_history(self, changes: list[Any], prune: Any = None, rows: Any = ()) -> set[str]:
        # (the request ids of the changes merged with what is stored, those of the whole rows written: a
        # whole row is a tuple in column order, request id first)
        self.batches.append(([c.request_id for c in changes], {r[0] for r in rows}))
        return await self.store.record_history(changes, prune, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def test_an_async_event_that_ends_within_the_flush_interval_is_written_once_whole(
        store: StateStore, metrics: Metrics) -> None:
    counting = CountingStore(store)
    rec = HistoryRecorder(counting, CONFIG, metrics, flush_interval=3600.0)  # type: ignore[arg-type]
    inv = Invocation(function="bare", payload=b"{}", source="webhook", route="r", invocation_type="async")
    rec.accepted(inv)
    rec.attempt_started(inv)
    rec.attempt_ended(inv, Result(payload=b'"done"', log_text="START\nEND\n"), 0.01)
    rec.finished("bare", inv.request_id, "succeeded")
    retried = Invocation(function="bare", payload=b"{}", source="webhook", route="r", invocation_type="async",
                         attempt=2)  # its first attempt was written earlier: that row is read and merged
    rec.attempt_started(retried)
    await rec.close()
    assert counting.batches == [([retried.request_id], {inv.request_id})]
    row, _ = await store.invocation(inv.request_id, "destination")
    assert row is not None
    assert (row["status"], row["route"], row["attempts"], row["result"], row["logs"]) == (
        "succeeded", "r", 1, b'"done"', "START\nEND\n")


async def test_an_event_waiting_in_the_store_queue_is_not_written_until_it_runs(
        store: StateStore, metrics: Metrics) -> None:
    counting = CountingStore(store)
    rec = HistoryRecorder(counting, CONFIG, metrics, flush_interval=0.01)  # type: ignore[arg-type]
    rec.start()
    try:
        waiting = Invocation(function="bare", payload=b"{}", source="webhook", route="r",
                             invocation_type="async")
        await store.enqueue(function="bare", request_id=waiting.request_id, payload=b"{}", source="webhook",
                            route="r", now=1.0)
        rec.accepted(waiting)
        dropped_unrun = Invocation(function="bare", payload=b"{}", source="schedule", route="s",
                                   invocation_type="async")
        rec.accepted(dropped_unrun)
        await until(lambda: not rec._entries, what="the waiting entries let go")
        assert counting.batches == []
        # the listing shows it from the queue all the same
        listed = await rec.invocations(function="bare")
        assert [(r["request_id"], r["status"]) for r in listed] == [(waiting.request_id, "queued")]
        # an event that ends without running (too old) is written with what it was
        enqueued_at = time.time() - 5.0
        rec.finished("bare", dropped_unrun.request_id, "dropped", route="s", source="schedule",
                     enqueued_at=enqueued_at)
        rows = await until(lambda: store.invocations(function="bare", status="dropped"), what="the drop")
        assert (rows[0]["route"], rows[0]["source"], rows[0]["started_at"]) == ("s", "schedule", enqueued_at)
    finally:
        await rec.close()


async def test_with_a_rabbitmq_async_queue_a_waiting_event_is_written(store: StateStore,
                                                                     metrics: Metrics) -> None:
    config = make_config({"bare": {}}, async_queue="amqp://guest:guest@127.0.0.1:5672/")
    rec = HistoryRecorder(store, config, metrics, flush_interval=3600.0)
    inv = Invocation(function="bare", payload=b"{}", source="webhook", route="r", invocation_type="async")
    rec.accepted(inv)
    await rec.close()
    row, _ = await store.invocation(inv.request_id, "destination")
    assert row is not None
    assert row["status"] == "queued"


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
        rec.sync_done(inv, Result(payload=b"1", log_text=logs), 0.01)
        await rec.close()
    finally:
        REDACTOR.clear()
    row, _ = await store.invocation(inv.request_id, "destination")
    assert row is not None
    assert len(row["logs"]) == LOG_TAIL
    assert row["logs"].endswith("key=${API_KEY} end\n")
    assert "s3cr3t" not in row["logs"]


async def test_the_log_tail_kept_is_4_kb_of_utf_8_not_4096_characters(store: StateStore,
                                                                       metrics: Metrics) -> None:
    rec = HistoryRecorder(store, CONFIG, metrics, flush_interval=3600.0)
    inv = Invocation(function="bare", payload=b"{}", source="webhook")
    logs = "d\u00e9but " + "\u00e9t\u00e9 \u2603 " * 2_000 + "fin\n"  # 2 and 3 bytes a character
    rec.sync_done(inv, Result(payload=b"1", log_text=logs), 0.01)
    await rec.close()
    row, _ = await store.invocation(inv.request_id, "destination")
    assert row is not None
    kept = row["logs"].encode()
    assert LOG_TAIL - 3 <= len(kept) <= LOG_TAIL
    assert logs.endswith(row["logs"])


@given(st.text(alphabet=st.characters(codec="utf-8") | st.characters(categories=["Cs"]),
               max_size=3 * LOG_TAIL))
def test_tail_bytes_is_the_longest_suffix_of_whole_characters_within_the_limit(logs: str) -> None:
    tail = tail_bytes(logs)
    size = len(tail.encode("utf-8", "surrogatepass"))
    assert logs.endswith(tail)
    assert size <= LOG_TAIL
    longer = logs[-len(tail) - 1:] if len(tail) < len(logs) else None
    if longer is not None:  # one more character would not fit
        assert len(longer.encode("utf-8", "surrogatepass")) > LOG_TAIL


class StalledStore:
    """A store whose writes never finish (a database that stopped answering)."""

    def __init__(self) -> None:
        self.calls = 0

    async def record_history(self, changes: object, prune: object = None, whole: object = None,
                             rows: object = ()) -> set[str]:
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


async def test_a_sync_invocation_is_held_and_written_as_one_whole_row(store: StateStore,
                                                                     metrics: Metrics) -> None:
    counting = CountingStore(store)
    rec = HistoryRecorder(counting, CONFIG, metrics, flush_interval=3600.0)  # type: ignore[arg-type]
    inv = Invocation(function="kept", payload=b'{"long": "payload"}', source="webhook", route="r", attempt=1)
    result = Result.error("ValueError", "bad input", log_text="START\nboom\nEND\n")
    before = time.time()
    rec.sync_done(inv, result, 0.25)
    seen = await rec.lookup(inv.request_id)  # read through the buffer before it is written
    await rec.close()
    assert counting.batches == [([], {inv.request_id})]  # one whole row, nothing read back
    stored, _ = await store.invocation(inv.request_id, "destination")
    assert stored is not None
    assert seen is not None
    for row in (seen, stored):
        assert (row["function"], row["route"], row["source"], row["invocation_type"], row["status"]) == (
            "kept", "r", "webhook", "sync", "failed")
        assert (row["error_type"], row["error_message"], row["logs"]) == ("ValueError", "bad input",
                                                                          "START\nboom\nEND\n")
        assert (row["payload"], row["payload_truncated"]) == (b'{"long":', True)
        assert row["duration"] == 0.25
        assert row["finished_at"] - row["started_at"] == pytest.approx(0.25)
        assert before <= row["finished_at"] <= time.time()
        assert row["attempts"] == 1
        assert not row["result_truncated"]
    attempts = json.loads(stored["attempt_log"])
    assert [(a["attempt"], a["outcome"], a["error_type"]) for a in attempts] == [(1, "error", "ValueError")]


async def test_ended_sync_invocations_beyond_max_count_are_let_go_unwritten(store: StateStore,
                                                                           metrics: Metrics) -> None:
    """More ended sync invocations of a function pending at a flush than its ``max_count``: only its newest
    ``max_count`` by start (what the prune keeps) are made and written; the others are not in the batch,
    and read as unknown, as pruned rows do. Another function's rows are untouched."""
    config = make_config({"busy": {"history": {"max_count": 3}}, "bare": {}})
    counting = CountingStore(store)
    now = [1_000_000.0]
    rec = HistoryRecorder(counting, config, metrics, flush_interval=3600.0,  # type: ignore[arg-type]
                          clock=WallClock(lambda: now[0]))
    # (ended at, duration): started at 990, 999.5, 995, 1002, 1003.9, 1004; ended in that order
    shapes = [(1000.0, 10.0), (1001.0, 1.5), (1002.0, 7.0), (1003.0, 1.0), (1004.0, 0.1), (1005.0, 1.0)]
    busy = []
    for ended, duration in shapes:
        now[0] = 1_000_000.0 + ended
        inv = Invocation(function="busy", payload=b"{}", source="webhook")
        busy.append(inv)
        rec.sync_done(inv, Result(payload=b"1"), duration)
    other = [Invocation(function="bare", payload=b"{}", source="webhook") for _ in range(5)]
    for inv in other:
        rec.sync_done(inv, Result(payload=b"1"), 0.01)
    await rec.close()
    kept = {busy[i].request_id for i in (3, 4, 5)}  # the three that started last
    assert counting.batches == [([], kept | {i.request_id for i in other})]
    stored = await store.invocations(function="busy")
    assert {r["request_id"] for r in stored} == kept
    for inv in busy[:3]:
        assert await rec.lookup(inv.request_id) is None
    assert len(await store.invocations(function="bare")) == 5
    assert dropped(metrics, "buffer_full") == 0


class AdvancedClock(SystemClock):
    """The system clock, with its monotonic time moved on by what the test adds to ``ahead``."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.ahead


async def test_a_busy_function_has_its_sync_rows_written_every_few_seconds(store: StateStore,
                                                                          metrics: Metrics) -> None:
    """A function with ``BUSY`` ended sync invocations or more pending at a flush (or its ``max_count``, if
    fewer) has them written (its newest ``max_count``), then not again, flush after flush, until
    ``BUSY_EVERY`` has passed. Meanwhile its invocations are read through the buffer, those beyond twice
    ``max_count`` let go as they end (oldest ended first, not counted as dropped), and a function with
    fewer pending is written at every flush."""
    config = make_config({"busy": {"history": {"max_count": 3}}, "hot": {}, "bare": {}})
    clock = AdvancedClock()
    rec = HistoryRecorder(store, config, metrics, flush_interval=0.01, clock=clock)
    rec.start()

    async def ids(function: str) -> set[str]:
        return {r["request_id"] for r in await store.invocations(function=function, limit=1000)}

    def run(function: str, n: int) -> list[str]:
        invs = [Invocation(function=function, payload=b"{}", source="webhook") for _ in range(n)]
        for inv in invs:
            rec.sync_done(inv, Result(payload=b"1"), 0.01)
        return [inv.request_id for inv in invs]

    try:
        first = run("busy", 4)
        hot = run("hot", BUSY)
        await until(lambda: _equal(ids("busy"), set(first[1:])), what="busy's newest 3 written")
        await until(lambda: _equal(ids("hot"), set(hot)), what="hot's written")
        second = run("busy", 7)  # 4 flushes' worth for a function that is not busy
        hot_later = run("hot", BUSY)
        marker = run("bare", 1)
        await until(lambda: _equal(ids("bare"), set(marker)), what="a later flush")
        assert await ids("busy") == set(first[1:])  # not written again yet
        assert await ids("hot") == set(hot)
        assert await rec.lookup(second[0]) is None  # beyond twice max_count: let go as it ended
        for rid in [*second[1:], hot_later[0]]:
            row = await rec.lookup(rid)
            assert row is not None
            assert row["status"] == "succeeded"
        assert dropped(metrics, "buffer_full") == 0
        clock.ahead += BUSY_EVERY
        await until(lambda: _equal(ids("busy"), set(second[-3:])), what="the next write, busy's newest 3")
        await until(lambda: _equal(ids("hot"), set(hot + hot_later)), what="the next write, hot's")
    finally:
        await rec.close()


async def test_a_full_buffer_first_lets_go_of_what_is_beyond_max_count(store: StateStore,
                                                                       metrics: Metrics) -> None:
    """The buffer full, a function's pending sync invocations beyond its ``max_count`` newest are let go
    (the prune would delete them) before anything is dropped and counted."""
    config = make_config({"busy": {"history": {"max_count": 2}}, "bare": {}})
    rec = HistoryRecorder(store, config, metrics, capacity=4, flush_interval=3600.0)
    busy = [Invocation(function="busy", payload=b"{}", source="webhook") for _ in range(4)]
    for inv in busy:
        rec.sync_done(inv, Result(payload=b"1"), 0.01)
    bare = Invocation(function="bare", payload=b"{}", source="webhook")
    rec.sync_done(bare, Result(payload=b"1"), 0.01)  # the buffer full: busy's two oldest let go
    assert dropped(metrics, "buffer_full") == 0
    assert [await rec.lookup(inv.request_id) is None for inv in busy] == [True, True, False, False]
    await rec.close()
    assert {r["request_id"] for r in await store.invocations()} == {
        busy[2].request_id, busy[3].request_id, bare.request_id}


async def _equal(got: Awaitable[set[str]], want: set[str]) -> bool:
    return await got == want


async def test_a_pending_sync_invocation_holds_plain_values_only(recorder: HistoryRecorder) -> None:
    """What ``sync_done`` keeps is a tuple of plain values, which the garbage collector stops tracking:
    thousands of them pending for a busy function add nothing to its collections."""
    inv = Invocation(function="bare", payload=b"{}", source="webhook")
    recorder.sync_done(inv, Result.error("ValueError", "bad input"), 0.01)
    gc.collect()
    pending = [v for p in recorder._done.values() for v in p.values()]
    assert len(pending) == 1
    assert not gc.is_tracked(pending[0])
