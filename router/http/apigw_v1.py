"""API Gateway REST API, Lambda proxy integration (payload format 1.0): the event and the response mapping.

Follows AWS: header names keep the case they were sent in; ``headers`` and ``queryStringParameters``
hold the last value of each name, ``multiValueHeaders`` and ``multiValueQueryStringParameters`` all of
them in order; query parameters are URL-decoded; the ``Cookie`` header stays a header; fields with
nothing in them are ``null`` (``queryStringParameters``, ``pathParameters``, ``stageVariables``,
``body``). A body is text when its content type is textual and it is valid UTF-8, base64 otherwise (as
a REST API whose binary media types list every non-text type).

The response must be an object with an integer ``statusCode``: anything else (a bare string, a list, an
object without ``statusCode``, a body that is not a string) is what API Gateway calls a "Malformed
Lambda proxy response", answered ``502 {"message": "Internal server error"}``, as is a function error.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import CIMultiDict

from router.http.apigw import (
    HOP_BY_HOP,
    MalformedResponse,
    body_field,
    clf_time,
    header_name,
    header_value,
)
from router.invocation import Outcome, Result

STAGE = "$default"


def _multi(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        out.setdefault(key, []).append(value)
    return out


def build_event(
    request: web.Request,
    body: bytes,
    *,
    resource: str,
    request_id: str,
    account_id: str,
    api_id: str,
    now: float | None = None,
    path_parameters: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The REST API proxy event for ``request`` whose body is ``body``; ``resource``: the route's path as
    configured (``/users/{id}``, ``/{proxy+}``); ``path_parameters``: what its ``{name}`` parts matched."""
    now = time.time() if now is None else now
    header_pairs = list(request.headers.items())
    raw = getattr(request, "raw_headers", None)  # aiohttp's request: its names as they were sent
    if raw is not None and len(raw) == len(header_pairs):
        # aiohttp's headers give the names it knows in their canonical case (COOKIE -> Cookie); API
        # Gateway, and the fast path, keep the case the client sent
        header_pairs = [(name.decode("utf-8", "surrogateescape"), value)
                        for (name, _), (_, value) in zip(raw, header_pairs, strict=True)]
    multi_headers = _multi(header_pairs)
    query = parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True)
    multi_query = _multi(query)
    host = request.host
    params = request.match_info if path_parameters is None else path_parameters
    event: dict[str, Any] = {
        "resource": resource,
        "path": request.path,
        "httpMethod": request.method,
        "headers": {name: values[-1] for name, values in multi_headers.items()} or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": {name: values[-1] for name, values in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": dict(params) or None,
        "stageVariables": None,
        "requestContext": {
            "accountId": account_id,
            "apiId": api_id,
            "domainName": host,
            "domainPrefix": host.split(".", 1)[0],
            "extendedRequestId": request_id,
            "httpMethod": request.method,
            "identity": {
                "accessKey": None, "accountId": None, "caller": None, "cognitoAuthenticationProvider": None,
                "cognitoAuthenticationType": None, "cognitoIdentityId": None, "cognitoIdentityPoolId": None,
                "principalOrgId": None, "sourceIp": request.remote or "", "user": None,
                "userAgent": request.headers.get("User-Agent", ""), "userArn": None,
            },
            "path": request.path,
            "protocol": f"HTTP/{request.version.major}.{request.version.minor}",
            "requestId": request_id,
            "requestTime": clf_time(now),
            "requestTimeEpoch": int(now * 1000),
            "resourceId": api_id,
            "resourcePath": resource,
            "stage": STAGE,
        },
        "body": None,
        "isBase64Encoded": False,
    }
    if body:
        event["body"], event["isBase64Encoded"] = body_field(body, request.headers.get("Content-Type", ""))
    return event


def _message(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


def internal_error() -> web.Response:
    """What a REST API answers when the Lambda API refused the invocation."""
    return _message(500, "Internal server error")


def bad_gateway() -> web.Response:
    """What a REST API answers for a function error or a malformed proxy response."""
    return _message(502, "Internal server error")


def map_result(result: Result, on_malformed: Callable[[str], None] | None = None) -> web.Response:
    """Turn a function's result into the HTTP response, as a REST API's Lambda proxy integration does.

    A function error or timeout is ``502``; a throttled invocation ``500`` (the Lambda API refused it);
    a response that is not a
    proxy response object, or one that cannot be sent as it is, ``502`` with ``on_malformed`` called
    with what was wrong (never a header value)."""
    if result.outcome is Outcome.THROTTLED:
        return internal_error()
    if result.function_error or result.outcome is not Outcome.SUCCESS:
        return bad_gateway()
    value = response_object(result.payload)
    if isinstance(value, str):
        return _malformed(value, on_malformed)
    try:
        return _structured(value)
    except MalformedResponse as exc:
        return _malformed(exc.reason, on_malformed)


def response_object(payload: bytes) -> dict[str, Any] | str:
    """A proxy response (REST API, ALB): the function's JSON object, or what is wrong with it."""
    try:
        value = json.loads(payload) if payload.strip() else None
    except (ValueError, RecursionError):
        return "the response is not valid JSON"
    if not isinstance(value, dict):
        return f"the response must be an object with statusCode, got {_kind(value)}"
    return value


def _kind(value: object) -> str:
    return "null" if value is None else "a bare string" if isinstance(value, str) else type(value).__name__


def _malformed(reason: str, on_malformed: Callable[[str], None] | None) -> web.Response:
    if on_malformed is not None:
        on_malformed(reason)
    return bad_gateway()


def _structured(value: dict[str, Any]) -> web.Response:
    if "statusCode" not in value:
        raise MalformedResponse("statusCode is missing")
    status = value["statusCode"]
    if isinstance(status, str) and status.isdigit():
        status = int(status)  # API Gateway takes "200" as well as 200
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        shown = status if isinstance(status, int | str) else type(status).__name__
        raise MalformedResponse(f"statusCode must be an integer from 200 to 599, got {shown!r}")
    headers = response_headers(value.get("headers"), value.get("multiValueHeaders"))
    data = response_body(value)
    if status in (204, 304):
        data = b""
    elif "Content-Type" not in headers:
        headers["Content-Type"] = "application/json"
    return web.Response(status=status, body=data, headers=headers)


def response_headers(single: object, multi: object, *, merge: bool = True) -> CIMultiDict[str]:
    """``headers`` and ``multiValueHeaders`` of a proxy response as one list; a name in both gets the
    values of both, a name/value pair given in both once (``merge``; otherwise the two are not mixed
    and ``multi`` wins for a name in both). Raises ``MalformedResponse``."""
    single = {} if single is None else single
    multi = {} if multi is None else multi
    if not isinstance(single, dict):
        raise MalformedResponse(f"headers must be an object, got {type(single).__name__}")
    if not isinstance(multi, dict):
        raise MalformedResponse(f"multiValueHeaders must be an object, got {type(multi).__name__}")
    out: CIMultiDict[str] = CIMultiDict()
    for name, values in multi.items():
        name = header_name(name, "multiValueHeaders")
        if not isinstance(values, list):
            raise MalformedResponse(
                f"multiValueHeaders[{name!r}] must be a list, got {type(values).__name__}")
        for v in values:
            text = header_value(name, v, "multiValueHeaders")
            if name.lower() not in HOP_BY_HOP:
                out.add(name, text)
    for name, v in single.items():
        name = header_name(name, "headers")
        text = header_value(name, v, "headers")
        if name.lower() in HOP_BY_HOP or (name in out and (not merge or text in out.getall(name))):
            continue
        out.add(name, text)
    return out


def response_body(value: dict[str, Any]) -> bytes:
    """The bytes of a proxy response's ``body``: a string, base64 when ``isBase64Encoded`` is true.
    Raises ``MalformedResponse``."""
    body = value.get("body")
    encoded = value.get("isBase64Encoded", False)
    if not isinstance(encoded, bool):
        raise MalformedResponse(f"isBase64Encoded must be true or false, got {type(encoded).__name__}")
    if body is None:
        return b""
    if not isinstance(body, str):
        raise MalformedResponse(f"body must be a string, got {type(body).__name__}; return json.dumps(...) "
                                "or JSON.stringify(...) of it")
    if encoded:
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedResponse("body is not valid base64 while isBase64Encoded is true") from None
    return body.encode()

