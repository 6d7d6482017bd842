"""API Gateway HTTP API, payload format 2.0: the event built from a request, and the response mapping.

Follows AWS: duplicate headers and query parameters are joined with ``,``; cookies move from the
``Cookie`` header to ``cookies``; ``queryStringParameters``, ``pathParameters``, ``cookies`` and
``body`` are left out when empty; a body is text when its content type is textual and it is valid
UTF-8, base64 otherwise (``application/x-www-form-urlencoded`` included, as API Gateway does).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import CIMultiDict

from router.core.invocation import Outcome, Result

_TEXT_TYPES = ("application/json", "application/xml", "application/javascript", "application/yaml",
               "application/x-yaml", "application/graphql", "application/ld+json")
_HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive"}


def route_key(methods: list[str], method: str, path: str) -> str:
    """``"POST /users/{id}"``, or ``"ANY /users/{id}"`` for a route that takes every method."""
    return f"{'ANY' if 'ANY' in methods else method} {path}"


def aiohttp_path(path: str) -> str:
    """Config path to aiohttp path: ``{name}`` stays, API Gateway's greedy ``{name+}`` is ``{name:.+}``."""
    out: list[str] = []
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("+}"):
            part = "{" + part[1:-2] + ":.+}"
        out.append(part)
    return "/".join(out)


def _is_text(content_type: str) -> bool:
    ct = content_type.split(";", 1)[0].strip().lower()
    if not ct:
        return True
    return ct.startswith("text/") or ct in _TEXT_TYPES or ct.endswith(("+json", "+xml"))


def _joined(pairs: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in pairs:
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


def _clf_time(epoch: float) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(epoch))


def build_event(
    request: web.Request,
    body: bytes,
    *,
    route_key: str,
    request_id: str,
    account_id: str,
    api_id: str,
    now: float | None = None,
) -> dict[str, Any]:
    """The payload format 2.0 event for ``request`` whose body is ``body``."""
    now = time.time() if now is None else now
    headers: list[tuple[str, str]] = []
    cookies: list[str] = []
    for name, value in request.headers.items():
        lname = name.lower()
        if lname == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
        else:
            headers.append((lname, value))
    raw_query = request.rel_url.raw_query_string
    host = request.host
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": request.rel_url.raw_path,
        "rawQueryString": raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = _joined(headers)
    query = parse_qsl(raw_query, keep_blank_values=True)
    if query:
        event["queryStringParameters"] = _joined(query)
    event["requestContext"] = {
        "accountId": account_id,
        "apiId": api_id,
        "domainName": host,
        "domainPrefix": host.split(".", 1)[0],
        "http": {
            "method": request.method,
            "path": request.path,
            "protocol": f"HTTP/{request.version.major}.{request.version.minor}",
            "sourceIp": request.remote or "",
            "userAgent": request.headers.get("User-Agent", ""),
        },
        "requestId": request_id,
        "routeKey": route_key,
        "stage": "$default",
        "time": _clf_time(now),
        "timeEpoch": int(now * 1000),
    }
    if request.match_info:
        event["pathParameters"] = dict(request.match_info)
    if body:
        if _is_text(request.headers.get("Content-Type", "")):
            try:
                event["body"] = body.decode("utf-8")
                event["isBase64Encoded"] = False
                return event
            except UnicodeDecodeError:
                pass
        event["body"] = base64.b64encode(body).decode("ascii")
        event["isBase64Encoded"] = True
    else:
        event["isBase64Encoded"] = False
    return event


def _message(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


def internal_error() -> web.Response:
    return _message(500, "Internal Server Error")


def service_unavailable() -> web.Response:
    return _message(503, "Service Unavailable")


def too_many_requests() -> web.Response:
    return _message(429, "Too Many Requests")


def map_result(result: Result) -> web.Response:
    """Turn a function's result into the HTTP response, as API Gateway does for payload format 2.0."""
    if result.outcome is Outcome.TIMEOUT:
        return service_unavailable()
    if result.outcome is Outcome.THROTTLED:
        return too_many_requests()
    if result.function_error or result.outcome is not Outcome.SUCCESS:
        return internal_error()
    try:
        value = json.loads(result.payload) if result.payload.strip() else None
    except ValueError:
        return internal_error()
    if not (isinstance(value, dict) and "statusCode" in value):
        # Anything else is the body itself: 200, application/json, the payload as the function sent it.
        return web.Response(status=200, body=result.payload, content_type="application/json")
    return _structured(value)


def _structured(value: dict[str, Any]) -> web.Response:
    status = value.get("statusCode")
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        return internal_error()
    headers: CIMultiDict[str] = CIMultiDict()
    raw_headers = value.get("headers") or {}
    multi = value.get("multiValueHeaders") or {}
    cookies = value.get("cookies") or []
    if not (isinstance(raw_headers, dict) and isinstance(multi, dict) and isinstance(cookies, list)):
        return internal_error()
    for name, v in raw_headers.items():
        if name.lower() not in _HOP_BY_HOP:
            headers[name] = _header_value(v)
    for name, values in multi.items():
        if name.lower() in _HOP_BY_HOP:
            continue
        if name in headers:
            del headers[name]
        for v in values if isinstance(values, list) else [values]:
            headers.add(name, _header_value(v))
    for cookie in cookies:
        headers.add("Set-Cookie", str(cookie))
    body = value.get("body")
    data: bytes
    if body is None:
        data = b""
    elif isinstance(body, str):
        if value.get("isBase64Encoded") is True:
            try:
                data = base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError):
                return internal_error()
        else:
            data = body.encode()
    else:
        data = json.dumps(body).encode()
    if status in (204, 304):
        data = b""  # no body allowed
    elif "Content-Type" not in headers:
        headers["Content-Type"] = "application/json"
    return web.Response(status=status, body=data, headers=headers)


def _header_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
