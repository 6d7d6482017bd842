"""The stream engine on a real moto_server through KinesisApi and DynamodbStreamApi (in-process router
parts: real Dispatcher, SQLite store, SQS destination; scripted in-process functions).

moto's resharding differs from Kinesis (see router/sources/stream/kinesis.py): after SplitShard the parent is
listed closed but keeps taking records and the children stay empty, and GetRecords never ends a closed
shard. The split test checks what moto can show: the parent is read to its ending sequence number and
checkpointed SHARD_END before its children start (at TRIM_HORIZON).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from router.aws import create_client
from router.config.models import AwsConfig
from router.destinations.sqs import SqsDestination
from router.invocation import Result
from router.state.checkpoints import SHARD_END
from tests.unit.sources.stream.support import (
    RecordingFunction,
    StreamHarness,
    fail,
    ok,
)
from tests.waiting import until

REGION = "eu-west-1"


def shard_hash(i: int, shards: int) -> str:
    """An ExplicitHashKey inside shard ``i`` of a stream created with ``shards`` even shards."""
    return str(i * (2**128 // shards) + 1)


class Kinesis:
    def __init__(self, client: Any) -> None:
        self.client = client

    async def create(self, shards: int, name: str | None = None) -> tuple[str, str]:
        name = name or f"s-{uuid.uuid4().hex[:12]}"
        await self.client.create_stream(StreamName=name, ShardCount=shards)
        summary = (await self.client.describe_stream_summary(StreamName=name))["StreamDescriptionSummary"]
        return name, str(summary["StreamARN"])

    async def put(self, arn: str, data: str, *, shard: int = 0, shards: int = 1, key: str = "k") -> str:
        resp = await self.client.put_record(StreamARN=arn, Data=data.encode(), PartitionKey=key,
                                            ExplicitHashKey=shard_hash(shard, shards))
        return str(resp["SequenceNumber"])


@pytest.fixture
def aws(moto_server: str) -> AwsConfig:
    return AwsConfig(region=REGION, endpoint_url=moto_server, account_id="123456789012")


@pytest.fixture
async def kinesis(aws: AwsConfig) -> AsyncIterator[Kinesis]:
    async with create_client("kinesis", aws) as client:
        yield Kinesis(client)


def datas(records: list[dict[str, Any]]) -> list[str]:
    import base64

    return [base64.b64decode(r["kinesis"]["data"]).decode() for r in records]


class DataFunction(RecordingFunction):
    """Records the decoded Kinesis data of each batch."""

    async def invoke(self, invocation: Any) -> Result:
        records = json.loads(invocation.payload)["Records"]
        self.batches.append(datas(records))
        return await self.handler(records) if self.handler is not None else ok(None)


async def test_four_shards_in_order_with_bisect_and_failure_record_to_sqs(
    stream_harness: StreamHarness, kinesis: Kinesis, aws: AwsConfig,
) -> None:
    _, arn = await kinesis.create(4)
    expected: dict[int, list[str]] = {i: [] for i in range(4)}
    for n in range(10):
        for i in range(4):
            data = "poison" if (i, n) == (2, 6) else f"s{i}-{n}"
            await kinesis.put(arn, data, shard=i, shards=4)
            if data != "poison":
                expected[i].append(data)

    async def handler(records: list[dict[str, Any]]) -> Result:
        return fail("bad record") if "poison" in datas(records) else ok(None)

    fn = DataFunction(handler)
    async with create_client("sqs", aws) as sqs:
        queue_url = (await sqs.create_queue(QueueName=f"fail-{uuid.uuid4().hex[:8]}"))["QueueUrl"]
        dest = SqsDestination(queue_url, aws=aws)
        async with stream_harness.source(fn, api=None, aws=aws, stream_arn=arn, batch_size=10,
                                         bisect_on_error=True, max_retry_attempts=0, on_failure=dest):
            def good() -> dict[int, list[str]]:
                ok_batches = [b for b in fn.batches if "poison" not in b]
                return {i: [d for b in ok_batches for d in b if d.startswith(f"s{i}-")] for i in range(4)}

            await until(lambda: good() == expected, deadline=30, what="every good record once, in order")
            resp = await sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=5)
        [message] = resp["Messages"]
    record = json.loads(message["Body"])
    info = record["KinesisBatchInfo"]
    assert info["batchSize"] == 1
    assert info["shardId"] == "shardId-000000000002"
    assert info["streamArn"] == arn
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert fn.batches.count(["poison"]) == 1  # max_retry_attempts 0: bisected down, tried once
    assert stream_harness.metric("router_destination_deliveries_total", function="fn", kind="sqs",
                                 outcome="success") == 1


async def test_stream_not_found_then_created_recovers(
    stream_harness: StreamHarness, kinesis: Kinesis, aws: AwsConfig,
) -> None:
    name = f"later-{uuid.uuid4().hex[:8]}"
    arn = f"arn:aws:kinesis:{REGION}:123456789012:stream/{name}"
    fn = DataFunction()
    async with stream_harness.source(fn, api=None, aws=aws, stream_arn=arn):
        await until(lambda: stream_harness.errors() >= 2, what="errors counted")
        reasons = await stream_harness.readiness.reasons()
        assert any(r.startswith("route clicks: stream not found (ResourceNotFoundException); "
                                "check source.stream_arn and aws.region") for r in reasons), reasons
        _, created = await kinesis.create(1, name=name)
        assert created == arn
        await kinesis.put(arn, "hello")
        await until(lambda: fn.seen() == ["hello"], deadline=15, what="processed after recovery")
        assert await stream_harness.readiness.reasons() == ["starting"]


async def test_split_parent_is_finished_before_children(
    stream_harness: StreamHarness, kinesis: Kinesis, aws: AwsConfig, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="router.sources.stream")
    _, arn = await kinesis.create(1)
    for n in range(3):
        await kinesis.put(arn, f"p{n}")
    fn = DataFunction()
    async with stream_harness.source(fn, api=None, aws=aws, stream_arn=arn, batch_size=10):
        await until(lambda: fn.seen() == ["p0", "p1", "p2"], what="the parent's records")
        await kinesis.client.split_shard(StreamARN=arn, ShardToSplit="shardId-000000000000",
                                         NewStartingHashKey=str(2**127))

        def messages() -> list[str]:
            return [r.getMessage() for r in caplog.records]

        await until(lambda: sum("from TRIM_HORIZON" in m for m in messages()) == 3,
                    what="both children started")
        assert (await stream_harness.checkpoints())["shardId-000000000000"] == SHARD_END
    text = messages()
    ended = text.index("route 'clicks': shard shardId-000000000000 is closed and processed to its end")
    for child in ("shardId-000000000001", "shardId-000000000002"):
        assert text.index(f"route 'clicks': reading shard {child} from TRIM_HORIZON") > ended
