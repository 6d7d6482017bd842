"""What each HTTP front answers when the dispatcher refuses an invocation or the function fails, pinned
byte for byte (status, body, the headers clients act on) with the log line each writes: the webhook routes
answer as API Gateway does, the Invoke API as Lambda does, from one mapping of the refusals."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from router.errors import (
    FunctionNotFound,
    PayloadTooLarge,
    StateStoreError,
    StateStoreUnavailable,
    Throttled,
    Unavailable,
)
from router.invocation import Outcome, Result

from .conftest import make_config

ARN = "arn:aws:lambda:us-east-1:000000000000:function:echo"
INVOKE = "/2015-03-31/functions/echo/invocations"
WATCHED = ("Retry-After", "x-amzn-ErrorType", "X-Amz-Function-Error", "X-Amz-Executed-Version")
LOGGERS = ("router.sources.webhook", "router.http.invoke_api")

REFUSALS: dict[str, Exception] = {
    "not_found": FunctionNotFound("echo"),
    "throttled": Throttled("echo", 1),
    "throttled_account": Throttled("echo", 1, Throttled.ACCOUNT),
    "too_large": PayloadTooLarge("async event", 20, 10),
    "unavailable": Unavailable("the async queue did not confirm the event", retry_after=7),
    "store_error": StateStoreError("sqlite:///state.db: enqueue: disk I/O error"),
    "store_unavailable": StateStoreUnavailable("the state store did not commit the event", retry_after=3),
    "os_error": ConnectionResetError("reset by peer"),
}

API_GATEWAY = "application/json; charset=utf-8"
INTERNAL = b'{"message": "Internal Server Error"}'

Line = tuple[int, str, str | None]
"""A log line: level, message, error_type."""
UNAVAILABLE = b'{"message": "Service Unavailable"}'

WEBHOOK: dict[str, tuple[int, bytes, dict[str, str], Line | None]] = {
    "not_found": (500, INTERNAL, {},
                  (logging.ERROR, "webhook: the route's function is not configured", "config")),
    "throttled": (429, b'{"message": "Too Many Requests"}', {},
                  (logging.INFO, "webhook: throttled", "throttled")),
    "throttled_account": (429, b'{"message": "Too Many Requests"}', {},
                          (logging.INFO, "webhook: throttled", "throttled")),
    "too_large": (413, b'{"message": "Request Entity Too Large"}', {}, None),
    "unavailable": (503, UNAVAILABLE, {"Retry-After": "7"},
                    (logging.WARNING,
                     "webhook: event not accepted: the async queue did not confirm the event", "connection")),
    "store_error": (500, INTERNAL, {},
                    (logging.ERROR, "webhook: could not dispatch the event: StateStoreError", None)),
    "store_unavailable": (503, UNAVAILABLE, {"Retry-After": "3"},
                          (logging.WARNING,
                           "webhook: event not accepted: the state store did not commit the event",
                           "connection")),
    "os_error": (500, INTERNAL, {},
                 (logging.ERROR, "webhook: could not dispatch the event: ConnectionResetError", None)),
}


def _lambda_error(code: str, body: dict[str, str], **headers: str) -> tuple[bytes, dict[str, str]]:
    return json.dumps({"Type": "User", **body}).encode(), {"x-amzn-ErrorType": code, **headers}


NOT_ACCEPTED = ("the router could not accept the invocation (its state store or async queue is unavailable); "
                "retry later")
INVOKE_API: dict[str, tuple[int, tuple[bytes, dict[str, str]], Line | None]] = {
    "not_found": (404, _lambda_error("ResourceNotFoundException", {"Message": f"Function not found: {ARN}"}),
                  None),
    "throttled": (429, _lambda_error("TooManyRequestsException", {
        "message": "Rate Exceeded.", "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"}),
        (logging.INFO, "invoke api: throttled", "throttled")),
    "throttled_account": (429, _lambda_error("TooManyRequestsException", {
        "message": "Rate Exceeded.", "Reason": "ConcurrentInvocationLimitExceeded"}),
        (logging.INFO, "invoke api: throttled", "throttled")),
    "too_large": (413, _lambda_error("RequestEntityTooLargeException", {
        "Message": "Request must be smaller than 10 bytes for the InvokeFunction operation"}), None),
    "unavailable": (503, _lambda_error("ServiceException", {"Message": NOT_ACCEPTED},
                                       **{"Retry-After": "7"}),
                    (logging.ERROR, "invoke api: could not dispatch the invocation: the async queue did not "
                     "confirm the event", "connection")),
    "store_error": (500, _lambda_error("ServiceException", {"Message": NOT_ACCEPTED}),
                    (logging.ERROR, "invoke api: could not dispatch the invocation: sqlite:///state.db: "
                     "enqueue: disk I/O error", "connection")),
    "store_unavailable": (503, _lambda_error("ServiceException", {"Message": NOT_ACCEPTED},
                                             **{"Retry-After": "3"}),
                          (logging.ERROR, "invoke api: could not dispatch the invocation: the state store "
                           "did not commit the event", "connection")),
    "os_error": (500, _lambda_error("ServiceException", {"Message": NOT_ACCEPTED}),
                 (logging.ERROR, "invoke api: could not dispatch the invocation: reset by peer",
                  "connection")),
}


def _watched(headers: Any) -> dict[str, str]:
    return {name: headers[name] for name in WATCHED if name in headers}


def _logged(caplog: pytest.LogCaptureFixture) -> list[Line]:
    return [(r.levelno, r.getMessage(), getattr(r, "error_type", None))
            for r in caplog.records if r.name in LOGGERS]


def _config(invocation: str) -> Any:
    return make_config(routes=[{"name": "hook", "function": "echo", "invocation": invocation,
                                "source": {"type": "webhook", "path": "/hook"}}])


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("refusal", list(REFUSALS))
async def test_webhook_answers_a_refusal_as_api_gateway(serve: Any, caplog: pytest.LogCaptureFixture,
                                                         kind: str, refusal: str) -> None:
    server = await serve(_config(kind))
    setattr(server.dispatcher, "invoke_error" if kind == "sync" else "submit_error", REFUSALS[refusal])
    caplog.set_level(logging.INFO)
    async with server.session.post(server.url + "/hook", data=b"{}") as r:
        got = (r.status, await r.read(), _watched(r.headers))
        assert r.headers["Content-Type"] == API_GATEWAY
        request_id = r.headers["apigw-requestid"]
    status, body, headers, line = WEBHOOK[refusal]
    assert got == (status, body, headers)
    assert _logged(caplog) == ([] if line is None else [line])
    assert server.sample("router_webhook_requests_total", {"route": "hook", "status": str(status)}) == 1
    assert all(r.request_id == request_id for r in caplog.records if r.name in LOGGERS)  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["RequestResponse", "Event"])
@pytest.mark.parametrize("refusal", list(REFUSALS))
async def test_invoke_api_answers_a_refusal_as_lambda(serve: Any, caplog: pytest.LogCaptureFixture,
                                                       kind: str, refusal: str) -> None:
    server = await serve()
    setattr(server.dispatcher, "invoke_error" if kind == "RequestResponse" else "submit_error",
            REFUSALS[refusal])
    caplog.set_level(logging.INFO)
    async with server.session.post(server.url + INVOKE, data=b"{}",
                                   headers={"X-Amz-Invocation-Type": kind}) as r:
        got = (r.status, await r.read(), _watched(r.headers))
        assert r.headers["Content-Type"] == "application/json"
        request_id = r.headers["x-amzn-RequestId"]
    status, (body, headers), line = INVOKE_API[refusal]
    if refusal == "too_large":  # the setting that raises the limit is in the log, not in Lambda's answer
        setting = "server.max_async_body" if kind == "Event" else "server.max_body"
        line = (logging.INFO, f"invoke api: payload of 20 bytes over 10 refused (413); {setting} raises the "
                "limit", None)
    if refusal == "too_large" and kind == "Event":  # Lambda words an Event's limit apart
        body, headers = _lambda_error("RequestEntityTooLargeException", {
            "Message": "20 byte payload is too large for the Event invocation type (limit 10 bytes)"})
    assert got == (status, body, headers)
    assert _logged(caplog) == ([] if line is None else [line])
    assert all(r.request_id == request_id for r in caplog.records if r.name in LOGGERS)  # type: ignore[attr-defined]


FAILED = Result.error("ValueError", "boom")
TIMED_OUT = Result.error("Sandbox.Timedout", "Task timed out after 3.00 seconds", outcome=Outcome.TIMEOUT)
NO_ENVIRONMENT = Result.error("Throttled", "no execution environment", outcome=Outcome.THROTTLED)
UNHANDLED = {"X-Amz-Function-Error": "Unhandled", "X-Amz-Executed-Version": "$LATEST"}


@pytest.mark.parametrize(
    ("result", "status", "body"),
    [(FAILED, 500, INTERNAL), (TIMED_OUT, 503, UNAVAILABLE),
     (NO_ENVIRONMENT, 429, b'{"message": "Too Many Requests"}')],
    ids=["function_error", "timeout", "throttled"],
)
async def test_webhook_answers_a_failed_function_as_api_gateway(serve: Any, result: Result, status: int,
                                                                 body: bytes) -> None:
    server = await serve(_config("sync"))
    server.dispatcher.scripts["echo"] = lambda inv: result
    async with server.session.post(server.url + "/hook", data=b"{}") as r:
        assert (r.status, await r.read(), _watched(r.headers)) == (status, body, {})
        assert r.headers["Content-Type"] == API_GATEWAY


@pytest.mark.parametrize(
    ("result", "status", "body", "headers"),
    [(FAILED, 200, FAILED.payload, UNHANDLED),
     (TIMED_OUT, 200, TIMED_OUT.payload, UNHANDLED),
     (NO_ENVIRONMENT, 429, *INVOKE_API["throttled_account"][1])],
    ids=["function_error", "timeout", "throttled"],
)
async def test_invoke_api_answers_a_failed_function_as_lambda(serve: Any, result: Result, status: int,
                                                              body: bytes, headers: dict[str, str]) -> None:
    server = await serve()
    server.dispatcher.scripts["echo"] = lambda inv: result
    async with server.session.post(server.url + INVOKE, data=b"{}") as r:
        assert (r.status, await r.read(), _watched(r.headers)) == (status, body, headers)
        assert r.headers["Content-Type"] == "application/json"
