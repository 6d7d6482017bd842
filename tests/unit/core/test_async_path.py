"""The async path end to end: retries, max age, throttles, destinations, drain and restart. The tests that
take ``transport`` run over both queues (the SQLite state store and RabbitMQ, ``async_queue``); the rest
are about the state store's own leases and claims."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aiohttp import web

from router.config.models import RouterConfig
from router.errors import Throttled
from router.invocation import Invocation
from router.metrics import Metrics
from router.queues.amqp import queue_name, retry_queue_name
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

FAST = {"backoff": {"initial": 0.01, "max": 0.05}}


def event(n: int = 1, function: str = "resize") -> Invocation:
    return Invocation(function=function, payload=json.dumps({"n": n}).encode(), source="webhook",
                      route="hooks", invocation_type="async")


def fn(tmp_path: Path, retries: int = 2, **async_: Any) -> dict[str, Any]:
    return {"async": {"retries": retries, **FAST, **async_}}


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@dataclass
class Transport:
    """The function of a test and the config of its async queue."""

    name: str
    root: dict[str, Any] = field(default_factory=dict)

    def config(self, fn: dict[str, Any], **root: Any) -> RouterConfig:
        return make_config({self.name: fn}, **root, **self.root)


@pytest.fixture(params=["sql", "amqp"])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    """The state store's queue; or RabbitMQ, with a function name of its own (its queues deleted after)."""
    if request.param == "sql":
        yield Transport("resize")
        return
    url = request.getfixturevalue("amqp_url")
    name = f"t{uuid.uuid4().hex[:10]}"
    yield Transport(name, {"async_queue": url})
    conn = await aio_pika.connect(url)
    try:
        channel = await conn.channel()
        for level in (0, 10, 12, 15, 20, 25, 30, 40, 50):  # the delay queues of backoffs up to 50 ms
            with contextlib.suppress(Exception):
                await channel.queue_delete(retry_queue_name(name, level) if level else queue_name(name))
    finally:
        await conn.close()


async def test_fails_twice_then_succeeds(
    tmp_path: Path, make_dispatcher: MakeDispatcher, store: StateStore, metrics: Metrics,
    transport: Transport,
) -> None:
    name = transport.name
    out = tmp_path / "ok.jsonl"
    invoker = ScriptedInvoker([fail("first"), fail("second")], then=ok({"done": 1}))
    config = transport.config(fn(tmp_path, on_success={"type": "file", "path": str(out)}),
                              aws={"region": "eu-west-1", "account_id": "123456789012"})
    # a long poll: the worker must be woken by submit() and by the retries' due times
    d = make_dispatcher(config, {name: invoker}, poll_interval=30)
    request = event(7, name)
    async with running(d):
        await d.submit(request)
        await until(lambda: len(read_records(out)) == 1, what="on_success record")
        await until(lambda: sample(metrics, "router_async_queue_depth", function=name) == 0
                         and not invoker.running, what="queue empty")

    assert [c.attempt for c in invoker.calls] == [1, 2, 3]
    assert {c.request_id for c in invoker.calls} == {request.request_id}
    assert {c.invocation_type for c in invoker.calls} == {"async"}
    assert {(c.source, c.route) for c in invoker.calls} == {("webhook", "hooks")}
    [record] = read_records(out)
    assert record["requestContext"] == {
        "requestId": request.request_id,
        "functionArn": f"arn:aws:lambda:eu-west-1:123456789012:function:{name}:$LATEST",
        "condition": "Success",
        "approximateInvokeCount": 3,
    }
    assert record["requestPayload"] == {"n": 7}
    assert record["responsePayload"] == {"done": 1}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert await store.depth() == {}
    assert sample(metrics, "router_retries_total", function=name) == 2
    assert sample(metrics, "router_invocations_total", function=name, source="webhook",
                  outcome="error") == 2
    assert sample(metrics, "router_invocations_total", function=name, source="webhook",
                  outcome="success") == 1
    assert sample(metrics, "router_async_event_age_seconds_count", function=name) == 3
    assert sample(metrics, "router_destination_deliveries_total", function=name, kind="file",
                  outcome="success") == 1


async def test_always_fails_goes_to_on_failure(
    tmp_path: Path, make_dispatcher: MakeDispatcher, store: StateStore, caplog: pytest.LogCaptureFixture,
    transport: Transport,
) -> None:
    name = transport.name
    out = tmp_path / "failures.jsonl"
    invoker = ScriptedInvoker(then=fail("always"))
    config = transport.config(fn(tmp_path, on_failure={"type": "file", "path": "failures.jsonl"}),
                              config_dir=tmp_path)
    d = make_dispatcher(config, {name: invoker}, poll_interval=30)
    request = event(3, name)
    with caplog.at_level(logging.INFO, logger="router.async"):
        async with running(d):
            await d.submit(request)
            await until(lambda: len(read_records(out)) == 1, what="on_failure record")
    [record] = read_records(out)
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestContext"]["requestId"] == request.request_id
    assert record["requestPayload"] == {"n": 3}
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorMessage"] == "always"
    assert record["responsePayload"]["errorType"] == "ValueError"
    assert len(invoker.calls) == 3
    assert await store.depth() == {}
    # Only the router's records: aio-pika may log a callback whose repr fails once its channel is gone.
    retries = [r for r in caplog.records if r.name.startswith("router") and "retrying" in r.getMessage()]
    assert [r.__dict__["attempt"] for r in retries] == [1, 2]
    assert {(r.__dict__["function"], r.__dict__["request_id"], r.__dict__["error_type"], r.__dict__["route"])
            for r in retries} == {(name, request.request_id, "handler", "hooks")}


async def test_not_retryable_error_fails_at_once(
    tmp_path: Path, make_dispatcher: MakeDispatcher, transport: Transport
) -> None:
    name = transport.name
    out = tmp_path / "f.jsonl"
    invoker = ScriptedInvoker(then=fail("bad request", retryable=False))
    d = make_dispatcher(transport.config(fn(tmp_path, on_failure={"type": "file", "path": str(out)})),
                        {name: invoker})
    async with running(d):
        await d.submit(event(function=name))
        await until(lambda: len(read_records(out)) == 1, what="on_failure record")
    assert len(invoker.calls) == 1
    assert read_records(out)[0]["requestContext"]["approximateInvokeCount"] == 1


async def test_event_age_exceeded_is_not_invoked(
    tmp_path: Path, make_dispatcher: MakeDispatcher, store: StateStore, transport: Transport,
) -> None:
    name = transport.name
    out = tmp_path / "f.jsonl"
    invoker = ScriptedInvoker()
    config = transport.config(fn(tmp_path, max_event_age=60, on_failure={"type": "file", "path": str(out)}))
    d = make_dispatcher(config, {name: invoker})
    async with running(d):
        # accepted two minutes ago (e.g. while the router was down)
        await d.queue.publish(name, request_id="old-1", payload=b'{"old": true}', source="webhook",
                              route=None, now=time.time() - 120)
        await until(lambda: len(read_records(out)) == 1, what="on_failure record")
    [record] = read_records(out)
    assert record["requestContext"]["condition"] == "EventAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert record["requestContext"]["requestId"] == "old-1"
    assert record["requestPayload"] == {"old": True}
    assert invoker.calls == []
    assert await store.depth() == {}


async def test_dropped_without_on_failure_is_counted_and_logged(
    tmp_path: Path, make_dispatcher: MakeDispatcher, store: StateStore, metrics: Metrics,
    caplog: pytest.LogCaptureFixture, transport: Transport,
) -> None:
    name = transport.name
    invoker = ScriptedInvoker(then=fail())
    d = make_dispatcher(transport.config(fn(tmp_path, retries=0)), {name: invoker})
    request = event(function=name)
    with caplog.at_level(logging.WARNING, logger="router.async"):
        async with running(d):
            await d.submit(request)
            await until(lambda: sample(metrics, "router_async_events_dropped_total", function=name,
                                            reason="RetriesExhausted") == 1, what="drop counted")
    assert await store.depth() == {}
    drops = [r for r in caplog.records if r.name.startswith("router") and "dropped" in r.getMessage()]
    assert len(drops) == 1
    assert drops[0].__dict__["request_id"] == request.request_id
    assert drops[0].__dict__["function"] == name


async def test_throttles_do_not_use_up_retries(
    tmp_path: Path, make_dispatcher: MakeDispatcher, metrics: Metrics, transport: Transport,
) -> None:
    name = transport.name
    out = tmp_path / "f.jsonl"
    invoker = ScriptedInvoker([throttled()] * 4, then=fail())
    config = transport.config(fn(tmp_path, retries=1, on_failure={"type": "file", "path": str(out)}))
    d = make_dispatcher(config, {name: invoker})
    async with running(d):
        await d.submit(event(function=name))
        await until(lambda: len(read_records(out)) == 1, what="on_failure record")
    # 4 throttled attempts cost nothing; then 1 attempt + 1 retry
    assert len(invoker.calls) == 6
    assert [c.attempt for c in invoker.calls] == [1, 1, 1, 1, 1, 2]
    [record] = read_records(out)
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert sample(metrics, "router_retries_total", function=name) == 1
    assert sample(metrics, "router_invocations_total", function=name, source="webhook",
                  outcome="throttled") == 4


async def test_async_respects_the_concurrency_cap(
    tmp_path: Path, make_dispatcher: MakeDispatcher, transport: Transport
) -> None:
    name = transport.name
    gate = asyncio.Event()
    invoker = ScriptedInvoker(gate=gate)
    d = make_dispatcher(transport.config({"concurrency": 2, **fn(tmp_path)}), {name: invoker})
    async with running(d):
        for n in range(6):
            await d.submit(event(n, name))
        await until(lambda: invoker.running == 2, what="two running")
        # async events hold the slots: a sync caller is throttled now
        with pytest.raises(Throttled):
            await d.invoke(Invocation(function=name, payload=b"{}", source="webhook"))
        gate.set()
        await until(lambda: len(invoker.calls) == 6 and not invoker.running, what="all delivered")
    assert invoker.max_running == 2


async def test_failed_delivery_keeps_the_record_and_retries(
    tmp_path: Path, make_dispatcher: MakeDispatcher, store: StateStore, metrics: Metrics,
    transport: Transport,
) -> None:
    name = transport.name
    received: list[dict[str, Any]] = []
    statuses = [500, 503]

    async def handler(request: web.Request) -> web.Response:
        received.append(await request.json())
        assert request.headers["X-Token"] == "t0ken"
        return web.Response(status=statuses.pop(0) if statuses else 200)

    app = web.Application()
    app.router.add_post("/dlq", handler)
    invoker = ScriptedInvoker(then=fail())
    async with serve(app) as base:
        dest = {"type": "http", "url": f"{base}/dlq", "headers": {"X-Token": "t0ken"}}
        d = make_dispatcher(transport.config(fn(tmp_path, retries=0, on_failure=dest)),
                            {name: invoker})
        async with running(d):
            await d.submit(event(5, name))
            await until(lambda: len(received) == 3 and not statuses, what="three deliveries")
            await until(lambda: sample(metrics, "router_destination_deliveries_total", function=name,
                                            kind="http", outcome="success") == 1, what="delivered")
    assert len(invoker.calls) == 1  # the function is not invoked again for a delivery
    assert received[0] == received[1] == received[2]
    assert received[0]["requestContext"]["condition"] == "RetriesExhausted"
    assert received[0]["requestPayload"] == {"n": 5}
    assert sample(metrics, "router_destination_deliveries_total", function=name, kind="http",
                  outcome="error") == 2
    assert await store.depth() == {}


async def test_undelivered_record_survives_a_restart(
    tmp_path: Path, make_dispatcher: MakeDispatcher, store: StateStore, metrics: Metrics,
    transport: Transport,
) -> None:
    name = transport.name
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the destination wants a directory")
    out = blocked / "f.jsonl"
    invoker = ScriptedInvoker(then=fail())
    config = transport.config(fn(tmp_path, retries=0, on_failure={"type": "file", "path": str(out)}))
    first = make_dispatcher(config, {name: invoker})
    async with running(first):
        await first.submit(event(9, name))
        # the record cannot be written: it stays in the store
        await until(lambda: sample(metrics, "router_destination_deliveries_total", function=name,
                                        kind="file", outcome="error") >= 2, what="delivery failures")
    assert sum((await store.depth()).values()) == 1

    blocked.unlink()
    again = ScriptedInvoker(then=fail())
    second = make_dispatcher(config, {name: again})
    async with running(second):
        await until(lambda: len(read_records(out)) == 1, what="record delivered after restart")
    assert read_records(out)[0]["requestPayload"] == {"n": 9}
    assert len(invoker.calls) == 1
    assert again.calls == []  # the function is not invoked again: only the record was pending
    assert await store.depth() == {}


async def test_drain_finishes_in_flight_and_hands_back_the_rest(
    tmp_path: Path, make_dispatcher: MakeDispatcher, store: StateStore
) -> None:
    gate = asyncio.Event()
    invoker = ScriptedInvoker(gate=gate)
    d = make_dispatcher(make_config({"resize": {"concurrency": 2, **fn(tmp_path)}}), {"resize": invoker})
    task = asyncio.create_task(d.run())
    for n in range(3):
        await d.submit(event(n))
    await until(lambda: invoker.running == 2, what="two in flight")
    drain = asyncio.create_task(d.drain(30))
    await until(lambda: all(t.done() for t in d._loops), what="claiming stopped")
    assert not drain.done()  # waits for the in-flight ones
    gate.set()
    await asyncio.wait_for(drain, 10)
    await asyncio.wait_for(task, 10)
    assert len(invoker.calls) == 2
    # the third was never claimed; nothing is left leased
    [left] = await store.claim("resize", 10, now=time.time(), lease=60)
    assert left.attempts == 0


async def test_drain_timeout_releases_unfinished(
    tmp_path: Path, make_dispatcher: MakeDispatcher, store: StateStore
) -> None:
    invoker = ScriptedInvoker(gate=asyncio.Event())  # never opens
    d = make_dispatcher(make_config({"resize": {"concurrency": 2, **fn(tmp_path)}}), {"resize": invoker})
    task = asyncio.create_task(d.run())
    for n in range(2):
        await d.submit(event(n))
    await until(lambda: invoker.running == 2, what="two in flight")
    await d.drain(0.05)
    await asyncio.wait_for(task, 10)
    assert invoker.running == 0
    # handed back, not leased, attempts unchanged: delivered again by the next run
    assert await store.depth() == {"resize": 2}
    assert {e.attempts for e in await store.claim("resize", 10, now=time.time(), lease=60)} == {0}


async def test_cancelling_run_hands_back_claims(
    tmp_path: Path, make_dispatcher: MakeDispatcher, store: StateStore
) -> None:
    invoker = ScriptedInvoker(gate=asyncio.Event())
    d = make_dispatcher(make_config({"resize": fn(tmp_path)}), {"resize": invoker})
    task = asyncio.create_task(d.run())
    await d.submit(event())
    await until(lambda: invoker.running == 1, what="in flight")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.depth() == {"resize": 1}


async def test_restart_delivers_events_left_in_the_store(
    tmp_path: Path, make_dispatcher: MakeDispatcher
) -> None:
    db = tmp_path / "restart.db"
    config = make_config({"resize": fn(tmp_path)})
    first_store = StateStore.from_url(f"sqlite:///{db}", tmp_path)
    await first_store.open()
    try:
        first = make_dispatcher(config, {"resize": ScriptedInvoker()}, store=first_store)
        ids = [await first.submit(event(n)) for n in range(3)]  # accepted, never run
        # one more claimed by a run that then crashed (its lease is left behind)
        await first.submit(event(3))
        await first_store.claim("resize", 10, now=time.time() + 1, lease=3600)
    finally:
        await first_store.close()

    second_store = StateStore.from_url(f"sqlite:///{db}", tmp_path)
    await second_store.open()
    try:
        assert await second_store.release_all_leases() == 4  # what the app does at start-up
        invoker = ScriptedInvoker()
        second = make_dispatcher(config, {"resize": invoker}, store=second_store)
        async with running(second):
            await until(lambda: len(invoker.calls) == 4, what="all four delivered")
        assert set(ids) <= {c.request_id for c in invoker.calls}
        assert await second_store.depth() == {}
    finally:
        await second_store.close()
