"""The sync path: concurrency cap (429 at once), waiting callers, unknown functions, metrics."""

from __future__ import annotations

import asyncio

import pytest

from router.errors import FunctionNotFound, PayloadTooLarge, Throttled
from router.invocation import Invocation, Outcome
from router.metrics import Metrics
from router.state.store import StateStore
from tests.unit.core.conftest import MakeDispatcher, running
from tests.unit.core.helpers import RaisingInvoker, ScriptedInvoker, make_config
from tests.waiting import until


def inv(function: str = "resize", source: str = "webhook", payload: bytes = b"{}") -> Invocation:
    return Invocation(function=function, payload=payload, source=source)


async def test_cap_throttles_sync_callers_at_once(make_dispatcher: MakeDispatcher, metrics: Metrics) -> None:
    gate = asyncio.Event()
    invoker = ScriptedInvoker(gate=gate)
    d = make_dispatcher(make_config({"resize": {"concurrency": 2}}), {"resize": invoker})

    calls = [asyncio.create_task(d.invoke(inv())) for _ in range(5)]
    await until(lambda: sum(t.done() for t in calls) == 3, what="3 callers answered")
    assert invoker.running == 2
    gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)

    throttled = [r for r in results if isinstance(r, Throttled)]
    assert len(throttled) == 3
    assert [r.outcome for r in results if not isinstance(r, BaseException)] == [Outcome.SUCCESS] * 2
    assert str(throttled[0]) == (
        "function 'resize': rate exceeded, all 2 concurrent executions are busy; "
        "raise functions.resize.concurrency or retry later"
    )
    val = metrics.registry.get_sample_value
    assert val("router_throttles_total", {"function": "resize", "source": "webhook"}) == 3
    assert val("router_invocations_total",
               {"function": "resize", "source": "webhook", "outcome": "throttled"}) == 3
    assert val("router_invocations_total",
               {"function": "resize", "source": "webhook", "outcome": "success"}) == 2
    assert val("router_concurrent_executions", {"function": "resize"}) == 0
    assert val("router_invocation_duration_seconds_count", {"function": "resize"}) == 2


async def test_the_account_limit_throttles_across_functions(
    make_dispatcher: MakeDispatcher, metrics: Metrics
) -> None:
    gate = asyncio.Event()
    invokers = {"resize": ScriptedInvoker(gate=gate), "thumbs": ScriptedInvoker(gate=gate)}
    d = make_dispatcher(make_config({"resize": {}, "thumbs": {"concurrency": 5}}), invokers, account_limit=3)
    calls = [asyncio.create_task(d.invoke(inv("resize"))) for _ in range(2)]
    calls += [asyncio.create_task(d.invoke(inv("thumbs"))) for _ in range(3)]
    await until(lambda: sum(t.done() for t in calls) == 2, what="2 callers answered")
    assert metrics.registry.get_sample_value("router_account_concurrent_executions") == 3
    gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    throttled = [r for r in results if isinstance(r, Throttled)]
    assert [t.reason for t in throttled] == [Throttled.ACCOUNT] * 2
    assert str(throttled[0]) == (
        "function 'thumbs': rate exceeded, all 3 concurrent executions of the router are busy; "
        "raise limits.concurrent_executions or retry later"
    )
    assert metrics.registry.get_sample_value("router_account_concurrent_executions") == 0


async def test_no_cap_is_unbounded(make_dispatcher: MakeDispatcher) -> None:
    gate = asyncio.Event()
    invoker = ScriptedInvoker(gate=gate)
    d = make_dispatcher(make_config({"resize": {}}), {"resize": invoker})
    calls = [asyncio.create_task(d.invoke(inv())) for _ in range(20)]
    await until(lambda: invoker.running == 20, what="20 running")
    gate.set()
    assert all(r.ok for r in await asyncio.gather(*calls))


async def test_invoke_waiting_waits_for_a_slot(make_dispatcher: MakeDispatcher, metrics: Metrics) -> None:
    gate = asyncio.Event()
    invoker = ScriptedInvoker(gate=gate)
    d = make_dispatcher(make_config({"resize": {"concurrency": 1}}), {"resize": invoker})
    calls = [asyncio.create_task(d.invoke_waiting(inv(source="schedule"))) for _ in range(3)]
    await until(lambda: invoker.running == 1, what="one running")
    assert not any(t.done() for t in calls)
    gate.set()
    results = await asyncio.gather(*calls)
    assert all(r.ok for r in results)
    assert invoker.max_running == 1
    # delayed at the cap: counted as throttles, but no invocation was refused
    assert metrics.registry.get_sample_value(
        "router_throttles_total", {"function": "resize", "source": "schedule"}) == 2
    assert metrics.registry.get_sample_value(
        "router_invocations_total", {"function": "resize", "source": "schedule", "outcome": "throttled"}
    ) is None


async def test_unknown_function_suggests_the_near_name(make_dispatcher: MakeDispatcher) -> None:
    d = make_dispatcher(make_config({"resize": {}}), {"resize": ScriptedInvoker()})
    for call in (d.invoke, d.invoke_waiting, d.submit):
        with pytest.raises(FunctionNotFound, match=r"^function not found: resise; did you mean 'resize'\?$"):
            await call(inv("resise"))
    with pytest.raises(FunctionNotFound, match=r"^function not found: zzz$"):
        await d.invoke(inv("zzz"))


async def test_lookups(make_dispatcher: MakeDispatcher) -> None:
    config = make_config({"resize": {}, "billing": {}}, aws={"region": "eu-west-1", "account_id": "123"})
    d = make_dispatcher(config, {"resize": ScriptedInvoker(), "billing": ScriptedInvoker()})
    assert d.has_function("resize")
    assert not d.has_function("nope")
    assert d.function_names() == ["resize", "billing"]
    assert d.arn("resize") == "arn:aws:lambda:eu-west-1:123:function:resize"


async def test_invoker_exception_becomes_an_error_result(make_dispatcher: MakeDispatcher) -> None:
    d = make_dispatcher(make_config({"resize": {}}), {"resize": RaisingInvoker()})
    result = await d.invoke(inv())
    assert result.outcome is Outcome.ERROR
    assert b"the invoker failed: RuntimeError: invoker bug" in result.payload
    assert result.throttle


async def test_every_function_needs_an_invoker(make_dispatcher: MakeDispatcher) -> None:
    with pytest.raises(ValueError, match="no invoker for function"):
        make_dispatcher(make_config({"resize": {}, "billing": {}}), {"resize": ScriptedInvoker()})


async def test_submit_persists_before_returning(
    make_dispatcher: MakeDispatcher, store: StateStore, metrics: Metrics
) -> None:
    d = make_dispatcher(make_config({"resize": {}}), {"resize": ScriptedInvoker()})
    request = inv(source="webhook", payload=b'{"n": 1}')
    assert await d.submit(request) == request.request_id
    assert await store.depth() == {"resize": 1}
    [event] = await store.claim("resize", 10, now=2e9, lease=60)
    assert (event.request_id, event.payload, event.source, event.attempts) == (
        request.request_id, b'{"n": 1}', "webhook", 0)
    assert metrics.registry.get_sample_value(
        "router_async_events_received_total", {"function": "resize"}) == 1


async def test_submit_refuses_large_events(make_dispatcher: MakeDispatcher, store: StateStore) -> None:
    config = make_config({"resize": {}}, server={"max_async_body": 100})
    d = make_dispatcher(config, {"resize": ScriptedInvoker()})
    with pytest.raises(PayloadTooLarge,
                       match=r"^function 'resize': async event: 101 bytes is over the limit of 100 bytes$"):
        await d.submit(inv(payload=b"x" * 101))
    assert await store.depth() == {}
    await d.submit(inv(payload=b"1" * 100))
    assert await store.depth() == {"resize": 1}


async def test_idle_async_worker_never_takes_sync_callers_slots(
        make_dispatcher: MakeDispatcher, metrics: Metrics) -> None:
    # A capped function with no async events: its worker polls the store very often, but must never
    # hold the only slot while doing so, or sync callers would get spurious 429s.
    d = make_dispatcher(make_config({"resize": {"concurrency": 1}}), {"resize": ScriptedInvoker()},
                        poll_interval=0.001)
    async with running(d):
        for _ in range(300):  # bounded; each pause lets the worker poll in between
            assert (await d.invoke(inv())).ok
            await asyncio.sleep(0.001)
    assert metrics.registry.get_sample_value(
        "router_throttles_total", {"function": "resize", "source": "webhook"}) is None


async def test_slot_holds_capacity_before_work(make_dispatcher: MakeDispatcher, metrics: Metrics) -> None:
    invoker = ScriptedInvoker()
    d = make_dispatcher(make_config({"resize": {"concurrency": 1}}), {"resize": invoker})
    async with d.slot("resize", "sqs"):
        # The poller holds the only slot: a sync caller is throttled, a second poller waits.
        with pytest.raises(Throttled):
            await d.invoke(inv())
        waiting = asyncio.create_task(d.invoke_waiting(inv(source="sqs")))
        await asyncio.sleep(0)
        assert not waiting.done()
        assert (await d.invoke_in_slot(inv(source="sqs"))).ok
    assert (await waiting).ok
    assert len(invoker.calls) == 2
    with pytest.raises(FunctionNotFound):
        async with d.slot("nope", "sqs"):
            pass
