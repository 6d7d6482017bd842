"""The HTTP front under slow and hostile clients, over real loopback sockets:
header, body and idle timeouts, the connection cap, the request-body budget, auth before the body."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from router.http.context import HttpContext
from router.http.server import build_app, build_runner
from router.invocation import Result
from router.metrics import Metrics
from router.readiness import Readiness
from tests.waiting import until

from .conftest import FakeDispatcher, make_config

DEADLINE = 10.0  # every wait below ends on its condition, long before this


@dataclass
class Front:
    host: str
    port: int
    ctx: HttpContext
    dispatcher: FakeDispatcher

    def sample(self, name: str, **labels: str) -> float:
        return self.ctx.metrics.registry.get_sample_value(name, labels) or 0.0

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port)

    async def get(self, path: str = "/livez") -> tuple[int, bytes]:
        """One request on its own connection: the status and the body."""
        reader, writer = await self.connect()
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            return parse(await asyncio.wait_for(reader.read(), DEADLINE))
        finally:
            writer.close()


def parse(raw: bytes) -> tuple[int, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One response, read by its Content-Length (the server may keep reading what the client sends
    before it closes, as aiohttp does for up to 10 s after an early answer)."""
    async with asyncio.timeout(DEADLINE):
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length)
    return int(head.split(b" ", 2)[1]), body


async def closed_by_peer(reader: asyncio.StreamReader, within: float = DEADLINE) -> bytes:
    """Everything the server sent until it closed the connection (fails if it stays open)."""
    data = b""
    async with asyncio.timeout(within):
        while chunk := await reader.read(65536):
            data += chunk
    return data


def hook(name: str, path: str, **source: Any) -> dict[str, Any]:
    invocation = source.pop("invocation", None)
    route: dict[str, Any] = {"name": name, "function": "echo", "source": {"type": "webhook", "path": path,
                                                                         **source}}
    if invocation:
        route["invocation"] = invocation
    return route


@pytest.fixture
async def front(dispatcher: FakeDispatcher) -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def start(*routes: dict[str, Any], cap: int = 10_000, **server: Any) -> Front:
        ctx = HttpContext(make_config(routes=list(routes), server=server), dispatcher, Metrics(), Readiness())
        ctx.readiness.set_started()
        runner = build_runner(build_app(ctx), ctx, listener="main", cap=cap)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return Front(host, port, ctx, dispatcher)

    yield start
    for r in runners:
        await r.cleanup()


# --- defect 4: slow clients ------------------------------------------------------------------------------


async def test_trickled_headers_are_closed_after_the_header_timeout(front: Any) -> None:
    f = await front(header_timeout=0.3, idle_timeout=60)
    reader, writer = await f.connect()
    started = time.monotonic()

    async def trickle() -> None:  # one byte every 50 ms: never a complete header block
        for byte in b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)

    sender = asyncio.create_task(trickle())
    try:
        await closed_by_peer(reader)
    finally:
        sender.cancel()
        writer.close()
    assert time.monotonic() - started < DEADLINE
    assert f.sample("router_http_connections_closed_total", listener="main", reason="header_timeout") == 1
    assert (await f.get())[0] == 200  # others are served


async def test_headers_over_64_kib_are_closed(front: Any) -> None:
    f = await front(header_timeout=30)
    reader, writer = await f.connect()
    writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
    for i in range(10):  # each line is within aiohttp's 8,190 bytes, together they are 80 KB
        writer.write(b"X-Fill-%d: %s\r\n" % (i, b"a" * 8000))
        await asyncio.sleep(0.01)
    assert await closed_by_peer(reader) == b""
    writer.close()
    assert f.sample("router_http_connections_closed_total", listener="main", reason="headers_too_large") == 1


async def test_idle_connections_are_closed_after_the_idle_timeout(front: Any) -> None:
    f = await front(idle_timeout=0.3)
    # A connection that never sends a byte...
    reader, writer = await f.connect()
    assert await closed_by_peer(reader) == b""
    writer.close()
    # ...and a keep-alive connection after its response.
    reader, writer = await f.connect()
    writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    data = await closed_by_peer(reader)
    writer.close()
    assert data.startswith(b"HTTP/1.1 200")


async def test_a_trickled_body_gets_408_after_the_body_timeout(front: Any) -> None:
    f = await front(hook("slow", "/slow"), body_timeout=0.3)
    reader, writer = await f.connect()
    writer.write(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")

    async def trickle() -> None:
        for _ in range(998):
            writer.write(b" ")
            await asyncio.sleep(0.05)

    sender = asyncio.create_task(trickle())
    try:
        status, body = await read_response(reader)
    finally:
        sender.cancel()
        writer.close()
    assert status == 408
    assert "body did not arrive within 0.3 seconds" in json.loads(body)["message"]
    assert f.sample("router_http_requests_refused_total", reason="body_timeout") == 1
    assert f.sample("router_webhook_requests_total", route="slow", status="408") == 1
    assert f.dispatcher.invoked == []
    assert f.sample("router_http_body_buffer_bytes") == 0


async def test_a_client_that_does_not_read_its_response_is_closed_after_the_body_timeout(
        front: Any, dispatcher: Any) -> None:
    big = b'"' + b"r" * (6 * 1024 * 1024 - 10) + b'"'
    dispatcher.scripts["echo"] = lambda inv: Result(payload=big)
    f = await front(hook("big", "/big", methods=["GET"]), body_timeout=0.5)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel buffers little for it
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (f.host, f.port))
    _, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads the answer
    await until(lambda: f.sample("router_http_connections_closed_total", listener="main",
                                 reason="send_timeout") == 1, "the connection closed for its send timeout")
    await until(lambda: f.sample("router_http_connections", listener="main") == 0, "no connection left")
    writer.close()


# --- the connection cap -------------------------------------------------------------------------------------


async def test_at_the_cap_an_idle_connection_makes_room(front: Any) -> None:
    f = await front(cap=3)
    held = [await f.connect() for _ in range(3)]
    await until(lambda: f.sample("router_http_connections", listener="main") == 3, "three connections")
    assert (await f.get())[0] == 200  # the oldest idle connection was closed for it
    assert await closed_by_peer(held[0][0]) == b""
    assert f.sample("router_http_connections_closed_total", listener="main", reason="evicted") == 1
    for _, w in held:
        w.close()


async def test_at_the_cap_with_every_connection_busy_a_new_one_gets_503(front: Any, dispatcher: Any) -> None:
    gate = asyncio.Event()
    entered: list[object] = []

    async def submit(inv: Any) -> str:  # async webhooks wait here: their requests are in progress
        entered.append(inv)
        await gate.wait()
        return str(inv.request_id)

    dispatcher.submit = submit
    f = await front(hook("later", "/later", invocation="async"), cap=2)
    held = []
    for _ in range(2):
        reader, writer = await f.connect()
        writer.write(b"POST /later HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        held.append((reader, writer))
    await until(lambda: len(entered) == 2, "both requests in submit")
    status, body = await f.get()
    assert status == 503
    assert "too many connections" in json.loads(body)["message"]
    assert f.sample("router_http_connections_closed_total", listener="main", reason="over_cap") == 1
    gate.set()
    for reader, writer in held:
        assert (await read_response(reader))[0] == 202
        writer.close()


async def test_two_thousand_slowloris_connections_leave_the_router_serving(front: Any) -> None:
    """2,000 connections that each send a partial request line and stall: a normal client still gets its
    answer, and the router closes all of them once the header timeout has passed."""
    f = await front(header_timeout=1.0)
    conns = []
    try:
        for _ in range(2000):
            reader, writer = await f.connect()
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ")
            conns.append((reader, writer))
        assert (await f.get())[0] == 200
        results = await asyncio.gather(*(closed_by_peer(r, 30) for r, _ in conns))
        assert all(data == b"" for data in results)
        closed = f.sample("router_http_connections_closed_total", listener="main", reason="header_timeout")
        assert closed == 2000
    finally:
        for _, w in conns:
            w.close()


# --- defect 5: check before buffering, the body budget -------------------------------------------------


def _signed(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


async def test_auth_on_headers_answers_before_the_body_is_sent(front: Any) -> None:
    """An HMAC route without its signature header, a bearer route with a wrong token: 401 at once,
    while the client has sent only the headers of a 1 MB body."""
    f = await front(
        hook("gh", "/gh", auth={"type": "hmac", "secret": "s3cret"}),
        hook("tok", "/tok", auth={"type": "bearer", "token": "t0ken"}),
    )
    for path, extra in (("/gh", ""), ("/tok", "Authorization: Bearer wrong\r\n")):
        reader, writer = await f.connect()
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: 1048575\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
        writer.close()
        assert head.startswith(b"HTTP/1.1 401"), head
    assert f.dispatcher.invoked == []


async def test_content_length_over_the_limit_is_413_before_the_body(front: Any) -> None:
    f = await front(hook("big", "/big"), max_body=1000)
    reader, writer = await f.connect()
    writer.write(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
    writer.close()
    assert head.startswith(b"HTTP/1.1 413")


async def test_body_budget_refuses_with_503_what_does_not_fit(front: Any) -> None:
    """Two stalled 600 KB bodies under a 1 MB budget: the first holds 600 KB, the second gets 503
    after waiting; once the first has gone (408), the budget is free again."""
    f = await front(hook("gh", "/gh", auth={"type": "hmac", "secret": "s3cret"}),
                    max_body=600_000, max_async_body=600_000, max_body_buffer=1_000_000, body_timeout=3)
    head = (b"POST /gh HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: sha256=00\r\n"
            b"Content-Length: 600000\r\n\r\n")
    r1, w1 = await f.connect()
    w1.write(head + b"x" * 599_999)  # one byte short: it stalls
    await until(lambda: f.sample("router_http_body_buffer_bytes") == 600_000, "the stalled body buffered")
    r2, w2 = await f.connect()
    w2.write(head + b"x" * 1000)
    status, body = await read_response(r2)
    assert status == 503
    assert "too many request bodies" in json.loads(body)["message"]
    assert f.sample("router_http_requests_refused_total", reason="body_budget") == 1
    status, _ = await read_response(r1)
    assert status == 408
    await until(lambda: f.sample("router_http_body_buffer_bytes") == 0, "the body budget given back")
    # and a request that fits is read and checked as before
    body = b'{"ok": true}'
    r3, w3 = await f.connect()
    w3.write(b"POST /gh HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Hub-Signature-256: "
             + _signed(b"s3cret", body).encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    status, _ = await read_response(r3)
    for w in (w1, w2, w3):
        w.close()
    assert status == 200


async def test_chunked_bodies_take_budget_as_they_arrive(front: Any) -> None:
    f = await front(hook("echo", "/echo"), max_body=600_000, max_async_body=600_000,
                    max_body_buffer=1_000_000)
    reader, writer = await f.connect()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"y" * 100_000
    for _ in range(3):
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    await until(lambda: f.sample("router_http_body_buffer_bytes") >= 300_000, "three chunks buffered")
    assert f.sample("router_http_body_buffer_bytes") <= 400_000  # taken as it came, not max_body up front
    writer.write(b"0\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
    writer.close()
    assert head.startswith(b"HTTP/1.1 200")
    await until(lambda: f.sample("router_http_body_buffer_bytes") == 0, "the body budget given back")


async def test_a_body_holds_its_room_until_the_request_is_answered(front: Any, dispatcher: Any) -> None:
    gate = asyncio.Event()
    entered: list[object] = []

    async def submit(inv: Any) -> str:
        entered.append(inv)
        await gate.wait()
        return str(inv.request_id)

    dispatcher.submit = submit
    f = await front(hook("later", "/later", invocation="async"))
    reader, writer = await f.connect()
    body = b'{"n": "' + b"z" * 5000 + b'"}'
    writer.write(b"POST /later HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await until(lambda: len(entered) == 1, "the request in submit")
    assert f.sample("router_http_body_buffer_bytes") == len(body)  # the event is being persisted
    gate.set()
    assert (await read_response(reader))[0] == 202
    await until(lambda: f.sample("router_http_body_buffer_bytes") == 0, "the body budget given back")
    writer.close()


def test_the_fast_path_knows_every_middleware_and_response_hook(dispatcher: FakeDispatcher) -> None:
    """The webhook fast path (router/http/fast_webhook.py) answers without aiohttp's middlewares and
    ``on_response_prepare`` hooks, doing what these do itself (a function URL host goes to aiohttp; errors
    answer 500 JSON; a draining router closes). A new middleware or hook must be mirrored there, or the
    fast path must leave its requests to aiohttp: this test names the ones it mirrors."""
    from router.http.server import close_when_draining

    ctx = HttpContext(make_config(routes=[hook("h", "/h")]), dispatcher, Metrics(), Readiness())
    app = build_app(ctx)
    assert [m.__name__ for m in app.middlewares] == ["json_errors", "json_error_pages", "url_hosts"]  # type: ignore[attr-defined]
    assert list(app.on_response_prepare) == [close_when_draining]
