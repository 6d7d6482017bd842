"""The polling-source contract (tests/unit/sources/contract.py) for the amqp source on RabbitMQ."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest

from router.readiness import Readiness
from tests.unit.sources.amqp.support import Harness
from tests.unit.sources.contract import PollerContract
from tests.unit.sources.functions import FunctionInvoker


class AmqpAdapter:
    route = "orders"

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.queue = harness.queue()
        self.readiness: Readiness = harness.readiness

    @contextlib.asynccontextmanager
    async def running(self, fn: FunctionInvoker, *, concurrency: int | None = None,
                      **source: Any) -> AsyncIterator[Any]:
        # on_error: requeue, so that a failed message comes again (dead_letter would reject it for good).
        settings = {"queue": self.queue, "batch_size": 1, "prefetch": 10, "on_error": "requeue",
                    "requeue_delay": 0.2, **source}
        async with self.harness.source(fn, concurrency=concurrency, **settings) as src:
            yield src

    async def publish(self, *bodies: str) -> None:
        await self.harness.publish(self.queue, *(b.encode() for b in bodies))

    def bodies(self, event: dict[str, Any]) -> list[str]:
        return [base64.b64decode(m["data"]).decode()
                for msgs in event["rmqMessagesByQueue"].values() for m in msgs]

    async def acknowledged(self) -> bool:
        with contextlib.suppress(Exception):  # not declared yet
            return await self.harness.count(self.queue) == 0 and await self.harness.count(
                self.queue + ".router-delay") == 0 and await self._unacked() == 0
        return False

    async def _unacked(self) -> int:
        received = self.harness.sample("router_source_events_total", type="amqp")
        settled = sum(self.harness.sample("router_amqp_messages_total", outcome=o)
                      for o in ("acked", "requeued", "rejected", "returned"))
        return int(received - settled)

    def missing(self) -> dict[str, Any]:
        self.queue = self.harness.queue()
        return {"declare": False}

    async def create_missing(self) -> None:
        await self.declare()

    async def declare(self) -> None:
        """The queue as the source declares it (messages published before it exists would be dropped)."""
        conn = await aio_pika.connect(self.harness.url)
        async with conn:
            channel = await conn.channel()
            await channel.declare_queue(self.queue, durable=True)


class TestAmqpContract(PollerContract):
    @pytest.fixture
    async def contract(self, harness: Harness) -> AmqpAdapter:
        adapter = AmqpAdapter(harness)
        await adapter.declare()
        return adapter
