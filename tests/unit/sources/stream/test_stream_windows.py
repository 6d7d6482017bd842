"""Tumbling windows on a stream route (Lambda's stateful stream processing, ``TumblingWindowInSeconds``)
with an in-memory ``StreamApi``, the real Dispatcher and a real SQLite state store: the event's window
keys, the state carried from one invocation of a window to the next, the final invocation when the window
is over (by time, by a later window's record, by the shard's end), early termination past 1 MB of state,
a response without ``state`` as a failure, and checkpoints held until the window's final invocation."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import ValidationError

from router.clock import SystemClock
from router.config.models import RouteConfig
from router.core.failures import FailedEvents
from router.invocation import Result
from router.sources.stream.batch import WINDOW_STATE_LIMIT
from router.state.checkpoints import SHARD_END
from router.state.failures import FailureFilter
from tests.unavailable import unavailable
from tests.unit.sources.functions import FunctionInvoker
from tests.unit.sources.stream.support import ARN, FakeStream, StreamHarness, fail, fake_api, ok
from tests.waiting import until

S0 = "shardId-000000000000"
BASE = 60 * 28_333_334  # 2023-11-14T22:14:00Z, a multiple of 60: a window's start
EventHandler = Callable[[dict[str, Any]], Awaitable[Result]]


class WindowFunction(FunctionInvoker):
    """An in-process function that keeps every event; by default it counts records into ``state.n``."""

    def __init__(self, handler: EventHandler | None = None) -> None:
        super().__init__(handler or _counting)

    def data(self, index: int) -> list[str]:
        return [r["kinesis"]["data"] for r in self.events[index]["Records"]]

    def finals(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["isFinalInvokeForWindow"]]


async def _counting(event: dict[str, Any]) -> Result:
    return ok({"state": count(event)})


def count(event: dict[str, Any]) -> dict[str, Any]:
    return {**event["state"], "n": event["state"].get("n", 0) + len(event["Records"])}


async def test_the_state_is_carried_through_a_window_and_its_final_invocation_comes_when_it_is_over(
        stream_harness: StreamHarness) -> None:
    now = [BASE + 30.0]
    stream = FakeStream(1)
    seqs = [stream.put(S0, f"r{i}", arrival=BASE + i) for i in range(5)]
    fn = WindowFunction()
    async with stream_harness.source(fn, api=fake_api(stream), batch_size=2, tumbling_window="60s",
                                     clock=lambda: now[0]):
        await until(lambda: len(fn.events) == 3, what="three batches")
        assert [fn.data(i) for i in range(3)] == [["r0", "r1"], ["r2", "r3"], ["r4"]]
        assert [e["state"] for e in fn.events] == [{}, {"n": 2}, {"n": 4}]
        first = fn.events[0]
        assert list(first) == ["Records", "window", "state", "shardId", "eventSourceARN",
                               "isFinalInvokeForWindow", "isWindowTerminatedEarly"]
        assert first["window"] == {"start": "2023-11-14T22:14:00Z", "end": "2023-11-14T22:15:00Z"}
        assert (first["shardId"], first["eventSourceARN"]) == (S0, ARN)
        assert not any(e["isFinalInvokeForWindow"] or e["isWindowTerminatedEarly"] for e in fn.events)
        polls = stream.calls.count(f"get_records {S0}")
        await until(lambda: stream.calls.count(f"get_records {S0}") >= polls + 5,
                    what="the reader polling, caught up, before the window's end")
        await until(lambda: stream_harness.metric("router_source_events_total", route="clicks",
                                                  type="kinesis") == 5, what="every record read")
        assert len(fn.events) == 3  # not over before its end
        assert await stream_harness.checkpoints() == {}  # held until the window's final invocation
        now[0] = BASE + 60.5  # past the end, within the grace for records still on their way
        polls = stream.calls.count(f"get_records {S0}")
        await until(lambda: stream.calls.count(f"get_records {S0}") >= polls + 40,
                    what="reads for longer than two of the lane's looks")
        assert len(fn.events) == 3
        now[0] = BASE + 61.0
        await until(lambda: len(fn.events) == 4, what="the final invocation")
        final = fn.events[3]
        assert final["Records"] == []
        assert final["state"] == {"n": 5}
        assert (final["isFinalInvokeForWindow"], final["isWindowTerminatedEarly"]) == (True, False)
        assert final["window"] == first["window"]
        await stream_harness.wait_checkpoints(lambda cps: cps == {S0: seqs[-1]}, what="the checkpoint")


async def test_a_record_of_a_later_window_ends_the_open_one_first(stream_harness: StreamHarness) -> None:
    stream = FakeStream(1)
    for i in range(3):
        stream.put(S0, f"a{i}", arrival=BASE + 10 + i)
    for i in range(2):
        stream.put(S0, f"b{i}", arrival=BASE + 60 + i)  # the next window
    fn = WindowFunction()
    async with stream_harness.source(fn, api=fake_api(stream), batch_size=10, tumbling_window=60,
                                     clock=lambda: BASE + 62.0):
        await until(lambda: len(fn.events) == 3, what="two windows' batches and a final invocation")
        assert fn.data(0) == ["a0", "a1", "a2"]  # a batch holds one window's records
        assert fn.events[1]["isFinalInvokeForWindow"]
        assert (fn.events[1]["Records"], fn.events[1]["state"]) == ([], {"n": 3})
        assert fn.data(2) == ["b0", "b1"]
        assert fn.events[2]["state"] == {}  # a fresh state in the next window
        assert fn.events[2]["window"]["start"] == "2023-11-14T22:15:00Z"
        await stream_harness.wait_checkpoints(
            lambda cps: cps.get(S0) == stream.shards[S0].records[2].sequence_number,
            what="the first window checkpointed, not the open one")


async def test_a_response_without_state_fails_the_batch(stream_harness: StreamHarness) -> None:
    stream = FakeStream(1)
    stream.put(S0, "r0", arrival=BASE + 1)
    answers = [ok({"batchItemFailures": []}), ok(None)]

    async def handler(event: dict[str, Any]) -> Result:
        return answers.pop(0) if answers else ok({"state": count(event)})

    fn = WindowFunction(handler)
    async with stream_harness.source(fn, api=fake_api(stream), tumbling_window=60,
                                     clock=lambda: BASE + 2.0):
        await until(lambda: len(fn.events) == 3, what="two failures and a success")
        assert [fn.data(i) for i in range(3)] == [["r0"]] * 3  # retried, with the state it had
        assert [e["state"] for e in fn.events] == [{}, {}, {}]


async def test_a_state_over_1_mb_ends_the_window_early_and_it_goes_on_with_a_fresh_state(
        stream_harness: StreamHarness) -> None:
    now = [BASE + 5.0]
    stream = FakeStream(1)
    stream.put(S0, "big", arrival=BASE + 1)
    stream.put(S0, "small", arrival=BASE + 2)
    big = "x" * WINDOW_STATE_LIMIT

    async def handler(event: dict[str, Any]) -> Result:
        if event["isFinalInvokeForWindow"]:
            return ok(None)
        data = [r["kinesis"]["data"] for r in event["Records"]]
        return ok({"state": {"blob": big} if data == ["big"] else count(event)})

    fn = WindowFunction(handler)
    async with stream_harness.source(fn, api=fake_api(stream), batch_size=1, tumbling_window=60,
                                     clock=lambda: now[0]):
        await until(lambda: len(fn.events) == 3, what="a batch, the early end, the next batch")
        early = fn.events[1]
        assert (early["isFinalInvokeForWindow"], early["isWindowTerminatedEarly"]) == (True, True)
        assert early["Records"] == []
        assert early["state"] == {"blob": big}
        assert fn.data(2) == ["small"]
        assert fn.events[2]["state"] == {}
        assert fn.events[2]["window"] == early["window"]  # the same window, from a fresh state
        await stream_harness.wait_checkpoints(
            lambda cps: cps.get(S0) == stream.shards[S0].records[0].sequence_number,
            what="the records before the early end checkpointed")
        now[0] = BASE + 61.0
        await until(lambda: len(fn.finals()) == 2, what="the window's final invocation")
        assert fn.finals()[1]["state"] == {"n": 1}
        assert not fn.finals()[1]["isWindowTerminatedEarly"]


async def test_a_failing_final_invocation_is_retried_and_holds_the_checkpoint(
        stream_harness: StreamHarness) -> None:
    stream = FakeStream(1)
    seq = stream.put(S0, "r0", arrival=BASE + 1)
    finals = [fail("flush failed"), fail("flush failed")]

    async def handler(event: dict[str, Any]) -> Result:
        if event["isFinalInvokeForWindow"] and finals:
            return finals.pop(0)
        return ok({"state": count(event)})

    fn = WindowFunction(handler)
    async with stream_harness.source(fn, api=fake_api(stream), tumbling_window=60, max_retry_attempts=0,
                                     clock=lambda: BASE + 61.0):
        await until(lambda: len(fn.finals()) == 3, what="the final invocation, twice failed, then done")
        assert all(f["state"] == {"n": 1} for f in fn.finals())  # no retry limit for it, as on Lambda
        await stream_harness.wait_checkpoints(lambda cps: cps == {S0: seq}, what="the checkpoint")


async def test_a_stop_mid_window_runs_the_window_again_after_a_restart(stream_harness: StreamHarness) -> None:
    now = [BASE + 30.0]
    stream = FakeStream(1)
    seqs = [stream.put(S0, f"r{i}", arrival=BASE + i) for i in range(2)]
    first = WindowFunction()
    async with stream_harness.source(first, api=fake_api(stream), tumbling_window=60, clock=lambda: now[0]):
        await until(lambda: len(first.events) == 1, what="the window's first batch")
    assert await stream_harness.checkpoints() == {}
    again = WindowFunction()
    async with stream_harness.source(again, api=fake_api(stream), tumbling_window=60, clock=lambda: now[0]):
        await until(lambda: len(again.events) == 1, what="the window from its first record")
        assert again.data(0) == ["r0", "r1"]
        assert again.events[0]["state"] == {}
        now[0] = BASE + 61.0
        await until(lambda: len(again.finals()) == 1, what="the final invocation")
        assert again.finals()[0]["state"] == {"n": 2}
        await stream_harness.wait_checkpoints(lambda cps: cps == {S0: seqs[-1]}, what="the checkpoint")


async def test_the_end_of_a_shard_ends_its_window(stream_harness: StreamHarness) -> None:
    stream = FakeStream(1)
    stream.put(S0, "p0", arrival=BASE + 1)
    stream.split(S0, ("shardId-000000000001", "shardId-000000000002"))
    fn = WindowFunction()
    async with stream_harness.source(fn, api=fake_api(stream), tumbling_window=60,
                                     clock=lambda: BASE + 2.0):
        await stream_harness.wait_checkpoints(lambda cps: cps.get(S0) == SHARD_END, what="SHARD_END")
        assert [(e["shardId"], e["isFinalInvokeForWindow"], e["state"]) for e in fn.events] == [
            (S0, False, {}), (S0, True, {"n": 1})]


@pytest.mark.parametrize(("extra", "message"), [
    ({"tumbling_window": "60s", "parallelization": 2}, "tumbling_window needs parallelization: 1"),
    ({"tumbling_window": 1.5}, "tumbling_window: whole seconds"),
    ({"tumbling_window": "16m"}, "less than or equal to 900"),
])
def test_tumbling_window_limits_are_lambdas(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RouteConfig.model_validate({"name": "r", "function": "f", "source": {
            "type": "kinesis", "stream_arn": ARN, "starting_position": "LATEST", **extra}})


async def test_a_batch_given_up_in_a_window_is_kept_as_the_function_was_given_it(
        stream_harness: StreamHarness) -> None:
    """``router failures redrive`` runs the event the function failed on: in a window, with its keys and
    the state at the time; the given-up records are checkpointed with the window."""
    store = await stream_harness.open_store()
    failures = FailedEvents(store, metrics=stream_harness.metrics, clock=SystemClock(), max_age=3600.0,
                            max_count=100, timeout=2.0, prune_interval=60.0)
    stream = FakeStream(1)
    stream.put(S0, "r0", arrival=BASE + 1)
    bad = stream.put(S0, "bad", arrival=BASE + 2)

    async def handler(event: dict[str, Any]) -> Result:
        if any(r["kinesis"]["data"] == "bad" for r in event["Records"]):
            return fail("bad record")
        return ok({"state": count(event)})

    fn = WindowFunction(handler)
    async with stream_harness.source(fn, api=fake_api(stream), batch_size=1, tumbling_window=60,
                                     max_retry_attempts=0, failures=failures, clock=lambda: BASE + 61.0):
        await until(lambda: len(fn.finals()) == 1, what="the final invocation")
        await stream_harness.wait_checkpoints(lambda cps: cps == {S0: bad}, what="the window checkpointed")
    [kept] = await store.list_failures(FailureFilter(), 10)
    event = json.loads((await store.get_failure(kept.id)).payload)  # type: ignore[union-attr]
    assert [r["kinesis"]["data"] for r in event["Records"]] == ["bad"]
    assert (event["state"], event["isFinalInvokeForWindow"]) == ({"n": 1}, False)
    assert event["window"]["start"] == "2023-11-14T22:14:00Z"
    assert fn.finals()[0]["state"] == {"n": 1}


async def test_powertools_reads_the_windowed_events(stream_harness: StreamHarness) -> None:
    """AWS Lambda Powertools' event data classes (``KinesisStreamEvent``), as a windowed function reads
    its event: the window, the state, the shard, the flags and the records."""
    if importlib.util.find_spec("aws_lambda_powertools") is None:
        unavailable("aws-lambda-powertools is not installed (pip install -e '.[test]')")
    from aws_lambda_powertools.utilities.data_classes import KinesisStreamEvent

    stream = FakeStream(1)
    stream.put(S0, "cjA=", arrival=BASE + 1)  # base64 of "r0", as Kinesis' records carry data
    fn = WindowFunction()
    async with stream_harness.source(fn, api=fake_api(stream), tumbling_window=60,
                                     clock=lambda: BASE + 61.0):
        await until(lambda: len(fn.finals()) == 1, what="the final invocation")
    first, final = (KinesisStreamEvent(e) for e in fn.events)
    assert first.window is not None
    assert (first.window.start, first.window.end) == ("2023-11-14T22:14:00Z", "2023-11-14T22:15:00Z")
    assert (first.state, first.shard_id, first.event_source_arn) == ({}, S0, ARN)
    assert (first.is_final_invoke_for_window, first.is_window_terminated_early) == (False, False)
    assert [r.kinesis.data_as_text() for r in first.records] == ["r0"]
    assert (final.state, final.is_final_invoke_for_window, list(final.records)) == ({"n": 1}, True, [])


async def test_the_state_is_kept_from_a_partly_failed_batch_not_from_a_failed_one(
        stream_harness: StreamHarness) -> None:
    """With ``report_batch_item_failures``: a response whose ``batchItemFailures`` is invalid fails the
    whole batch, and its state is not taken; one that reports a record failed has processed those before
    it, and its state goes to the retry from that record."""
    stream = FakeStream(1)
    seqs = [stream.put(S0, f"r{i}", arrival=BASE + 1 + i) for i in range(3)]
    answers = [ok({"state": {"n": 99}, "batchItemFailures": [{"itemIdentifier": "not-in-the-batch"}]}),
               ok({"state": {"n": 1}, "batchItemFailures": [{"itemIdentifier": seqs[1]}]})]

    async def handler(event: dict[str, Any]) -> Result:
        return answers.pop(0) if answers else ok({"state": count(event)})

    fn = WindowFunction(handler)
    async with stream_harness.source(fn, api=fake_api(stream), tumbling_window=60,
                                     report_batch_item_failures=True, clock=lambda: BASE + 61.0):
        await until(lambda: len(fn.finals()) == 1, what="the final invocation")
    assert [(fn.data(i), fn.events[i]["state"]) for i in range(3)] == [
        (["r0", "r1", "r2"], {}), (["r0", "r1", "r2"], {}), (["r1", "r2"], {"n": 1})]
    assert fn.finals()[0]["state"] == {"n": 3}
