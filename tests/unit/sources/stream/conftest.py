"""Fixtures of the stream engine tests: ``stream_harness``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.unit.sources.stream.support import StreamHarness


@pytest.fixture(name="stream_harness")
async def stream_harness_fixture(tmp_path: Path) -> AsyncIterator[StreamHarness]:
    async with aiohttp.ClientSession() as session:
        h = StreamHarness(tmp_path, session)
        try:
            yield h
        finally:
            await h.close()
