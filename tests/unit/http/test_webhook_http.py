"""Webhook routes over real HTTP: the API Gateway 2.0 event, result mapping, async accept, auth, metrics."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import re
import time
from typing import Any

import pytest

from router.errors import RouterError
from router.http.context import HttpContext
from router.http.server import build_app
from router.invocation import Outcome, Result
from router.metrics import Metrics
from router.readiness import Readiness

from .conftest import FakeDispatcher, make_config


def hook(name: str = "users", path: str = "/users/{id}", **source: Any) -> dict[str, Any]:
    route: dict[str, Any] = {"name": name, "function": source.pop("function", "echo"),
                             "source": {"type": "webhook", "path": path, **source}}
    for key in ("invocation", "input"):
        if key in source:
            route[key] = source.pop(key)
            route["source"].pop(key)
    return route


def cfg(*routes: dict[str, Any], **server: Any) -> Any:
    return make_config(routes=list(routes), server=server or {})


def returns(value: Any) -> Any:
    return lambda inv: Result(payload=json.dumps(value).encode())


async def test_event_is_api_gateway_v2(serve: Any) -> None:
    server = await serve(cfg(hook(methods=["POST", "PUT"])))
    async with server.session.post(
        server.url + "/users/42?x=1&x=2&y=caf%C3%A9",
        data=b'{"hello": "world"}',
        headers=[("Content-Type", "application/json"), ("X-Multi", "a"), ("X-Multi", "b"),
                 ("Cookie", "s=1; t=2"), ("User-Agent", "tests/1.0")],
    ) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("application/json")
        echoed = await r.json()
        request_id = r.headers["apigw-requestid"]
    (inv,) = server.dispatcher.invoked
    event = json.loads(inv.payload)
    assert echoed == event
    assert (inv.function, inv.source, inv.route, inv.invocation_type) == ("echo", "webhook", "users", "sync")
    assert event["version"] == "2.0"
    assert event["routeKey"] == "POST /users/{id}"
    assert event["rawPath"] == "/users/42"
    assert event["rawQueryString"] == "x=1&x=2&y=caf%C3%A9"
    assert event["queryStringParameters"] == {"x": "1,2", "y": "café"}
    assert event["pathParameters"] == {"id": "42"}
    assert event["cookies"] == ["s=1", "t=2"]
    assert event["headers"]["x-multi"] == "a,b"
    assert event["headers"]["content-type"] == "application/json"
    assert "cookie" not in event["headers"]
    assert all(k == k.lower() for k in event["headers"])
    assert event["body"] == '{"hello": "world"}'
    assert event["isBase64Encoded"] is False
    rc = event["requestContext"]
    assert rc["accountId"] == "000000000000"
    assert rc["apiId"] == "users"
    assert rc["stage"] == "$default"
    assert rc["requestId"] == request_id == inv.request_id
    assert rc["routeKey"] == "POST /users/{id}"
    assert rc["http"] == {"method": "POST", "path": "/users/42", "protocol": "HTTP/1.1",
                          "sourceIp": "127.0.0.1", "userAgent": "tests/1.0"}
    assert rc["domainName"].startswith("127.0.0.1")
    assert re.fullmatch(r"\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000", rc["time"])
    assert isinstance(rc["timeEpoch"], int)
    assert abs(rc["timeEpoch"] / 1000 - time.time()) < 3600


async def test_optional_fields_are_left_out_and_binary_is_base64(serve: Any) -> None:
    server = await serve(cfg(hook(path="/plain")))
    async with server.session.post(server.url + "/plain", data=b"") as r:
        assert r.status == 200
    async with server.session.post(server.url + "/plain", data=b"\x00\xff\x10",
                                   headers={"Content-Type": "application/octet-stream"}) as r:
        assert r.status == 200
    empty, binary = (json.loads(i.payload) for i in server.dispatcher.invoked)
    for key in ("queryStringParameters", "pathParameters", "cookies", "body"):
        assert key not in empty
    assert empty["isBase64Encoded"] is False
    assert empty["rawQueryString"] == ""
    assert binary["isBase64Encoded"] is True
    assert base64.b64decode(binary["body"]) == b"\x00\xff\x10"


async def test_any_method_and_greedy_path(serve: Any) -> None:
    server = await serve(cfg(hook(name="files", path="/files/{key+}", methods=["ANY"])))
    for method in ("GET", "DELETE", "PATCH"):
        async with server.session.request(method, server.url + "/files/a/b.txt") as r:
            assert r.status == 200
    events = [json.loads(i.payload) for i in server.dispatcher.invoked]
    assert [e["requestContext"]["http"]["method"] for e in events] == ["GET", "DELETE", "PATCH"]
    assert {e["routeKey"] for e in events} == {"ANY /files/{key+}"}
    assert events[0]["pathParameters"] == {"key": "a/b.txt"}


async def test_method_not_configured_is_405(serve: Any) -> None:
    server = await serve(cfg(hook(path="/only-post")))
    async with server.session.get(server.url + "/only-post") as r:
        assert r.status == 405
    assert server.dispatcher.invoked == []


async def test_constant_input_replaces_the_event(serve: Any) -> None:
    server = await serve(cfg(hook(path="/const", input={"task": "cleanup"})))
    async with server.session.post(server.url + "/const", data=b"ignored") as r:
        assert await r.json() == {"task": "cleanup"}
    assert json.loads(server.dispatcher.invoked[0].payload) == {"task": "cleanup"}


async def test_structured_result_is_mapped(serve: Any) -> None:
    server = await serve(cfg(hook(path="/r")))
    server.dispatcher.scripts["echo"] = returns({
        "statusCode": 201, "headers": {"X-A": "b", "Content-Type": "text/plain"},
        "multiValueHeaders": {"X-M": ["1", "2"]}, "cookies": ["a=1; Path=/", "b=2"],
        "body": base64.b64encode(b"hi\x00").decode(), "isBase64Encoded": True,
    })
    async with server.session.post(server.url + "/r") as r:
        assert r.status == 201
        assert r.headers["X-A"] == "b"
        assert r.headers["Content-Type"] == "text/plain"
        assert r.headers.getall("X-M") == ["1", "2"]
        assert r.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2"]
        assert await r.read() == b"hi\x00"


@pytest.mark.parametrize(
    ("value", "body"),
    [({"message": "no statusCode"}, {"message": "no statusCode"}), ([1, 2], [1, 2]), ("text", "text"),
     (None, None)],
)
async def test_other_values_are_200_json(serve: Any, value: Any, body: Any) -> None:
    server = await serve(cfg(hook(path="/v")))
    server.dispatcher.scripts["echo"] = returns(value)
    async with server.session.post(server.url + "/v") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("application/json")
        assert await r.json() == body


@pytest.mark.parametrize(
    ("result", "status", "message"),
    [
        (Result.error("ValueError", "boom"), 500, "Internal Server Error"),
        (Result.error("Sandbox.Timedout", "Task timed out after 3.00 seconds", outcome=Outcome.TIMEOUT),
         503, "Service Unavailable"),
        (Result(payload=b'{"statusCode": "teapot"}'), 500, "Internal Server Error"),
        (Result(payload=b"not json"), 500, "Internal Server Error"),
    ],
)
async def test_failures_map_like_api_gateway(serve: Any, result: Result, status: int, message: str) -> None:
    server = await serve(cfg(hook(path="/f")))
    server.dispatcher.scripts["echo"] = lambda inv: result
    async with server.session.post(server.url + "/f") as r:
        assert r.status == status
        assert await r.json() == {"message": message}
    assert server.sample("router_webhook_requests_total", {"route": "users", "status": str(status)}) == 1


async def test_throttled_is_429(serve: Any) -> None:
    server = await serve(cfg(hook(path="/t", function="busy")))
    server.dispatcher.throttled.add("busy")
    async with server.session.post(server.url + "/t") as r:
        assert r.status == 429
        assert await r.json() == {"message": "Too Many Requests"}


async def test_body_over_max_body_is_413(serve: Any) -> None:
    server = await serve(cfg(hook(path="/big"), max_body=1000))
    async with server.session.post(server.url + "/big", data=b"x" * 1001) as r:
        assert r.status == 413
        assert await r.json() == {"message": "Request Entity Too Large"}
    async with server.session.post(server.url + "/big", data=b"x" * 1000) as r:
        assert r.status == 200
    assert len(server.dispatcher.invoked) == 1
    assert server.sample("router_webhook_requests_total", {"route": "users", "status": "413"}) == 1


async def test_async_route_answers_202_only_after_submit_returned(serve: Any) -> None:
    server = await serve(cfg(hook(path="/a", invocation="async")))
    gate = asyncio.Event()
    server.dispatcher.submit_gate = gate

    async def post() -> tuple[int, Any]:
        async with server.session.post(server.url + "/a", data=b"{}") as r:
            return r.status, await r.json()

    task = asyncio.create_task(post())
    async with asyncio.timeout(10):
        await server.dispatcher.submit_entered.wait()
    assert not task.done()  # submit has not returned: no answer yet
    assert server.dispatcher.submitted == []
    gate.set()
    async with asyncio.timeout(10):
        status, body = await task
    assert status == 202
    (inv,) = server.dispatcher.submitted
    assert body == {"requestId": inv.request_id}
    assert inv.invocation_type == "async"
    assert server.dispatcher.invoked == []


async def test_async_payload_too_large_is_413(serve: Any) -> None:
    server = await serve(cfg(hook(path="/a", invocation="async")))
    server.dispatcher.max_async = 100
    async with server.session.post(server.url + "/a", data=b"x" * 500) as r:
        assert r.status == 413
        assert await r.json() == {"message": "Request Entity Too Large"}
    assert server.dispatcher.submitted == []


async def test_unknown_function_is_500_not_a_crash(serve: Any) -> None:
    server = await serve(cfg(hook(path="/x")))
    server.dispatcher.functions.discard("echo")
    async with server.session.post(server.url + "/x") as r:
        assert r.status == 500


def test_conflicting_routes_are_refused() -> None:
    config = cfg(hook(name="one", path="/same"), hook(name="two", path="/same"))
    with pytest.raises(RouterError, match=r"route 'two': cannot serve POST /same"):
        build_app(HttpContext(config, FakeDispatcher(), Metrics(), Readiness()))


# --- auth -------------------------------------------------------------------------------------------


def gh_sig(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sw_headers(secret_bytes: bytes, body: bytes, msg_id: str = "msg_1", ts: int | None = None,
               extra_sigs: str = "") -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    mac = hmac.new(secret_bytes, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    sig = (extra_sigs + " " if extra_sigs else "") + "v1," + base64.b64encode(mac).decode()
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}


async def test_hmac_auth(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    secret = "gh-very-secret"
    server = await serve(cfg(hook(name="github", path="/gh",
                                  auth={"type": "hmac", "secret": secret})))
    body = b'{"action": "opened"}'
    url = server.url + "/gh"
    caplog.set_level(logging.DEBUG)
    good = {"X-Hub-Signature-256": gh_sig(secret, body)}
    async with server.session.post(url, data=body, headers=good) as r:
        assert r.status == 200
    bad = gh_sig("other", body)
    for headers in ({"X-Hub-Signature-256": bad}, {}, {"X-Hub-Signature-256": gh_sig(secret, body + b" ")}):
        async with server.session.post(url, data=body, headers=headers) as r:
            assert r.status == 401
            assert await r.json() == {"message": "Unauthorized"}
    assert len(server.dispatcher.invoked) == 1
    assert server.sample("router_webhook_requests_total", {"route": "github", "status": "401"}) == 3
    assert server.sample("router_source_events_total", {"route": "github", "type": "webhook"}) == 1
    logged = caplog.text + " ".join(json.dumps(r.__dict__, default=str) for r in caplog.records)
    assert secret not in logged
    assert bad not in logged
    assert bad[7:] not in logged


async def test_standard_webhooks_auth(serve: Any) -> None:
    raw = b"0123456789abcdef0123456789abcdef"
    secret = "whsec_" + base64.b64encode(raw).decode()
    server = await serve(cfg(hook(name="sw", path="/sw",
                                  auth={"type": "standard_webhooks", "secret": secret, "tolerance": "5m"})))
    url = server.url + "/sw"
    body = b'{"type": "invoice.paid"}'

    async def post(headers: dict[str, str], data: bytes = body) -> int:
        async with server.session.post(url, data=data, headers=headers) as r:
            return int(r.status)

    good = sw_headers(raw, body, extra_sigs="v1,AAAA v1a,whatever")
    assert await post(good) == 200
    assert await post(good) == 401  # the same signed message again: a replay
    retry = sw_headers(raw, body, ts=int(time.time()) + 1)  # sender's retry: same id, new timestamp
    assert await post(retry) == 200
    assert await post(sw_headers(raw, body, msg_id="old", ts=int(time.time()) - 600)) == 401
    assert await post(sw_headers(raw, body, msg_id="future", ts=int(time.time()) + 600)) == 401
    assert await post(sw_headers(b"wrong", body, msg_id="m2")) == 401
    assert await post(sw_headers(raw, body, msg_id="m3"), data=body + b"x") == 401
    assert await post({}) == 401
    assert len(server.dispatcher.invoked) == 2


async def test_bearer_and_api_key_auth(serve: Any) -> None:
    server = await serve(cfg(
        hook(name="b", path="/b", auth={"type": "bearer", "token": "tok-1"}),
        hook(name="k", path="/k", auth={"type": "api_key", "key": "key-1", "header": "X-Key"}),
    ))
    cases = [
        ("/b", {"Authorization": "Bearer tok-1"}, 200), ("/b", {"Authorization": "Bearer tok-2"}, 401),
        ("/b", {"Authorization": "Basic tok-1"}, 401), ("/b", {}, 401),
        ("/k", {"X-Key": "key-1"}, 200), ("/k", {"X-Key": "key-2"}, 401), ("/k", {"X-Api-Key": "key-1"}, 401),
    ]
    for path, headers, status in cases:
        async with server.session.post(server.url + path, headers=headers) as r:
            assert r.status == status, (path, headers)


async def test_metrics_use_route_names_not_paths(serve: Any) -> None:
    server = await serve(cfg(hook()))
    for i in range(3):
        async with server.session.post(f"{server.url}/users/{i}") as r:
            assert r.status == 200
    assert server.sample("router_webhook_requests_total", {"route": "users", "status": "200"}) == 3
    assert server.sample("router_source_events_total", {"route": "users", "type": "webhook"}) == 3
    async with server.session.get(server.url + "/metrics") as r:
        assert "/users/" not in await r.text()


def test_dispatcher_fake_satisfies_the_protocol() -> None:
    from router.core.dispatcher import Dispatch

    d: Dispatch = FakeDispatcher()
    assert d.arn("echo").endswith(":function:echo")
