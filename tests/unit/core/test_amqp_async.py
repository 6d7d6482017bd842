"""Async invocations over RabbitMQ (``async_queue``) with the real broker: the same semantics as the
state-store path (retries with delay, throttles, max age, destinations, drain); the transport itself is
tested in tests/unit/queues/test_amqp_queue.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aiohttp import web

from router.core.dispatcher import Dispatcher
from router.invocation import Invocation
from router.metrics import Metrics
from router.queues.amqp import (
    AmqpEvent,
    AmqpQueue,
    queue_name,
    retry_queue_name,
)
from router.queues.sql import SqlQueue
from router.state.store import StateStore
from tests.unit.core.conftest import MakeDispatcher, running
from tests.unit.core.helpers import (
    ScriptedInvoker,
    fail,
    make_config,
    ok,
    read_records,
    serve,
    throttled,
)
from tests.waiting import until

# aiormq leaves the socket of a connection closed under it to the garbage collector.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*StreamWriter.__del__:pytest.PytestUnraisableExceptionWarning")

FAST = {"initial": 0.02, "max": 0.05}
LEVELS_UP_TO_50MS = [10, 12, 15, 20, 25, 30, 40, 50]


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def event(function: str, n: int = 1) -> Invocation:
    return Invocation(function=function, payload=json.dumps({"n": n}).encode(), source="webhook",
                      route="hooks", invocation_type="async")


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[Any]:
    conn = await aio_pika.connect(amqp_url)
    try:
        yield await conn.channel()
    finally:
        await conn.close()


@pytest.fixture
async def fn_name(broker: Any) -> AsyncIterator[str]:
    """A unique function name; its queues are deleted after the test."""
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    for q in [queue_name(name)] + [retry_queue_name(name, ms) for ms in LEVELS_UP_TO_50MS]:
        with contextlib.suppress(Exception):
            await broker.queue_delete(q)


def config(tmp_path: Path, amqp_url: str, name: str, **fn: Any) -> Any:
    fn.setdefault("async", {})
    fn["async"] = {"backoff": FAST, **fn["async"]}
    return make_config({name: fn}, config_dir=tmp_path, async_queue=amqp_url)


async def depth(broker: Any, queue: str) -> int:
    q = await broker.declare_queue(queue, passive=True)
    return int(q.declaration_result.message_count or 0)


async def wait_depth(broker: Any, queue: str, n: int, deadline: float = 10.0) -> None:
    async def reached() -> bool:
        return await depth(broker, queue) == n

    await until(reached, f"queue {queue} to hold {n} messages", deadline=deadline)


# --- the engine over RabbitMQ --------------------------------------------------------------------------


async def test_event_runs_and_its_success_record_is_sent(
    tmp_path: Path, amqp_url: str, fn_name: str, make_dispatcher: MakeDispatcher, metrics: Metrics,
    store: StateStore, broker: Any,
) -> None:
    out = tmp_path / "ok.jsonl"
    invoker = ScriptedInvoker(then=ok({"done": 1}))
    cfg = config(tmp_path, amqp_url, fn_name, **{"async": {"on_success": {"type": "file", "path": str(out)}}})
    d = make_dispatcher(cfg, {fn_name: invoker})
    request = event(fn_name, 7)
    async with running(d):
        await d.submit(request)
        await until(lambda: len(read_records(out)) == 1, what="on_success record")
    [call] = invoker.calls
    assert (call.request_id, call.attempt, call.source, call.route, call.invocation_type) == (
        request.request_id, 1, "webhook", "hooks", "async")
    [record] = read_records(out)
    assert record["requestContext"]["condition"] == "Success"
    assert record["requestPayload"] == {"n": 7}
    assert record["responsePayload"] == {"done": 1}
    assert sample(metrics, "router_async_events_received_total", function=fn_name) == 1
    assert sample(metrics, "router_destination_deliveries_total", function=fn_name, kind="file",
                  outcome="success") == 1
    await wait_depth(broker, queue_name(fn_name), 0)
    assert await store.depth() == {}  # nothing went through the state store


async def test_failing_event_is_retried_with_delay_then_its_failure_record_is_sent(
    tmp_path: Path, amqp_url: str, fn_name: str, make_dispatcher: MakeDispatcher, metrics: Metrics,
    broker: Any,
) -> None:
    out = tmp_path / "failed.jsonl"
    invoker = ScriptedInvoker(then=fail("always"))
    cfg = config(tmp_path, amqp_url, fn_name, **{"async": {
        "retries": 2, "on_failure": {"type": "file", "path": str(out)}}})
    # uniform -> the top of the jitter range: delays of 20 ms then 40 ms (through the delay queues)
    d = make_dispatcher(cfg, {fn_name: invoker}, uniform=lambda a, b: b)
    request = event(fn_name, 3)
    async with running(d):
        await d.submit(request)
        await until(lambda: len(read_records(out)) == 1, what="on_failure record")
    assert [c.attempt for c in invoker.calls] == [1, 2, 3]
    assert {c.request_id for c in invoker.calls} == {request.request_id}
    [record] = read_records(out)
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestPayload"] == {"n": 3}
    assert record["responsePayload"]["errorMessage"] == "always"
    assert sample(metrics, "router_retries_total", function=fn_name) == 2
    assert sample(metrics, "router_async_event_age_seconds_count", function=fn_name) == 3
    for level in (20, 40):  # the retries waited in their delay queues (a passive declare fails if not)
        q = await broker.declare_queue(retry_queue_name(fn_name, level), passive=True)
        assert q.declaration_result.message_count == 0


async def test_throttles_retry_without_using_up_retries(
    tmp_path: Path, amqp_url: str, fn_name: str, make_dispatcher: MakeDispatcher, metrics: Metrics,
) -> None:
    out = tmp_path / "failed.jsonl"
    invoker = ScriptedInvoker([throttled(), throttled()], then=fail("real"))
    cfg = config(tmp_path, amqp_url, fn_name, **{"async": {
        "retries": 0, "on_failure": {"type": "file", "path": str(out)}}})
    d = make_dispatcher(cfg, {fn_name: invoker})
    async with running(d):
        await d.submit(event(fn_name))
        await until(lambda: len(read_records(out)) == 1, what="on_failure record")
    assert [c.attempt for c in invoker.calls] == [1, 1, 1]
    [record] = read_records(out)
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert sample(metrics, "router_retries_total", function=fn_name) == 0


async def test_too_old_event_is_not_invoked(
    tmp_path: Path, amqp_url: str, fn_name: str, make_dispatcher: MakeDispatcher, metrics: Metrics,
    broker: Any,
) -> None:
    invoker = ScriptedInvoker()
    cfg = config(tmp_path, amqp_url, fn_name, **{"async": {"max_event_age": 60}})
    d = make_dispatcher(cfg, {fn_name: invoker})
    async with running(d):
        queue = d.queue
        assert isinstance(queue, AmqpQueue)
        await queue.wait_ready()
        old = AmqpEvent("old-1", b"{}", "webhook", None, 0, time.time() - 120)
        await queue.publish_event(fn_name, old)
        await until(lambda: sample(metrics, "router_async_events_dropped_total", function=fn_name,
                                        reason="EventAgeExceeded") == 1, what="drop counted")
    assert invoker.calls == []
    await wait_depth(broker, queue_name(fn_name), 0)


async def test_undelivered_record_is_kept_in_the_state_store_and_delivered_later(
    tmp_path: Path, amqp_url: str, fn_name: str, make_dispatcher: MakeDispatcher, metrics: Metrics,
    store: StateStore, broker: Any,
) -> None:
    received: list[dict[str, Any]] = []
    answers = [500, 500]

    async def handler(request: web.Request) -> web.Response:
        status = answers.pop(0) if answers else 200
        if status == 200:
            received.append(await request.json())
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/records", handler)
    invoker = ScriptedInvoker(then=fail("x"))
    async with serve(app) as base:
        cfg = config(tmp_path, amqp_url, fn_name, **{"async": {
            "retries": 0, "on_failure": {"type": "http", "url": base + "/records"}}})
        d = make_dispatcher(cfg, {fn_name: invoker})
        async with running(d):
            await d.submit(event(fn_name, 5))
            await until(lambda: len(received) == 1, what="record delivered after two failures")
            await until(lambda: not invoker.running, what="idle")
    assert len(invoker.calls) == 1  # the function ran once; only the record was retried
    assert received[0]["requestPayload"] == {"n": 5}
    assert sample(metrics, "router_destination_deliveries_total", function=fn_name, kind="http",
                  outcome="error") == 2
    assert sample(metrics, "router_destination_deliveries_total", function=fn_name, kind="http",
                  outcome="success") == 1
    assert await store.depth() == {}
    await wait_depth(broker, queue_name(fn_name), 0)


async def test_drain_hands_back_what_did_not_finish_and_a_new_router_runs_it(
    tmp_path: Path, amqp_url: str, fn_name: str, make_dispatcher: MakeDispatcher, metrics: Metrics,
    broker: Any,
) -> None:
    gate = asyncio.Event()
    hanging = ScriptedInvoker(gate=gate)
    cfg = config(tmp_path, amqp_url, fn_name, concurrency=1)
    d = make_dispatcher(cfg, {fn_name: hanging}, depth_interval=0.05)
    async with running(d, drain=0.2):
        for n in range(5):
            await d.submit(event(fn_name, n))
        await until(lambda: hanging.running == 1, what="one event in flight")
        # prefetch = concurrency = 1: one unacked, four ready, seen through a passive declare
        await until(lambda: sample(metrics, "router_async_queue_depth", function=fn_name) == 4,
                         what="depth 4")
    assert len(hanging.calls) == 1
    # the cancelled one was handed back (the broker requeues it shortly after the nack / close)
    await wait_depth(broker, queue_name(fn_name), 5)

    second = ScriptedInvoker()
    d2 = make_dispatcher(cfg, {fn_name: second}, metrics=Metrics())
    async with running(d2):
        await until(lambda: len(second.calls) == 5, what="all five run by the next router")
    assert sorted(json.loads(c.payload)["n"] for c in second.calls) == [0, 1, 2, 3, 4]
    await wait_depth(broker, queue_name(fn_name), 0)


async def test_two_routers_share_one_queue(
    tmp_path: Path, amqp_url: str, fn_name: str, make_dispatcher: MakeDispatcher, broker: Any,
) -> None:
    gate = asyncio.Event()
    a, b = ScriptedInvoker(gate=gate), ScriptedInvoker(gate=gate)
    cfg = config(tmp_path, amqp_url, fn_name, concurrency=2)
    da = make_dispatcher(cfg, {fn_name: a})
    db = make_dispatcher(cfg, {fn_name: b}, metrics=Metrics())
    async with running(da), running(db):
        for n in range(4):
            await da.submit(event(fn_name, n))
        # each router takes at most 2 (its prefetch): both must work for all four to start
        await until(lambda: a.running == 2 and b.running == 2, what="both routers busy")
        gate.set()
        await until(lambda: len(a.calls) + len(b.calls) == 4 and not a.running and not b.running,
                         what="all done")
    await wait_depth(broker, queue_name(fn_name), 0)


async def test_without_async_queue_nothing_changes(
    tmp_path: Path, make_dispatcher: MakeDispatcher, store: StateStore
) -> None:
    d: Dispatcher = make_dispatcher(make_config({"f": {}}), {"f": ScriptedInvoker()})
    assert isinstance(d.queue, SqlQueue)
    await d.submit(event("f"))
    assert await store.depth() == {"f": 1}


def test_async_queue_config_accepts_amqp_urls_only() -> None:
    from pydantic import ValidationError

    from router.config.models import RouterConfig

    assert RouterConfig.model_validate({"async_queue": ""}).async_queue is None
    assert RouterConfig.model_validate({"async_queue": "amqps://u:p@h/"}).async_queue == "amqps://u:p@h/"
    with pytest.raises(ValidationError, match=r"must be an amqp:// or amqps:// URL \(RabbitMQ\), got redis://"):
        RouterConfig.model_validate({"async_queue": "redis://u:secret@h/"})
