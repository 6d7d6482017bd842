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
import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import CIMultiDict

from router.invocation import Outcome, Result

_TEXT_TYPES = ("application/json", "application/xml", "application/javascript", "application/yaml",
               "application/x-yaml", "application/graphql", "application/ld+json")
HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive"}


def route_key(methods: list[str], method: str, path: str) -> str:
    """``"POST /users/{id}"``, or ``"ANY /users/{id}"`` for a route that takes every method."""
    return f"{'ANY' if 'ANY' in methods else method} {path}"


def body_field(body: bytes, content_type: str) -> tuple[str, bool]:
    """An event's ``body`` and ``isBase64Encoded`` for a request body: the text of a text content type
    (and of none) that is valid UTF-8, base64 otherwise (as API Gateway and ALB pass bodies on)."""
    if is_text(content_type):
        try:
            return body.decode("utf-8"), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode("ascii"), True


def is_text(content_type: str) -> bool:
    ct = content_type.split(";", 1)[0].strip().lower()
    if not ct:
        return True
    return ct.startswith("text/") or ct in _TEXT_TYPES or ct.endswith(("+json", "+xml"))


def _joined(pairs: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in pairs:
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


_clf_last: tuple[int, str] = (-1, "")


def clf_time(epoch: float) -> str:
    """``epoch`` as API Gateway's ``requestContext.time`` (``06/Dec/2026:00:23:33 +0000``). The text of the
    last second asked for is kept: under load every request of a second asks for the same one."""
    global _clf_last
    second = int(epoch)
    if second != _clf_last[0]:
        _clf_last = (second, time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second)))
    return _clf_last[1]


def build_event(
    request: web.Request,
    body: bytes,
    *,
    route_key: str,
    request_id: str,
    account_id: str,
    api_id: str,
    now: float | None = None,
    path_parameters: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The payload format 2.0 event for ``request`` whose body is ``body``; ``path_parameters``: what the
    route's ``{name}`` parts matched (default: the request's own ``match_info``)."""
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
        "time": clf_time(now),
        "timeEpoch": int(now * 1000),
    }
    params = request.match_info if path_parameters is None else path_parameters
    if params:
        event["pathParameters"] = dict(params)
    if body:
        event["body"], event["isBase64Encoded"] = body_field(body, request.headers.get("Content-Type", ""))
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


def payload_too_large() -> web.Response:
    return _message(413, "Request Entity Too Large")


def map_result(result: Result, on_malformed: Callable[[str], None] | None = None) -> web.Response:
    """Turn a function's result into the HTTP response, as API Gateway does for payload format 2.0.

    A structured response that cannot be sent as it is (a status outside 200-599, a header name that is
    not an HTTP token, a header value or cookie with CR, LF or another control character, a field of
    the wrong type, a body that is not base64 when it says so) becomes ``500 {"message":"Internal
    Server Error"}``, as the HTTP API answers for a malformed Lambda integration response, and
    ``on_malformed`` is called with what was wrong (never a header value, so nothing the function put
    there lands in a log)."""
    if result.outcome is Outcome.TIMEOUT:
        return service_unavailable()
    if result.outcome is Outcome.THROTTLED:
        return too_many_requests()
    if result.function_error or result.outcome is not Outcome.SUCCESS:
        return internal_error()
    try:
        value = json.loads(result.payload) if result.payload.strip() else None
    except (ValueError, RecursionError):
        return _malformed("the response is not valid JSON", on_malformed)
    if not (isinstance(value, dict) and "statusCode" in value):
        # Anything else is the body itself: 200, application/json, the payload as the function sent it.
        return web.Response(status=200, body=result.payload, content_type="application/json")
    try:
        return _structured(value)
    except MalformedResponse as exc:
        return _malformed(exc.reason, on_malformed)


class MalformedResponse(ValueError):
    """Raised by the mapping when a function's structured response cannot be sent as it is."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _malformed(reason: str, on_malformed: Callable[[str], None] | None) -> web.Response:
    if on_malformed is not None:
        on_malformed(reason)
    return internal_error()


# RFC 9110 field-name: a token. Values: no control character but HTAB (CR and LF would split the reply).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def header_name(name: object, field: str) -> str:
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        shown = repr(name)[:64] if isinstance(name, str) else type(name).__name__
        raise MalformedResponse(f"{field}: header name {shown} is not a valid HTTP header name")
    return name


def header_value(name: str, v: object, field: str) -> str:
    if isinstance(v, bool):
        text = "true" if v else "false"
    elif isinstance(v, str | int | float):
        text = str(v)
    else:
        raise MalformedResponse(f"{field}[{name!r}]: a header value must be a string, number or boolean, "
                                f"got {type(v).__name__}")
    if _BAD_VALUE.search(text):
        raise MalformedResponse(f"{field}[{name!r}]: the value has a CR, LF or other control character")
    return text


def _structured(value: dict[str, Any]) -> web.Response:
    status = value.get("statusCode")
    # 1xx are interim responses in HTTP/1.1, never the final one: sent as such, the reply would break.
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        shown = status if isinstance(status, int) else type(status).__name__
        raise MalformedResponse(f"statusCode must be an integer from 200 to 599, got {shown}")
    headers: CIMultiDict[str] = CIMultiDict()
    raw_headers = value.get("headers") or {}
    multi = value.get("multiValueHeaders") or {}
    cookies = value.get("cookies") or []
    for field, got, want in (("headers", raw_headers, dict), ("multiValueHeaders", multi, dict),
                             ("cookies", cookies, list)):
        if not isinstance(got, want):
            raise MalformedResponse(f"{field} must be {'an object' if want is dict else 'a list'}, "
                                    f"got {type(got).__name__}")
    for name, v in raw_headers.items():
        name = header_name(name, "headers")
        text = header_value(name, v, "headers")
        if name.lower() not in HOP_BY_HOP:
            headers[name] = text
    for name, values in multi.items():
        name = header_name(name, "multiValueHeaders")
        texts = [header_value(name, v, "multiValueHeaders") for v in (values if isinstance(values, list)
                                                                else [values])]
        if name.lower() in HOP_BY_HOP:
            continue
        if name in headers:
            del headers[name]
        for text in texts:
            headers.add(name, text)
    for i, cookie in enumerate(cookies):
        if not isinstance(cookie, str):
            raise MalformedResponse(f"cookies[{i}] must be a string, got {type(cookie).__name__}")
        if _BAD_VALUE.search(cookie):
            raise MalformedResponse(f"cookies[{i}]: the cookie has a CR, LF or other control character")
        headers.add("Set-Cookie", cookie)
    body = value.get("body")
    data: bytes
    if body is None:
        data = b""
    elif isinstance(body, str):
        if value.get("isBase64Encoded") is True:
            try:
                data = base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError):
                raise MalformedResponse("body is not valid base64 while isBase64Encoded is true") from None
        else:
            data = body.encode()
    else:
        data = json.dumps(body).encode()
    if status in (204, 304):
        data = b""  # no body allowed
    elif "Content-Type" not in headers:
        headers["Content-Type"] = "application/json"
    return web.Response(status=status, body=data, headers=headers)
