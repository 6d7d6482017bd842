"""Support for the sqs source tests: queues on moto_server and a harness running SqsSources under the real
Dispatcher (the fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from router.config.models import AwsConfig, RouteConfig
from router.core.dispatcher import Dispatcher
from router.metrics import Metrics
from router.queues.sql import SqlQueue
from router.readiness import Readiness
from router.sources.sqs.source import SqsSource
from router.state.store import StateStore
from tests.unit.core.helpers import make_config
from tests.unit.sources.functions import FunctionInvoker


class Sqs:
    """Test-side SQS calls against moto_server (an open aiobotocore client)."""

    def __init__(self, client: Any, aws: AwsConfig) -> None:
        self.client = client
        self.aws = aws

    async def create(self, *, fifo: bool = False, visibility: int = 30, dlq_after: int | None = None,
                     name: str | None = None) -> str:
        name = name or f"q-{uuid.uuid4().hex[:12]}"
        attrs: dict[str, str] = {"VisibilityTimeout": str(visibility)}
        if fifo:
            name += ".fifo"
            attrs["FifoQueue"] = "true"
        if dlq_after is not None:
            dlq = await self.create(fifo=fifo, name=name.removesuffix(".fifo") + "-dlq")
            arn = await self.arn(dlq)
            attrs["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": dlq_after})
        resp = await self.client.create_queue(QueueName=name, Attributes=attrs)
        return str(resp["QueueUrl"])

    async def arn(self, url: str) -> str:
        resp = await self.client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(resp["Attributes"]["QueueArn"])

    async def send(self, url: str, *bodies: str, group: str | None = None, **kw: Any) -> list[str]:
        ids = []
        for body in bodies:
            extra = dict(kw)
            if group is not None:
                extra.update(MessageGroupId=group, MessageDeduplicationId=uuid.uuid4().hex)
            resp = await self.client.send_message(QueueUrl=url, MessageBody=body, **extra)
            ids.append(resp["MessageId"])
        return ids

    async def counts(self, url: str) -> tuple[int, int]:
        """(visible, in flight) as the queue reports them."""
        resp = await self.client.get_queue_attributes(QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
        a = resp["Attributes"]
        return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])

    async def drain(self, url: str, wait: int = 1) -> list[dict[str, Any]]:
        """Receive (and delete) everything visible in ``url``."""
        out: list[dict[str, Any]] = []
        while True:
            resp = await self.client.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait,
                MessageSystemAttributeNames=["All"])
            msgs = resp.get("Messages") or []
            if not msgs:
                return out
            out.extend(msgs)
            await self.client.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)])


class Harness:
    """A real Dispatcher with in-process functions, and SqsSources running under it."""

    def __init__(self, tmp_path: Path, aws: AwsConfig, session: aiohttp.ClientSession) -> None:
        self.tmp_path = tmp_path
        self.aws = aws
        self.session = session
        self.metrics = Metrics()
        self.readiness = Readiness()
        self.store: StateStore | None = None
        self.sources: list[tuple[SqsSource, asyncio.Task[None]]] = []

    @contextlib.asynccontextmanager
    async def source(
        self, queue_url: str, fn: FunctionInvoker, *, concurrency: int | None = None,
        filters: list[dict[str, Any]] | None = None, wait_time: int | str = 1,
        backoff: tuple[float, float] = (0.05, 0.2), stop_timeout: float = 10.0, **source: Any,
    ) -> AsyncIterator[SqsSource]:
        """Run an SqsSource for ``queue_url`` calling ``fn`` for the block; stop it after. ``source``: more
        settings of the route's source; ``wait_time`` 1 s unless given (20 s would slow every stop)."""
        function: dict[str, Any] = {} if concurrency is None else {"concurrency": concurrency}
        config = make_config({"fn": function}, config_dir=self.tmp_path, aws=self.aws.model_dump())
        if self.store is None:
            self.store = StateStore.from_url(f"sqlite:///{self.tmp_path / 'state.db'}", self.tmp_path)
            await self.store.open()
        dispatcher = Dispatcher(config=config, invokers={"fn": fn}, queue=SqlQueue(self.store),
                                metrics=self.metrics)
        route = RouteConfig.model_validate({
            "name": "uploads", "function": "fn", "filters": filters or [],
            "source": {"type": "sqs", "queue_url": queue_url, "wait_time": wait_time, **source},
        })
        src = SqsSource(route, dispatcher=dispatcher, metrics=self.metrics, readiness=self.readiness,
                        aws=self.aws, backoff=backoff)
        task = asyncio.create_task(src.run())
        try:
            yield src
        finally:
            await src.stop(stop_timeout)
            await task

    def events(self) -> float:
        return self.metrics.registry.get_sample_value(
            "router_source_events_total", {"route": "uploads", "type": "sqs"}) or 0.0

    def errors(self) -> float:
        return self.metrics.registry.get_sample_value(
            "router_source_errors_total", {"route": "uploads", "type": "sqs"}) or 0.0

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()
