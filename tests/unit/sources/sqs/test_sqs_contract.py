"""The polling-source contract (tests/unit/sources/contract.py) for the sqs source on moto_server."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from router.readiness import Readiness
from tests.unit.sources.contract import PollerContract
from tests.unit.sources.functions import FunctionInvoker
from tests.unit.sources.sqs.support import Harness, Sqs


class SqsAdapter:
    route = "uploads"

    def __init__(self, harness: Harness, sqs: Sqs, url: str) -> None:
        self.harness = harness
        self.sqs = sqs
        self.url = url
        self.readiness: Readiness = harness.readiness
        self._later = ""

    @contextlib.asynccontextmanager
    async def running(self, fn: FunctionInvoker, *, concurrency: int | None = None,
                      **source: Any) -> AsyncIterator[Any]:
        url = source.pop("queue_url", self.url)
        async with self.harness.source(url, fn, concurrency=concurrency, batch_size=1, **source) as src:
            yield src

    async def publish(self, *bodies: str) -> None:
        await self.sqs.send(self.url, *bodies)

    def bodies(self, event: dict[str, Any]) -> list[str]:
        return [r["body"] for r in event["Records"]]

    async def acknowledged(self) -> bool:
        return await self.sqs.counts(self.url) == (0, 0)

    def missing(self) -> dict[str, Any]:
        self._later = f"later-{uuid.uuid4().hex[:8]}"
        return {"queue_url": f"{self.sqs.aws.endpoint_url}/123456789012/{self._later}"}

    async def create_missing(self) -> None:
        self.url = await self.sqs.create(name=self._later, visibility=1)


class TestSqsContract(PollerContract):
    @pytest.fixture
    async def contract(self, harness: Harness, sqs: Sqs) -> SqsAdapter:
        return SqsAdapter(harness, sqs, await sqs.create(visibility=1))
