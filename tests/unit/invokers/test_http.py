"""HttpInvoker against a real aiohttp server on 127.0.0.1: status mapping, Retry-After, no redirects."""

from __future__ import annotations

import asyncio
import email.utils
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from router.config.models import FunctionConfig
from router.invocation import ErrorType, Invocation, Outcome
from router.invokers.http import HttpInvoker, parse_retry_after
from router.urls import safe_url
from tests.unit.core.helpers import serve

NOW = 1_700_000_000.0


class FixedClock:
    def time(self) -> float:
        return NOW

    def monotonic(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Target:
    """The remote function: answers by path; records what it received."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes, CIMultiDict[str]]] = []
        self.hang = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append((request.path, body, request.headers.copy()))
        path = request.path
        if path == "/echo":
            return web.json_response({"got": json.loads(body)})
        if path == "/text":
            return web.Response(text="plain words")
        if path == "/empty":
            return web.Response(status=200)
        if path == "/slow":
            await self.hang.wait()
        if path == "/redirect":
            raise web.HTTPFound("/echo")
        if path == "/big":
            return web.Response(body=b"x" * 2000)
        status = int(path.strip("/").split("/")[-1])
        headers = {"Retry-After": request.query["ra"]} if "ra" in request.query else {}
        return web.Response(status=status, text="upstream said no " + "y" * 300, headers=headers)


@pytest.fixture
async def target() -> AsyncIterator[tuple[Target, str]]:
    t = Target()
    async with serve(t.app()) as base:
        yield t, base
        t.hang.set()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def invoker(url: str, session: aiohttp.ClientSession, max_response: int = 10_000, **fn: Any) -> HttpInvoker:
    config = FunctionConfig.model_validate(
        {"http": {"url": url, "headers": {"Authorization": "Bearer t0ken"}}, **fn})
    return HttpInvoker("billing", config, session=session, clock=FixedClock(), max_response=max_response)


def inv(payload: Any = None) -> Invocation:
    return Invocation(function="billing", payload=json.dumps(payload or {"a": 1}).encode(), source="webhook",
                      attempt=2)


async def test_success_posts_event_and_returns_body(target: tuple[Target, str],
                                                    session: aiohttp.ClientSession) -> None:
    t, base = target
    request = inv({"order": 42})
    result = await invoker(f"{base}/echo", session).invoke(request)
    assert result.ok
    assert json.loads(result.payload) == {"got": {"order": 42}}
    [(_, body, headers)] = t.received
    assert json.loads(body) == {"order": 42}
    assert headers["Authorization"] == "Bearer t0ken"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Request-Id"] == request.request_id
    assert headers["X-Router-Attempt"] == "2"


async def test_non_json_body_is_wrapped_as_a_string(target: tuple[Target, str],
                                                    session: aiohttp.ClientSession) -> None:
    _, base = target
    assert (await invoker(f"{base}/text", session).invoke(inv())).payload == b'"plain words"'
    assert (await invoker(f"{base}/empty", session).invoke(inv())).payload == b"null"


@pytest.mark.parametrize(("status", "retryable", "error_type"), [
    (400, False, ErrorType.HTTP_4XX),
    (403, False, ErrorType.HTTP_4XX),
    (422, False, ErrorType.HTTP_4XX),
    (404, True, ErrorType.HTTP_4XX),
    (409, True, ErrorType.HTTP_4XX),
    (500, True, ErrorType.HTTP_5XX),
    (503, True, ErrorType.HTTP_5XX),
])
async def test_error_statuses(target: tuple[Target, str], session: aiohttp.ClientSession, status: int,
                              retryable: bool, error_type: ErrorType) -> None:
    _, base = target
    result = await invoker(f"{base}/s/{status}", session).invoke(inv())
    assert result.outcome is Outcome.ERROR
    assert (result.retryable, result.throttle, result.error_type) == (retryable, False, error_type)
    assert result.function_error == "Unhandled"
    body = json.loads(result.payload)
    assert body["errorType"] == "HttpError"
    assert body["errorMessage"] == f"POST {base}/s/{status} returned {status}: " + (
        "upstream said no " + "y" * 300)[:200]


async def test_429_is_a_throttle_with_retry_after_seconds(target: tuple[Target, str],
                                                           session: aiohttp.ClientSession) -> None:
    _, base = target
    result = await invoker(f"{base}/s/429?ra=7", session).invoke(inv())
    assert (result.outcome, result.throttle, result.error_type, result.retry_after) == (
        Outcome.THROTTLED, True, ErrorType.THROTTLED, 7.0)


async def test_retry_after_http_date(target: tuple[Target, str], session: aiohttp.ClientSession) -> None:
    _, base = target
    date = email.utils.formatdate(NOW + 30, usegmt=True).replace(" ", "%20").replace(",", "%2C")
    result = await invoker(f"{base}/s/503?ra={date}", session).invoke(inv())
    assert result.retry_after == 30.0
    assert result.retryable


async def test_redirects_are_not_followed(target: tuple[Target, str], session: aiohttp.ClientSession) -> None:
    t, base = target
    result = await invoker(f"{base}/redirect", session).invoke(inv())
    assert result.outcome is Outcome.ERROR
    assert not result.retryable
    assert json.loads(result.payload)["errorMessage"].startswith(f"POST {base}/redirect returned 302: ")
    assert [p for p, _, _ in t.received] == ["/redirect"]


async def test_timeout(target: tuple[Target, str], session: aiohttp.ClientSession) -> None:
    _, base = target
    result = await invoker(f"{base}/slow", session, timeout=0.2).invoke(inv())
    assert (result.outcome, result.error_type, result.retryable) == (Outcome.TIMEOUT, ErrorType.TIMEOUT, True)
    assert json.loads(result.payload)["errorMessage"] == "Task timed out after 0.20 seconds"


async def test_connection_refused_is_an_infrastructure_error(session: aiohttp.ClientSession) -> None:
    async with serve(web.Application()) as base:
        pass  # closed now: nothing listens on that port
    url = base + "/x?token=abc"
    result = await invoker(url, session).invoke(inv())
    assert (result.outcome, result.error_type, result.throttle) == (
        Outcome.ERROR, ErrorType.CONNECTION, True)
    message = json.loads(result.payload)["errorMessage"]
    assert message.startswith(f"POST {base}/x failed: ClientConnectorError: cannot connect to 127.0.0.1:")
    assert "token" not in message


async def test_userinfo_and_authorization_header_conflict(session: aiohttp.ClientSession) -> None:
    result = await invoker("http://user:pw@127.0.0.1:9/x", session).invoke(inv())
    assert (result.error_type, result.retryable) == (ErrorType.CONFIG, False)
    message = json.loads(result.payload)["errorMessage"]
    assert message.startswith("POST http://127.0.0.1:9/x: cannot send the request: ")
    assert "pw" not in message


async def test_response_too_large(target: tuple[Target, str], session: aiohttp.ClientSession) -> None:
    _, base = target
    result = await invoker(f"{base}/big", session, max_response=1000).invoke(inv())
    assert not result.ok
    assert not result.retryable
    assert json.loads(result.payload)["errorType"] == "Function.ResponseSizeTooLarge"


def test_safe_url() -> None:
    assert safe_url("https://u:p@h.example:8443/a/b?token=1#frag") == "https://h.example:8443/a/b"
    assert safe_url("http://[::1]:80/x") == "http://[::1]:80/x"
    assert safe_url("http://h/") == "http://h/"


def test_parse_retry_after() -> None:
    assert parse_retry_after(None, NOW) is None
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(email.utils.formatdate(NOW + 5, usegmt=True), NOW) == 5.0
    assert parse_retry_after(email.utils.formatdate(NOW - 5, usegmt=True), NOW) == 0.0
    assert parse_retry_after("soon", NOW) is None


def test_needs_an_http_target() -> None:
    config = FunctionConfig.model_validate({"runtime": "python3.11", "handler": "a.b", "code": "."})
    with pytest.raises(ValueError, match="function 'x' has no http target"):
        HttpInvoker("x", config, session=None)  # type: ignore[arg-type]
