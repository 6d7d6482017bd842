"""Recursive loop detection in the dispatcher: the 16th hop runs, the 17th is refused (Terminate), counted
and logged once per chain; Allow runs on; every invocation's header carries the count."""

from __future__ import annotations

import logging

import pytest

from router import lineage
from router.invocation import Invocation, Outcome
from router.metrics import Metrics
from tests.unit.core.conftest import MakeDispatcher
from tests.unit.core.helpers import ScriptedInvoker, make_config


def _key(name: str) -> str:
    return lineage.function_key(make_config({name: {}}).aws.function_arn(name))


def _header(name: str, hops: int) -> str | None:
    header = None
    for _ in range(hops):
        header = lineage.next_header(header, _key(name))
    return header


async def test_the_chain_is_counted_into_the_header_the_function_gets(
    make_dispatcher: MakeDispatcher,
) -> None:
    invoker = ScriptedInvoker()
    d = make_dispatcher(make_config({"loop": {}}), {"loop": invoker})
    inv = Invocation(function="loop", payload=b"{}", source="sqs", trace_id=_header("loop", 3))
    result = await d.invoke(inv)
    assert result.ok
    assert lineage.hops(inv.trace_id, _key("loop")) == 4
    fresh = Invocation(function="loop", payload=b"{}", source="webhook")
    await d.invoke(fresh)
    assert lineage.hops(fresh.trace_id, _key("loop")) == 1


async def test_past_the_limit_the_event_is_refused_counted_and_logged_once(
    make_dispatcher: MakeDispatcher, metrics: Metrics, caplog: pytest.LogCaptureFixture,
) -> None:
    invoker = ScriptedInvoker()
    d = make_dispatcher(make_config({"loop": {}}), {"loop": invoker})
    at_limit = _header("loop", lineage.LIMIT - 1)
    assert (await d.invoke(Invocation(function="loop", payload=b"{}", source="sqs", trace_id=at_limit))).ok
    past = _header("loop", lineage.LIMIT)
    caplog.set_level(logging.WARNING, "router.recursion")
    results = [await d.invoke(Invocation(function="loop", payload=b"{}", source="sqs", route="jobs",
                                         trace_id=past)) for _ in range(3)]
    assert all(r.outcome is Outcome.ERROR and not r.retryable for r in results)
    assert b"RecursiveInvocationException" in results[0].payload
    assert len(invoker.calls) == 1  # only the 16th ran
    assert metrics.registry.get_sample_value("router_recursive_loops_total", {"function": "loop"}) == 3
    logged = [r for r in caplog.records if r.name == "router.recursion"]
    assert len(logged) == 1
    assert "function 'loop': recursive loop detected (route 'jobs', chain Root=" in logged[0].getMessage()
    assert "set functions.loop.recursive_loop: Allow" in logged[0].getMessage()


async def test_allow_runs_on(make_dispatcher: MakeDispatcher, metrics: Metrics) -> None:
    invoker = ScriptedInvoker()
    d = make_dispatcher(make_config({"loop": {"recursive_loop": "Allow"}}), {"loop": invoker})
    inv = Invocation(function="loop", payload=b"{}", source="sqs", trace_id=_header("loop", 40))
    assert (await d.invoke(inv)).ok
    assert lineage.hops(inv.trace_id, _key("loop")) == 41
    assert metrics.registry.get_sample_value("router_recursive_loops_total", {"function": "loop"}) is None


async def test_refusal_message_tells_a_refusal_from_other_errors(make_dispatcher: MakeDispatcher) -> None:
    from router.core.recursion import refusal_message
    from tests.unit.core.helpers import fail

    d = make_dispatcher(make_config({"loop": {}}), {"loop": ScriptedInvoker(script=[fail("boom")])})
    refused = await d.invoke(Invocation(function="loop", payload=b"{}", source="invoke_api",
                                        trace_id=_header("loop", lineage.LIMIT)))
    assert (refusal_message(refused) or "").startswith(
        "function 'loop': not invoked: this chain of events has invoked it 16 times")
    assert refusal_message(await d.invoke(Invocation(function="loop", payload=b"{}", source="x"))) is None
