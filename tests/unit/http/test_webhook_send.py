"""``router_webhook_requests_total`` counts the status the client was sent, not the one meant."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

from router.http.context import HttpContext
from router.http.server import build_app
from router.http.webhook import WebhookSource
from router.invocation import Invocation, Result
from router.metrics import Metrics
from router.readiness import Readiness
from tests.waiting import until

from .conftest import FakeDispatcher, make_config, start

ROUTE = {"name": "r", "function": "echo", "source": {"type": "webhook", "path": "/r"}}


@dataclass
class GatedDispatcher(FakeDispatcher):
    """Holds each sync invocation until ``gate`` is set."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def invoke(self, inv: Invocation) -> Result:
        self.entered.set()
        await self.gate.wait()
        return await super().invoke(inv)


def context(dispatcher: FakeDispatcher) -> HttpContext:
    ctx = HttpContext(make_config(routes=[ROUTE]), dispatcher, Metrics(), Readiness())
    ctx.readiness.set_started()
    return ctx


async def test_a_reply_the_client_never_got_is_a_source_error_not_a_200() -> None:
    dispatcher = GatedDispatcher(functions={"echo"})
    ctx = context(dispatcher)
    runner, url = await start(build_app(ctx))
    registry = ctx.metrics.registry
    try:
        host, port = url.removeprefix("http://").split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /r HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 2\r\n\r\n{}")
        await writer.drain()
        await asyncio.wait_for(dispatcher.entered.wait(), 10)
        writer.close()  # the client gives up while the function runs
        await writer.wait_closed()
        assert runner.server is not None
        server = runner.server
        await until(lambda: all(h.transport is None for h in server.connections),
                    "the router to see the connection go")
        dispatcher.gate.set()

        ok = ("router_webhook_requests_total", {"route": "r", "status": "200"})
        lost = ("router_source_errors_total", {"route": "r", "type": "webhook"})
        await until(lambda: registry.get_sample_value(*ok) or registry.get_sample_value(*lost),
                    "the request to be counted")
        assert registry.get_sample_value(*ok) is None
        assert registry.get_sample_value(*lost) == 1
    finally:
        dispatcher.gate.set()
        await runner.cleanup()


async def test_a_response_aiohttp_refuses_to_write_becomes_a_counted_500() -> None:
    ctx = context(FakeDispatcher(functions={"echo"}))
    source = WebhookSource(ctx.config.routes[0], ctx)

    async def bad(request: web.Request) -> web.StreamResponse:  # a header the mapping would have refused
        return await source._send(request, web.Response(text="x", headers={"X-Bad": "a\r\nb"}), "rid-1")

    app = web.Application()
    app.router.add_post("/bad", bad)
    runner, url = await start(app)
    try:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /bad HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await writer.wait_closed()
    finally:
        await runner.cleanup()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 ")
    assert b"X-Bad" not in head
    assert b"apigw-requestid: rid-1" in head.lower()
    assert body == b'{"message": "Internal Server Error"}'
    registry = ctx.metrics.registry
    assert registry.get_sample_value("router_webhook_requests_total", {"route": "r", "status": "500"}) == 1
    assert registry.get_sample_value("router_webhook_requests_total", {"route": "r", "status": "200"}) is None
