"""Fixtures of the amqp source tests: ``harness`` (the real RabbitMQ at ``amqp_url``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.unit.sources.amqp.support import Harness


@pytest.fixture(name="harness")
async def harness_fixture(tmp_path: Path, amqp_url: str) -> AsyncIterator[Harness]:
    async with aiohttp.ClientSession() as session:
        h = Harness(tmp_path, amqp_url, session)
        try:
            yield h
        finally:
            await h.close()
