"""Fixtures of the engine tests: a real SQLite StateStore, a client session, a dispatcher builder."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import pytest

from router.app import build_dispatcher
from router.config.models import RouterConfig
from router.core.dispatcher import Dispatcher
from router.destinations.factory import DestinationBuilder
from router.invokers.base import Invoker
from router.metrics import Metrics
from router.state.store import StateStore


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


MakeDispatcher = Callable[..., Dispatcher]


@pytest.fixture
async def make_dispatcher(
    store: StateStore, session: aiohttp.ClientSession, metrics: Metrics
) -> AsyncIterator[MakeDispatcher]:
    """Builds dispatchers as the app does (``build_dispatcher``), with short poll intervals; closes what
    their destinations opened after the test."""
    builders: list[DestinationBuilder] = []

    def make(config: RouterConfig, invokers: Mapping[str, Invoker], **kw: Any) -> Dispatcher:
        kw.setdefault("store", store)
        kw.setdefault("metrics", metrics)
        kw.setdefault("poll_interval", 0.05)
        kw.setdefault("depth_interval", 0.05)
        dispatcher, builder = build_dispatcher(config, invokers, session=session, **kw)
        builders.append(builder)
        return dispatcher

    try:
        yield make
    finally:
        for builder in builders:
            await builder.close()


@contextlib.asynccontextmanager
async def running(dispatcher: Dispatcher, drain: float = 5.0) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``dispatcher.run()`` for the block; drain and stop it after."""
    task = asyncio.create_task(dispatcher.run())
    try:
        yield task
    finally:
        await dispatcher.drain(drain)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
