"""``FailedEvents``: keeping never raises, redrives run at most once and are handed back at shutdown,
retention prunes; over a real SQLite store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from router.clock import SystemClock
from router.core.failures import FailedEvents, RedriveBusy
from router.invocation import Invocation, Result
from router.metrics import Metrics
from router.state import StateStore
from router.state.failures import FailureFilter
from tests.unit.core.conftest import MakeDispatcher, running
from tests.unit.core.helpers import ScriptedInvoker, fail, make_config, read_records
from tests.waiting import until


def _failures(store: StateStore, metrics: Metrics, **kw: float) -> FailedEvents:
    return FailedEvents(store, metrics=metrics, clock=SystemClock(), max_age=kw.get("max_age", 3600.0),
                        max_count=int(kw.get("max_count", 100)), timeout=2.0,
                        prune_interval=kw.get("prune_interval", 60.0))


async def _keep(failures: FailedEvents, n: int = 1, qualifier: str | None = None) -> None:
    await failures.keep(function="resize", route="uploads", source="webhook", request_id=f"req-{n}",
                        condition="RetriesExhausted", record={"requestContext": {}}, payload=b'{"n": %d}' % n,
                        attempts=3, result=Result.error("ValueError", "bad input"), qualifier=qualifier)


@pytest.fixture
async def store(tmp_path: Path) -> StateStore:
    opened = StateStore.from_url("sqlite:///state.db", tmp_path)
    await opened.open()
    yield opened  # type: ignore[misc]
    await opened.close()


async def test_keep_counts_what_it_cannot_keep_and_never_raises(tmp_path: Path) -> None:
    metrics = Metrics()
    closed = StateStore.from_url("sqlite:///state.db", tmp_path)  # never opened
    await _keep(_failures(closed, metrics))
    assert metrics.registry.get_sample_value("router_failed_events_unkept_total", {"function": "resize"}) == 1


async def test_kept_with_error_then_redriven_once_at_the_rate(store: StateStore) -> None:
    metrics = Metrics()
    failures = _failures(store, metrics)
    for n in range(3):
        await _keep(failures, n, qualifier="prod" if n == 1 else None)  # one was invoked as resize:prod
    [kept, *_] = await store.list_failures(FailureFilter(), 10)
    assert (kept.error_type, kept.error_message) == ("handler", "ValueError: bad input")
    submitted: list[Invocation] = []

    async def submit(inv: Invocation) -> str:
        submitted.append(inv)
        return inv.request_id

    failures.set_submit(submit)
    task = asyncio.create_task(failures.run())
    try:
        claimed = await failures.redrive(FailureFilter(function="resize"), rate=1000.0)
        assert len(claimed) == 3
        assert await failures.redrive(FailureFilter(function="resize")) == []  # twice: nothing more
        await until(lambda: len(submitted) == 3, "three redrives submitted")
        kinds = {(i.source, i.route, i.invocation_type) for i in submitted}
        assert kinds == {("redrive", "uploads", "async")}
        assert [i.payload for i in submitted] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
        assert [i.qualifier for i in submitted] == [None, "prod", None]  # a redrive runs as it was invoked
        assert {i.request_id for i in submitted} == {e.redriven_as for e in claimed}
        await until(lambda: _all_accepted(store), "redrives marked accepted")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    labels = {"function": "resize"}
    redriven = metrics.registry.get_sample_value("router_failed_events_redriven_total", labels)
    assert redriven == 3


async def _all_accepted(store: StateStore) -> bool:
    return all(e.redriven_at is not None for e in await store.list_failures(FailureFilter(), 10))


async def test_shutdown_hands_back_redrives_not_submitted(store: StateStore) -> None:
    failures = _failures(store, Metrics())
    for n in range(3):
        await _keep(failures, n)
    started = asyncio.Event()

    async def stuck(inv: Invocation) -> str:
        started.set()
        await asyncio.Event().wait()
        return inv.request_id

    failures.set_submit(stuck)
    task = asyncio.create_task(failures.run())
    await failures.redrive(FailureFilter(), rate=1000.0)
    await started.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    events = sorted(await store.list_failures(FailureFilter(), 10), key=lambda e: e.id)
    # The one being submitted stays claimed (it may have been accepted: at most once); the rest are free.
    assert [e.redriven_as is not None for e in events] == [True, False, False]
    assert events[0].redriven_at is None  # shown as a pending redrive


async def test_too_many_waiting_redrives_are_refused(store: StateStore) -> None:
    failures = _failures(store, Metrics())
    for n in range(20):
        await _keep(failures, n)
    for n in range(16):  # nothing runs them: ``run`` is not started
        await failures.redrive(FailureFilter(ids=(n + 1,)))
    with pytest.raises(RedriveBusy, match="16 redrives are waiting already"):
        await failures.redrive(FailureFilter(ids=(17,)))
    event = await store.get_failure(17)
    assert event is not None
    assert event.redriven_as is None


async def test_retention_prunes_by_count(store: StateStore) -> None:
    metrics = Metrics()
    failures = _failures(store, metrics, max_count=2)
    for n in range(5):
        await _keep(failures, n)
    task = asyncio.create_task(failures.run())
    try:
        await until(lambda: metrics.registry.get_sample_value("router_failed_events_pruned_total") == 3,
                    "pruned")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [e.request_id for e in await store.list_failures(FailureFilter(), 10)] == ["req-4", "req-3"]


async def test_async_worker_keeps_what_goes_to_on_failure(
    tmp_path: Path, make_dispatcher: MakeDispatcher, store: StateStore, metrics: Metrics,
) -> None:
    out = tmp_path / "failures.jsonl"
    config = make_config({"resize": {"async": {"retries": 1, "backoff": {"initial": 0.01, "max": 0.02},
                                               "on_failure": {"type": "file", "path": str(out)}}}},
                         config_dir=tmp_path)
    failures = _failures(store, metrics)
    d = make_dispatcher(config, {"resize": ScriptedInvoker(then=fail("always"))}, failures=failures)
    request = Invocation(function="resize", payload=b'{"n": 5}', source="webhook", route="hooks",
                         invocation_type="async")
    async with running(d):
        await d.submit(request)
        await until(lambda: len(read_records(out)) == 1, what="on_failure record")
    [sent] = read_records(out)  # the destination still gets its record
    [kept] = await store.list_failures(FailureFilter(), 10)
    whole = await store.get_failure(kept.id)
    assert whole is not None
    assert (whole.function, whole.route, whole.source, whole.request_id, whole.condition, whole.attempts) == (
        "resize", "hooks", "webhook", request.request_id, "RetriesExhausted", 2)
    assert whole.payload == b'{"n": 5}'
    record = json.loads(whole.record)
    assert {k: v for k, v in record.items() if k != "timestamp"} == {
        k: v for k, v in sent.items() if k != "timestamp"}
    labels = {"function": "resize", "condition": "RetriesExhausted"}
    assert metrics.registry.get_sample_value("router_failed_events_kept_total", labels) == 1
