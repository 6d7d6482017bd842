"""The polling-source contract (tests/unit/sources/contract.py) for the kinesis source on moto_server:
acknowledging is the shard's checkpoint in the state store."""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from router.aws import create_client
from router.config.models import AwsConfig
from router.readiness import Readiness
from tests.unit.sources.contract import PollerContract
from tests.unit.sources.functions import FunctionInvoker
from tests.unit.sources.stream.support import StreamHarness

REGION = "eu-west-1"
SHARD = "shardId-000000000000"


class KinesisAdapter:
    route = "clicks"

    def __init__(self, harness: StreamHarness, client: Any, aws: AwsConfig) -> None:
        self.harness = harness
        self.client = client
        self.aws = aws
        self.readiness: Readiness = harness.readiness
        self.arn = ""
        self._name = ""
        self._last = ""  # sequence number of the last record put

    async def create(self, name: str | None = None) -> str:
        name = name or f"s-{uuid.uuid4().hex[:12]}"
        await self.client.create_stream(StreamName=name, ShardCount=1)
        summary = (await self.client.describe_stream_summary(StreamName=name))["StreamDescriptionSummary"]
        self.arn = str(summary["StreamARN"])
        return self.arn

    @contextlib.asynccontextmanager
    async def running(self, fn: FunctionInvoker, *, concurrency: int | None = None,
                      **source: Any) -> AsyncIterator[Any]:
        arn = source.pop("stream_arn", self.arn)
        async with self.harness.source(fn, api=None, aws=self.aws, stream_arn=arn,  # type: ignore[arg-type]
                                       concurrency=concurrency, batch_size=1, **source) as src:
            yield src

    async def publish(self, *bodies: str) -> None:
        for body in bodies:
            resp = await self.client.put_record(StreamARN=self.arn, Data=body.encode(), PartitionKey="k")
            self._last = str(resp["SequenceNumber"])

    def bodies(self, event: dict[str, Any]) -> list[str]:
        return [base64.b64decode(r["kinesis"]["data"]).decode() for r in event["Records"]]

    async def acknowledged(self) -> bool:
        return (await self.harness.checkpoints()).get(SHARD) == self._last

    def missing(self) -> dict[str, Any]:
        self._name = f"later-{uuid.uuid4().hex[:8]}"
        return {"stream_arn": f"arn:aws:kinesis:{REGION}:123456789012:stream/{self._name}"}

    async def create_missing(self) -> None:
        await self.create(self._name)


class TestKinesisContract(PollerContract):
    @pytest.fixture
    async def contract(self, stream_harness: StreamHarness,
                       moto_server: str) -> AsyncIterator[KinesisAdapter]:
        aws = AwsConfig(region=REGION, endpoint_url=moto_server, account_id="123456789012")
        async with create_client("kinesis", aws) as client:
            adapter = KinesisAdapter(stream_harness, client, aws)
            await adapter.create()
            yield adapter
