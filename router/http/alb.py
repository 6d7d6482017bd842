"""Application Load Balancer, Lambda target: the event built from a request, and the response mapping.

Follows ELB: header names are lower-cased and the load balancer's own ``x-forwarded-for``,
``x-forwarded-port``, ``x-forwarded-proto`` and ``x-amzn-trace-id`` are added; query parameters are
passed as they were sent (not URL-decoded); a body is text when its content type is textual and it is
valid UTF-8, base64 otherwise. Without ``multi_value`` (the target group attribute
``lambda.multi_value_headers.enabled`` off, ELB's default) the event has ``headers`` and
``queryStringParameters`` with the last value of each name, and the response's ``headers`` are used;
with it, the event has ``multiValueHeaders`` and ``multiValueQueryStringParameters`` instead, and the
response's ``multiValueHeaders`` are used.

A function error, a timeout and a response the load balancer cannot use (not an object, no integer
``statusCode``, a body that is not a string) are ``502 Bad Gateway``, ELB's HTML page.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web

from router.http.apigw import MalformedResponse, body_field
from router.http.apigw_v1 import response_body, response_headers, response_object
from router.invocation import Outcome, Result


def target_group_arn(region: str, account_id: str, route: str) -> str:
    """The ARN a target group named for ``route`` would have (its id: 16 hex digits derived from it)."""
    suffix = f"{abs(hash_name(route)):016x}"[:16]
    return f"arn:aws:elasticloadbalancing:{region}:{account_id}:targetgroup/{route[:32]}/{suffix}"


def hash_name(name: str) -> int:
    """A stable 64-bit number for ``name`` (FNV-1a), so the ARN is the same in every run."""
    h = 0xCBF29CE484222325
    for byte in name.encode():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _raw_query(raw: str) -> list[tuple[str, str]]:
    """``a=1&b=%20`` as ELB passes it: split on ``&`` and the first ``=``, nothing decoded (not even
    ``+``)."""
    pairs = []
    for part in raw.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((name, value))
    return pairs


def _trace_id(now: float) -> str:
    return f"Root=1-{int(now):08x}-{secrets.token_hex(12)}"


def build_event(
    request: web.Request,
    body: bytes,
    *,
    target_group: str,
    multi_value: bool,
    now: float | None = None,
) -> dict[str, Any]:
    """The ALB target event for ``request`` whose body is ``body``."""
    now = time.time() if now is None else now
    headers: list[tuple[str, str]] = [(name.lower(), value) for name, value in request.headers.items()]
    forwarded_for = request.remote or ""
    given = [v for n, v in headers if n == "x-forwarded-for"]
    if given:
        forwarded_for = f"{given[-1]}, {forwarded_for}"
    headers = [(n, v) for n, v in headers
               if n not in ("x-forwarded-for", "x-forwarded-port", "x-forwarded-proto", "x-amzn-trace-id")]
    sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
    port = str(sockname[1]) if isinstance(sockname, tuple) and len(sockname) >= 2 else ""
    headers += [("x-amzn-trace-id", request.headers.get("X-Amzn-Trace-Id") or _trace_id(now)),
                ("x-forwarded-for", forwarded_for), ("x-forwarded-port", port),
                ("x-forwarded-proto", request.scheme)]
    query = _raw_query(request.rel_url.raw_query_string)
    event: dict[str, Any] = {
        "requestContext": {"elb": {"targetGroupArn": target_group}},
        "httpMethod": request.method,
        "path": request.rel_url.raw_path,
    }
    if multi_value:
        mq: dict[str, list[str]] = {}
        for name, value in query:
            mq.setdefault(name, []).append(value)
        mh: dict[str, list[str]] = {}
        for name, value in headers:
            mh.setdefault(name, []).append(value)
        event["multiValueQueryStringParameters"] = mq
        event["multiValueHeaders"] = mh
    else:
        event["queryStringParameters"] = dict(query)  # the last value of each name
        event["headers"] = dict(headers)
    event["body"] = ""
    event["isBase64Encoded"] = False
    if body:
        event["body"], event["isBase64Encoded"] = body_field(body, request.headers.get("Content-Type", ""))
    return event


def _page(status: int) -> web.Response:
    phrase = f"{status} {HTTPStatus(status).phrase}"
    html = (f"<html>\r\n<head><title>{phrase}</title></head>\r\n<body>\r\n"
            f"<center><h1>{phrase}</h1></center>\r\n</body>\r\n</html>\r\n")
    return web.Response(status=status, text=html, content_type="text/html")


def bad_gateway() -> web.Response:
    return _page(502)


def internal_error() -> web.Response:
    return _page(500)


def service_unavailable() -> web.Response:
    return _page(503)


def payload_too_large() -> web.Response:
    return _page(413)


def map_result(result: Result, *, multi_value: bool,
               on_malformed: Callable[[str], None] | None = None) -> web.Response:
    """Turn a function's result into the HTTP response, as ALB does for a Lambda target."""
    if result.outcome is Outcome.THROTTLED:
        return service_unavailable()
    if result.function_error or result.outcome is not Outcome.SUCCESS:
        return bad_gateway()
    value = response_object(result.payload)
    if isinstance(value, str):
        return _malformed(value, on_malformed)
    try:
        return _structured(value, multi_value)
    except MalformedResponse as exc:
        return _malformed(exc.reason, on_malformed)


def _malformed(reason: str, on_malformed: Callable[[str], None] | None) -> web.Response:
    if on_malformed is not None:
        on_malformed(reason)
    return bad_gateway()


def _structured(value: dict[str, Any], multi_value: bool) -> web.Response:
    status = value.get("statusCode")
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        shown = status if isinstance(status, int) else type(status).__name__
        raise MalformedResponse(f"statusCode must be an integer from 200 to 599, got {shown!r}")
    description = value.get("statusDescription")
    reason = None
    if description is not None:
        if not isinstance(description, str):
            raise MalformedResponse(f"statusDescription must be a string, got {type(description).__name__}")
        code, _, phrase = description.partition(" ")
        # "200 OK": the phrase goes on the status line; CR/LF there would split the reply.
        if phrase and code == str(status) and phrase.isprintable():
            reason = phrase
    if multi_value:
        headers = response_headers(None, value.get("multiValueHeaders"))
    else:
        headers = response_headers(value.get("headers"), None)
    data = response_body(value)
    if status in (204, 304):
        data = b""
    return web.Response(status=status, reason=reason, body=data, headers=headers)
