"""Support for the amqp source tests: a harness running AmqpSources against the real RabbitMQ under the
real Dispatcher, with a fresh metrics registry (its fixture is in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp

from router.config.models import AwsConfig, RouteConfig
from router.core.dispatcher import Dispatcher
from router.metrics import Metrics
from router.queues.sql import SqlQueue
from router.readiness import Readiness
from router.sources.amqp.source import AmqpSource
from router.state.store import StateStore
from tests.unit.core.helpers import make_config
from tests.unit.sources.functions import FunctionInvoker


class Harness:
    def __init__(self, tmp_path: Path, url: str, session: aiohttp.ClientSession) -> None:
        self.tmp_path = tmp_path
        self.url = url
        self.session = session
        self.metrics = Metrics()
        self.readiness = Readiness()
        self.store: StateStore | None = None
        self.queues: list[str] = []

    def queue(self) -> str:
        name = f"unit-{uuid.uuid4().hex[:10]}"
        self.queues += [name, name + ".router-delay"]
        return name

    @contextlib.asynccontextmanager
    async def source(self, fn: FunctionInvoker, *, url: str | None = None, stop_timeout: float = 5.0,
                     filters: list[dict[str, Any]] | None = None, concurrency: int | None = None,
                     **source: Any) -> AsyncIterator[AmqpSource]:
        function: dict[str, Any] = {} if concurrency is None else {"concurrency": concurrency}
        config = make_config({"fn": function}, config_dir=self.tmp_path)
        if self.store is None:
            self.store = StateStore.from_url(f"sqlite:///{self.tmp_path / 'state.db'}", self.tmp_path)
            await self.store.open()
        dispatcher = Dispatcher(config=config, invokers={"fn": fn}, queue=SqlQueue(self.store),
                                metrics=self.metrics)
        route = RouteConfig.model_validate({
            "name": "orders", "function": "fn", "filters": filters or [],
            # The harness's queues are the router's to declare (the default consumes an existing one).
            "source": {"type": "amqp", "url": url or self.url, "declare": True, **source},
        })
        src = AmqpSource(route, dispatcher=dispatcher, metrics=self.metrics, readiness=self.readiness,
                         aws=AwsConfig(), max_body=6 * 1024 * 1024, backoff=(0.05, 0.2))
        task = asyncio.create_task(src.run())
        try:
            yield src
        finally:
            await src.stop(stop_timeout)
            await task

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, {"route": "orders", **labels}) or 0.0

    def ready(self) -> bool:
        return self.readiness._flags.get("route orders", "x") is None

    def reason(self) -> str:
        return self.readiness._flags.get("route orders") or ""

    async def publish(self, queue: str, *bodies: bytes) -> None:
        conn = await aio_pika.connect(self.url)
        async with conn:
            channel = await conn.channel()
            for body in bodies:
                await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)

    async def get_all(self, queue: str) -> list[bytes]:
        """The bodies of every message now ready in ``queue`` (taken)."""
        conn = await aio_pika.connect(self.url)
        async with conn:
            channel = await conn.channel()
            q = await channel.declare_queue(queue, passive=True)
            out = []
            while (m := await q.get(no_ack=True, fail=False)) is not None:
                out.append(m.body)
            return out

    async def count(self, queue: str) -> int:
        conn = await aio_pika.connect(self.url)
        async with conn:
            channel = await conn.channel()
            q = await channel.declare_queue(queue, passive=True)
            return int(q.declaration_result.message_count or 0)

    async def close(self) -> None:
        conn = await aio_pika.connect(self.url)
        async with conn:
            channel = await conn.channel()
            for name in self.queues:
                await channel.queue_delete(name)
        if self.store is not None:
            await self.store.close()
