"""The dispatcher under run-time controls: a paused function (reserved concurrency 0) holds its async
events and throttles sync callers; retries set through PutFunctionEventInvokeConfig apply at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.errors import Throttled
from router.invocation import Invocation
from router.metrics import Metrics
from tests.unit.core.conftest import MakeDispatcher, running
from tests.unit.core.helpers import ScriptedInvoker, fail, make_config, read_records
from tests.unit.core.test_async_path import event, fn
from tests.waiting import until


async def test_paused_function_holds_async_events_and_throttles_sync(
    tmp_path: Path, make_dispatcher: MakeDispatcher, metrics: Metrics,
) -> None:
    invoker = ScriptedInvoker()
    d = make_dispatcher(make_config({"resize": fn(tmp_path)}), {"resize": invoker}, poll_interval=0.05)
    await d.controls.set_reserved("resize", 0)
    async with running(d):
        for n in range(3):
            await d.submit(event(n))
        with pytest.raises(Throttled, match="paused"):
            await d.invoke(Invocation(function="resize", payload=b"{}", source="invoke_api"))
        await until(lambda: metrics.registry.get_sample_value(
            "router_async_queue_depth", {"function": "resize"}) == 3, what="3 events queued")
        polls = []

        def none_taken() -> bool:  # observed across many worker polls (0.05 s): none is taken while paused
            assert invoker.calls == [], "an event ran while the function was paused"
            polls.append(1)
            return len(polls) >= 20

        await until(none_taken, what="events held while paused", interval=0.02)
        await d.controls.set_reserved("resize", None)
        await until(lambda: len(invoker.calls) == 3, what="the held events run after resume")
    assert metrics.registry.get_sample_value(
        "router_paused_held_total", {"what": "sync_invoke", "name": "resize"}) == 1


async def test_retries_set_at_run_time_apply_to_the_next_event(
    tmp_path: Path, make_dispatcher: MakeDispatcher,
) -> None:
    out = tmp_path / "failures.jsonl"
    invoker = ScriptedInvoker(then=fail("always"))
    config = make_config({"resize": fn(tmp_path, on_failure={"type": "file", "path": str(out)})})
    d = make_dispatcher(config, {"resize": invoker}, poll_interval=0.05)
    await d.controls.set_invoke_config("resize", retries=0, max_age=None)
    async with running(d):
        await d.submit(event(1))
        await until(lambda: len(read_records(out)) == 1, what="on_failure record")
    [record] = read_records(out)
    assert record["requestContext"]["approximateInvokeCount"] == 1  # the config says 2 retries
    assert len(invoker.calls) == 1
