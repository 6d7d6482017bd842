"""A scripted fake dispatcher and a real aiohttp server on 127.0.0.1 for the HTTP layer's tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from router.config.models import RouterConfig
from router.errors import FunctionNotFound, PayloadTooLarge, Throttled
from router.http.context import HttpContext
from router.http.server import build_app
from router.invocation import Invocation, Result
from router.metrics import Metrics
from router.readiness import Readiness

Script = Callable[[Invocation], Result]


def echo(inv: Invocation) -> Result:
    return Result(payload=inv.payload)


@dataclass
class FakeDispatcher:
    """Implements Dispatch; results are scripted per function, throttles and limits on demand."""

    functions: set[str] = field(default_factory=lambda: {"echo"})
    region: str = "us-east-1"
    account_id: str = "000000000000"
    scripts: dict[str, Script] = field(default_factory=dict)
    throttled: set[str] = field(default_factory=set)
    account_throttled: set[str] = field(default_factory=set)
    max_async: int | None = None
    submit_gate: asyncio.Event | None = None
    submit_entered: asyncio.Event = field(default_factory=asyncio.Event)
    submit_error: Exception | None = None
    invoke_error: Exception | None = None
    invoked: list[Invocation] = field(default_factory=list)
    submitted: list[Invocation] = field(default_factory=list)
    paused_routes: set[str] = field(default_factory=set)
    held_back: list[tuple[str, str]] = field(default_factory=list)

    def has_function(self, name: str) -> bool:
        return name in self.functions

    def route_enabled(self, route: str) -> bool:
        return route not in self.paused_routes

    def held(self, what: str, name: str) -> None:
        self.held_back.append((what, name))

    def function_names(self) -> list[str]:
        return sorted(self.functions)

    def arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{name}"

    def _check(self, inv: Invocation) -> None:
        if inv.function not in self.functions:
            raise FunctionNotFound(inv.function)

    async def invoke(self, inv: Invocation) -> Result:
        self._check(inv)
        if self.invoke_error is not None:
            raise self.invoke_error
        if inv.function in self.throttled:
            raise Throttled(inv.function, 1)
        if inv.function in self.account_throttled:
            raise Throttled(inv.function, 1, Throttled.ACCOUNT)
        self.invoked.append(inv)
        return self.scripts.get(inv.function, echo)(inv)

    async def invoke_waiting(self, inv: Invocation) -> Result:
        self._check(inv)
        self.invoked.append(inv)
        return self.scripts.get(inv.function, echo)(inv)

    async def submit(self, inv: Invocation) -> str:
        self._check(inv)
        if self.max_async is not None and len(inv.payload) > self.max_async:
            raise PayloadTooLarge("async event", len(inv.payload), self.max_async)
        self.submit_entered.set()
        if self.submit_error is not None:
            raise self.submit_error
        if self.submit_gate is not None:
            await self.submit_gate.wait()
        self.submitted.append(inv)
        return inv.request_id


def make_config(**overrides: Any) -> RouterConfig:
    data: dict[str, Any] = {
        "functions": {name: {"http": {"url": "http://127.0.0.1:9/"}} for name in ("echo", "fails", "busy")},
    }
    data.update(overrides)
    return RouterConfig.model_validate(data)


@dataclass
class Server:
    url: str
    ctx: HttpContext
    dispatcher: FakeDispatcher
    session: aiohttp.ClientSession

    def sample(self, name: str, labels: dict[str, str]) -> float | None:
        return self.ctx.metrics.registry.get_sample_value(name, labels)


@pytest.fixture
def dispatcher() -> FakeDispatcher:
    return FakeDispatcher(functions={"echo", "fails", "busy"})


async def start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


class _Serve:
    def __init__(self, dispatcher: FakeDispatcher) -> None:
        self.dispatcher = dispatcher
        self.runners: list[web.AppRunner] = []
        self.sessions: list[aiohttp.ClientSession] = []

    async def __call__(self, config: RouterConfig | None = None, *, ready: bool = True) -> Server:
        ctx = HttpContext(config or make_config(), self.dispatcher, Metrics(), Readiness())
        if ready:
            ctx.readiness.set_started()
        runner, url = await start(build_app(ctx))
        self.runners.append(runner)
        session = aiohttp.ClientSession()
        self.sessions.append(session)
        return Server(url, ctx, self.dispatcher, session)

    async def close(self) -> None:
        for s in self.sessions:
            await s.close()
        for r in self.runners:
            await r.cleanup()


@pytest.fixture
async def serve(dispatcher: FakeDispatcher) -> AsyncIterator[_Serve]:
    """``await serve(config)`` starts the real app on a free loopback port; all closed at teardown."""
    s = _Serve(dispatcher)
    yield s
    await s.close()
