"""The stream engine's semantics (ordering, retries, bisect, age, partial failures, checkpoints, resharding,
stop) with an in-memory ``StreamApi``, the real Dispatcher and a real SQLite state store. The same
engine against moto_server through the Kinesis and DynamoDB adapters: test_stream_kinesis.py and the e2e
tests."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from router.invocation import Result
from router.state.checkpoints import SHARD_END
from tests.unit.sources.stream.support import (
    FakeStream,
    RecordingDestination,
    RecordingFunction,
    StreamHarness,
    data_of,
    fail,
    fake_api,
    ok,
)
from tests.waiting import until

S0 = "shardId-000000000000"
S1 = "shardId-000000000001"


async def test_batches_in_order_and_checkpoint(stream_harness: StreamHarness) -> None:
    stream = FakeStream(2)
    for i in range(25):
        stream.put(S0, f"a{i}")
        stream.put(S1, f"b{i}")
    fn = RecordingFunction()
    async with stream_harness.source(fn, api=fake_api(stream), batch_size=10):
        await until(lambda: len(fn.seen()) == 50, what="every record")
        await until(lambda: stream_harness.metric(
            "router_source_events_total", route="clicks", type="kinesis") == 50, what="events counted")
        assert all(len(b) <= 10 for b in fn.batches)
        assert [d for d in fn.seen() if d.startswith("a")] == [f"a{i}" for i in range(25)]
        assert [d for d in fn.seen() if d.startswith("b")] == [f"b{i}" for i in range(25)]
        assert all(len({d[0] for d in b}) == 1 for b in fn.batches)  # a batch is from one shard
        last = {s: stream.shards[s].records[-1].sequence_number for s in (S0, S1)}
        await stream_harness.wait_checkpoints(lambda cps: cps == last,
                         what="checkpoints at the last records")
        assert await stream_harness.readiness.reasons() == ["starting"]


async def test_bisect_isolates_a_poison_record(stream_harness: StreamHarness) -> None:
    stream = FakeStream(1)
    for i in range(8):
        stream.put(S0, "poison" if i == 5 else f"r{i}")

    async def handler(records: list[dict[str, Any]]) -> Result:
        return fail() if any(data_of(r) == "poison" for r in records) else ok(None)

    fn = RecordingFunction(handler)
    dest = RecordingDestination()
    async with stream_harness.source(fn, api=fake_api(stream), batch_size=8, bisect_on_error=True,
                                     max_retry_attempts=1, on_failure=dest):
        await until(lambda: len(dest.records) == 1, what="the failure record")
        await stream_harness.wait_checkpoints(lambda cps: cps.get(S0) == stream.shards[S0].records[-1]
                         .sequence_number, what="checkpoint past the poison record")
    # 8 -> [4 ok] [4 fail] -> [2 fail: r4,poison] -> [r4 ok] [poison x2: first try + 1 retry] -> [r6 r7 ok]
    ok_records = [d for b in fn.batches if "poison" not in b for d in b]
    assert ok_records == [f"r{i}" for i in range(8) if i != 5]  # each good record once, in order
    assert fn.batches.count(["poison"]) == 2  # bisection used no retry; max_retry_attempts 1 = 2 tries
    record = dest.records[0]
    info = record["KinesisBatchInfo"]
    poison = stream.shards[S0].records[5]
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == poison.sequence_number
    assert info["batchSize"] == 1
    assert info["shardId"] == S0
    assert info["streamArn"] == stream.stream_arn
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["functionArn"] == "arn:aws:lambda:eu-west-1:123456789012:function:fn"
    assert record["requestContext"]["approximateInvokeCount"] == 5  # 8, 4, 2, then 1 twice
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST",
                                         "functionError": "Unhandled"}
    assert record["version"] == "1.0"
    assert record["timestamp"].endswith("Z")
    assert stream_harness.metric("router_stream_records_discarded_total", route="clicks",
                                 condition="RetryAttemptsExhausted") == 1
    assert stream_harness.metric("router_batch_bisections_total", route="clicks") == 3  # 8, 4, 2 split


async def test_without_bisect_the_whole_batch_is_retried_then_given_up(stream_harness: StreamHarness) -> None:
    stream = FakeStream(1)
    for i in range(3):
        stream.put(S0, f"r{i}")
    fn = RecordingFunction(lambda records: _const(fail()))
    async with stream_harness.source(fn, api=fake_api(stream), batch_size=10, max_retry_attempts=2):
        await stream_harness.wait_checkpoints(lambda cps: cps.get(S0) == stream.shards[S0].records[-1]
                         .sequence_number, what="checkpoint after giving up (no destination)")
        stream.put(S0, "later")
        await until(lambda: fn.seen()[-1:] == ["later"], what="the shard moves on")
    assert fn.batches[:3] == [["r0", "r1", "r2"]] * 3  # first try and 2 retries


async def _const(result: Result) -> Result:
    return result


async def test_record_age_exceeded_is_not_invoked(stream_harness: StreamHarness) -> None:
    now = [1_700_000_000.0]
    stream = FakeStream(1, clock=lambda: now[0])
    stream.put(S0, "old", arrival=now[0] - 120)
    stream.put(S0, "young", arrival=now[0] - 1)
    fn = RecordingFunction()
    dest = RecordingDestination()
    async with stream_harness.source(fn, api=fake_api(stream), batch_size=10, max_record_age=60,
                                     on_failure=dest, clock=lambda: now[0]):
        await until(lambda: fn.seen() == ["young"] and len(dest.records) == 1, what="young invoked")
    record = dest.records[0]
    assert record["requestContext"]["condition"] == "RecordAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert uuid.UUID(record["requestContext"]["requestId"])  # a request id of its own: none ran
    assert "responseContext" not in record  # as Lambda's RecordAgeExceeded records
    assert record["KinesisBatchInfo"]["batchSize"] == 1
    assert record["KinesisBatchInfo"]["approximateArrivalOfFirstRecord"] == "2023-11-14T22:11:20.000Z"


async def test_failure_record_waits_for_the_destination(stream_harness: StreamHarness) -> None:
    stream = FakeStream(1)
    bad = stream.put(S0, "bad")
    fn = RecordingFunction(lambda records: _const(fail()))
    dest = RecordingDestination()
    dest.failing = True
    async with stream_harness.source(fn, api=fake_api(stream), max_retry_attempts=0, on_failure=dest):
        await until(lambda: dest.attempts >= 3, what="delivery retried")
        assert (await stream_harness.checkpoints()).get(S0) is None  # never past an undelivered record
        assert stream_harness.metric("router_destination_deliveries_total", function="fn", kind="file",
                                     outcome="error") >= 3
        dest.failing = False
        await stream_harness.wait_checkpoints(lambda cps: cps.get(S0) == bad,
                         what="checkpoint after delivery")
    assert len(dest.records) == 1


@pytest.mark.parametrize("response", [
    {"batchItemFailures": [{"itemIdentifier": "not-a-sequence-number"}]},
    {"batchItemFailures": [{"itemIdentifier": ""}]},
    "not an object",
])
async def test_invalid_batch_item_failures_fail_the_whole_batch(
    stream_harness: StreamHarness, response: Any,
) -> None:
    stream = FakeStream(1)
    stream.put(S0, "a")
    stream.put(S0, "b")
    fn = RecordingFunction(lambda records: _const(ok(response)))
    async with stream_harness.source(fn, api=fake_api(stream), report_batch_item_failures=True,
                                     max_retry_attempts=1):
        await stream_harness.wait_checkpoints(lambda cps: len(fn.batches) == 2 and bool(cps),
                         what="first try and one retry, then given up")
    assert fn.batches == [["a", "b"], ["a", "b"]]


async def test_report_batch_item_failures_retries_from_the_lowest_failed(
    stream_harness: StreamHarness,
) -> None:
    stream = FakeStream(1)
    seqs = [stream.put(S0, f"r{i}") for i in range(5)]
    failed_once: set[str] = set()

    async def handler(records: list[dict[str, Any]]) -> Result:
        failures = []
        for r in records:
            if data_of(r) in ("r2", "r4") and data_of(r) not in failed_once:
                failed_once.add(data_of(r))
                failures.append({"itemIdentifier": r["kinesis"]["sequenceNumber"]})
        return ok({"batchItemFailures": failures})

    fn = RecordingFunction(handler)
    async with stream_harness.source(fn, api=fake_api(stream), report_batch_item_failures=True):
        await stream_harness.wait_checkpoints(lambda cps: cps.get(S0) == seqs[-1], what="all done")
    assert fn.batches == [["r0", "r1", "r2", "r3", "r4"], ["r2", "r3", "r4"]]


async def test_report_batch_item_failures_checkpoints_before_the_failed_one(
    stream_harness: StreamHarness,
) -> None:
    stream = FakeStream(1)
    seqs = [stream.put(S0, f"r{i}") for i in range(4)]
    gate = asyncio.Event()

    async def handler(records: list[dict[str, Any]]) -> Result:
        if len(records) < 4:
            await gate.wait()  # hold the retry: the checkpoint is just before r2
        return ok({"batchItemFailures": [{"itemIdentifier": seqs[2]}]} if len(records) == 4 else None)

    fn = RecordingFunction(handler)
    async with stream_harness.source(fn, api=fake_api(stream), report_batch_item_failures=True):
        await stream_harness.wait_checkpoints(lambda cps: cps.get(S0) == seqs[1], what="checkpoint at r1")
        gate.set()
        await stream_harness.wait_checkpoints(lambda cps: cps.get(S0) == seqs[3], what="checkpoint at r3")


async def test_parallelization_keeps_order_per_key(stream_harness: StreamHarness) -> None:
    stream = FakeStream(1)
    keys = [f"key{k}" for k in range(6)]
    for i in range(60):
        key = keys[i % len(keys)]
        stream.put(S0, f"{key}:{i}", key=key)
    async def handler(records: list[dict[str, Any]]) -> Result:
        await asyncio.sleep(0.01)  # a batch takes a while: others of the shard run meanwhile
        return ok(None)

    fn = RecordingFunction(handler)
    async with stream_harness.source(fn, api=fake_api(stream), batch_size=3, parallelization=4):
        await until(lambda: len(fn.seen()) == 60, what="every record")
        await stream_harness.wait_checkpoints(lambda cps: cps.get(S0) == stream.shards[S0].records[-1]
                         .sequence_number, what="checkpoint at the end")
    assert fn.max_running > 1  # batches of one shard ran at once
    for key in keys:
        mine = [int(d.split(":")[1]) for d in fn.seen() if d.startswith(key + ":")]
        assert mine == sorted(mine)
        assert len(mine) == 10


async def test_checkpoint_is_the_highest_contiguous_success(stream_harness: StreamHarness) -> None:
    from router.sources.stream.batch import lane_of

    key_a = "A"
    key_b = next(k for k in (f"B{i}" for i in range(100)) if lane_of(k, 2) != lane_of(key_a, 2))
    stream = FakeStream(1)
    stream.put(S0, "a0", key=key_a)
    stream.put(S0, "b0", key=key_b)  # the other lane: done while a0 still runs
    stream.put(S0, "b1", key=key_b)  # invoked only after b0 is marked done (one batch at a time per lane)
    gate = asyncio.Event()

    async def handler(records: list[dict[str, Any]]) -> Result:
        if data_of(records[0]) == "a0":
            await gate.wait()
        return ok(None)

    fn = RecordingFunction(handler)
    async with stream_harness.source(fn, api=fake_api(stream), batch_size=1, parallelization=2):
        await until(lambda: "b1" in fn.seen() and fn.running == 1, what="b0 and b1 done, a0 running")
        assert await stream_harness.checkpoints() == {}  # a0 is not done: nothing after it either
        gate.set()
        await stream_harness.wait_checkpoints(lambda cps: cps.get(S0) == stream.shards[S0].records[-1]
                         .sequence_number, what="checkpoint past all three")


async def test_restart_resumes_after_the_checkpoint(stream_harness: StreamHarness) -> None:
    stream = FakeStream(1)
    for i in range(5):
        stream.put(S0, f"r{i}")
    fn = RecordingFunction()
    async with stream_harness.source(fn, api=fake_api(stream), batch_size=2):
        await stream_harness.wait_checkpoints(lambda cps: cps.get(S0) == stream.shards[S0].records[-1]
                         .sequence_number, what="checkpoint")
    stream.put(S0, "r5")
    fn2 = RecordingFunction()
    async with stream_harness.source(fn2, api=fake_api(stream), batch_size=2):
        await until(lambda: fn2.seen() == ["r5"], what="only the new record")
    assert "shard_iterator shardId-000000000000 AFTER_SEQUENCE_NUMBER" in stream.calls


async def test_stop_lets_the_batch_in_flight_finish_and_checkpoints_it(stream_harness: StreamHarness) -> None:
    stream = FakeStream(1)
    seq = stream.put(S0, "slow")
    stream.put(S0, "next")
    running = asyncio.Event()
    release = asyncio.Event()

    async def handler(records: list[dict[str, Any]]) -> Result:
        running.set()
        await release.wait()
        return ok(None)

    fn = RecordingFunction(handler)
    async with stream_harness.source(fn, api=fake_api(stream), batch_size=1) as src:
        await running.wait()
        stopping = asyncio.create_task(src.stop(10))
        done, _ = await asyncio.wait({stopping}, timeout=0.05)
        assert not done  # stop waits for the batch
        release.set()
        await stopping
    assert fn.seen() == ["slow"]  # "next" was not started
    assert (await stream_harness.checkpoints())[S0] == seq


async def test_stop_timeout_does_not_checkpoint_unfinished(stream_harness: StreamHarness) -> None:
    stream = FakeStream(1)
    stream.put(S0, "hangs")
    running = asyncio.Event()

    async def handler(records: list[dict[str, Any]]) -> Result:
        running.set()
        await asyncio.Event().wait()
        return ok(None)

    fn = RecordingFunction(handler)
    async with stream_harness.source(fn, api=fake_api(stream), stop_timeout=0.1):
        await running.wait()
    assert await stream_harness.checkpoints() == {}


async def test_parent_finished_before_children(stream_harness: StreamHarness) -> None:
    stream = FakeStream(1)
    for i in range(3):
        stream.put(S0, f"p{i}")
    stream.split(S0, ("shardId-000000000001", "shardId-000000000002"))
    for i in range(3):
        stream.put("shardId-000000000001", f"c{i}")
        stream.put("shardId-000000000002", f"d{i}")
    fn = RecordingFunction()
    async with stream_harness.source(fn, api=fake_api(stream), batch_size=10):
        await until(lambda: len(fn.seen()) == 9, what="every record")
        await stream_harness.wait_checkpoints(lambda cps: cps.get(S0) == SHARD_END, what="SHARD_END")
    assert fn.batches[0] == ["p0", "p1", "p2"]  # the parent first, then the children
    assert [d for d in fn.seen() if d[0] == "c"] == ["c0", "c1", "c2"]
    child_iterators = [c for c in stream.calls if c.startswith("shard_iterator shardId-000000000001")]
    assert child_iterators == ["shard_iterator shardId-000000000001 TRIM_HORIZON"]


async def test_latest_skips_closed_shards_and_old_records(stream_harness: StreamHarness) -> None:
    stream = FakeStream(1)
    stream.put(S0, "before")
    stream.split(S0, ("shardId-000000000001", "shardId-000000000002"))
    stream.put("shardId-000000000001", "old-child")
    fn = RecordingFunction()
    async with stream_harness.source(fn, api=fake_api(stream), starting_position="LATEST"):
        await stream_harness.wait_checkpoints(lambda cps: cps.get(S0) == SHARD_END, what="parent done")
        await until(lambda: "get_records shardId-000000000001" in stream.calls, what="child polled")
        stream.put("shardId-000000000001", "new")
        await until(lambda: fn.seen() == ["new"], what="only the new record")


async def test_filtered_records_are_checkpointed_not_invoked(stream_harness: StreamHarness) -> None:
    stream = FakeStream(1)
    for name in ("keep1", "drop", "keep2"):
        stream.put(S0, name)
    fn = RecordingFunction()
    async with stream_harness.source(fn, api=fake_api(stream),
                                     filters=[{"data": {"v": [{"prefix": "keep"}]}}]):
        await stream_harness.wait_checkpoints(lambda cps: cps.get(S0) == stream.shards[S0].records[-1]
                         .sequence_number, what="checkpoint at the end")
    assert fn.seen() == ["keep1", "keep2"]
    assert stream_harness.metric("router_source_events_filtered_total", route="clicks", type="kinesis") == 1


async def test_faults_are_counted_and_recovered(stream_harness: StreamHarness) -> None:
    from botocore.exceptions import ClientError

    stream = FakeStream(1)
    stream.put(S0, "r0")
    throttled = ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"},
                             "ResponseMetadata": {"HTTPStatusCode": 400}}, "GetRecords")
    stream.fail_next = [OSError("connection refused"), throttled, throttled]
    fn = RecordingFunction()
    async with stream_harness.source(fn, api=fake_api(stream)):
        await until(lambda: fn.seen() == ["r0"], what="processed after the faults")
        assert stream_harness.errors() == 3
        await until(lambda: stream_harness.readiness._flags.get("route clicks") is None,
                    what="ready again")


async def test_expired_iterator_is_renewed_after_the_last_record_read(stream_harness: StreamHarness) -> None:
    from botocore.exceptions import ClientError

    stream = FakeStream(1)
    stream.put(S0, "r0")
    fn = RecordingFunction()
    async with stream_harness.source(fn, api=fake_api(stream)):
        await until(lambda: fn.seen() == ["r0"], what="first record")
        stream.fail_next = [ClientError({"Error": {"Code": "ExpiredIteratorException", "Message": "old"}},
                                        "GetRecords")]
        await until(lambda: not stream.fail_next, what="the expiry happened")
        stream.put(S0, "r1")
        await until(lambda: fn.seen() == ["r0", "r1"], what="no duplicate, nothing lost")
    assert any(c == "shard_iterator shardId-000000000000 AFTER_SEQUENCE_NUMBER" for c in stream.calls)
    assert stream_harness.errors() == 0


def test_payload_of_records_is_lambda_shape() -> None:
    from router.sources.stream.batch import payload

    stream = FakeStream(1)
    stream.put(S0, "x")
    assert json.loads(payload(stream.shards[S0].records)) == {"Records": [stream.shards[S0].records[0].event]}


async def test_a_batch_stays_under_6_mb(stream_harness: StreamHarness) -> None:
    stream = FakeStream(1)
    for i in range(8):
        stream.put(S0, f"r{i}", size=1024 * 1024)  # counted as 1 MB each
    fn = RecordingFunction()
    async with stream_harness.source(fn, api=fake_api(stream), batch_size=100):
        await until(lambda: len(fn.seen()) == 8, what="every record")
    assert [len(b) for b in fn.batches] == [5, 3]  # six 1 MB records and their JSON exceed 6 MB
    assert fn.seen() == [f"r{i}" for i in range(8)]
