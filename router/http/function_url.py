"""Function URLs (``url:`` on a function): ``http://HOST:PORT/lambda-url/FUNCTION/ANY/PATH`` answers any
method and path with Lambda's function URL event (payload format 2.0, route key ``$default``) and the
payload 2.0 response mapping.

On AWS a function URL is ``https://URL_ID.lambda-url.REGION.on.aws/``; here the function's name in the path
picks it, and what follows ``/lambda-url/FUNCTION`` is the event's ``rawPath`` (``/`` when nothing does).
A request whose ``Host`` is ``URL_ID.lambda-url.REGION.on.aws`` (the function's URL id and the router's
``aws.region``; a name pointed at the router, or ``curl -H Host:...``) reaches the same function with its
whole path as ``rawPath``, as on AWS.
The event's ``domainName`` and ``domainPrefix``, and ``apiId``, are built from a URL id derived from the
function, its account and region (the same in every run), as Lambda builds them from its URL id.

``auth: NONE`` is open to anyone who reaches the port (the user's explicit choice, logged once at start);
``auth: AWS_IAM`` takes a SigV4 signature with a key of ``server.invoke_keys``, checked by
``router.http.sigv4`` as the Invoke API checks it, before the body is read as far as it can be.

CORS as Lambda handles it for a URL with ``cors``: the router answers a preflight (``OPTIONS`` with
``Origin`` and ``Access-Control-Request-Method``) itself, without invoking the function, and puts the
configured ``Access-Control-*`` headers on every response to a request with an allowed ``Origin``,
replacing any the function set.

``invoke_mode: RESPONSE_STREAM`` (README "Response streaming"): a function that streams is answered as it
writes (chunked); with the content type ``application/vnd.awslambda.http-integration-response`` the
prelude before 8 NUL bytes gives the status, headers and cookies. A function that does not stream is
answered with its response as it is, as Lambda's URL does in that mode (no payload 2.0 mapping).
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any

from aiohttp import web

from router import compact_json
from router.config.models import FunctionUrlConfig, FunctionUrlCorsConfig, RouterConfig
from router.errors import Throttled
from router.http import apigw, sigv4
from router.http.context import CTX
from router.http.limits import BodyTooLarge, BodyUnavailable, read_body
from router.http.refusals import REFUSED
from router.http.streaming import StreamedCall, write_streamed
from router.invocation import Invocation, Outcome, Result, new_request_id

log = logging.getLogger("router.http.function_url")

PREFIX = "/lambda-url"
SOURCE = "function_url"


def url_id(config: RouterConfig, function: str) -> str:
    """The function's URL id: 32 lower-case letters and digits, as Lambda's, stable for a function, its
    account and region."""
    return _url_id(config.aws.account_id, config.aws.region, function)


@lru_cache(maxsize=4096)
def _url_id(account: str, region: str, function: str) -> str:
    digest = hashlib.sha256(f"{account}/{region}/{function}".encode()).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:32]


def function_of_host(config: RouterConfig, host: str) -> str | None:
    """The function whose URL host ``host`` is (``URL_ID.lambda-url.REGION.on.aws``, a port allowed),
    or None."""
    if host.count(":") > 1:
        return None  # an IPv6 literal: no URL host
    parts = host.rsplit(":", 1)[0].lower().split(".")
    if len(parts) != 5 or parts[1:] != ["lambda-url", config.aws.region, "on", "aws"]:
        return None
    for name, fn in config.functions.items():
        if fn.url is not None and url_id(config, name) == parts[0]:
            return name
    return None


def domain_name(config: RouterConfig, function: str) -> str:
    return f"{url_id(config, function)}.lambda-url.{config.aws.region}.on.aws"


def function_url(base: str, function: str) -> str:
    """The URL a client calls, on the router at ``base`` (``http://host:port``)."""
    return f"{base}{PREFIX}/{function}/"


def build_event(request: web.Request, body: bytes, *, raw_path: str, config: RouterConfig, function: str,
                request_id: str, caller: dict[str, Any] | None) -> dict[str, Any]:
    """Lambda's function URL event: API Gateway's payload 2.0 with route key ``$default``, ``rawPath``
    the part after the function's prefix, the URL id's domain; ``caller``: the IAM authorizer's fields
    (``auth: AWS_IAM``) or None (``auth: NONE``: ``accountId`` is ``anonymous``)."""
    uid = url_id(config, function)
    event = apigw.build_event(request, body, route_key="$default", request_id=request_id,
                              account_id="anonymous" if caller is None else caller["accountId"],
                              api_id=uid, path_parameters={})
    event["rawPath"] = raw_path
    ctx = event["requestContext"]
    ctx["domainName"] = domain_name(config, function)
    ctx["domainPrefix"] = uid
    ctx["http"]["path"] = raw_path
    if caller is not None:
        ctx["authorizer"] = {"iam": caller}
    return event


# --- CORS ---------------------------------------------------------------------------------------------


def _allowed_origin(cors: FunctionUrlCorsConfig, origin: str) -> str | None:
    """The ``Access-Control-Allow-Origin`` for ``origin``, or None when it is not allowed."""
    if "*" in cors.allow_origins:
        return origin if cors.allow_credentials else "*"
    return origin if origin in cors.allow_origins else None


def cors_headers(cors: FunctionUrlCorsConfig, origin: str, *, preflight: bool) -> dict[str, str]:
    """The ``Access-Control-*`` headers for a request from ``origin`` (none when it is not allowed)."""
    allowed = _allowed_origin(cors, origin)
    if allowed is None:
        return {}
    out = {"Access-Control-Allow-Origin": allowed}
    if allowed != "*":
        out["Vary"] = "Origin"
    if cors.allow_credentials:
        out["Access-Control-Allow-Credentials"] = "true"
    if preflight:
        if cors.allow_methods:
            out["Access-Control-Allow-Methods"] = ", ".join(cors.allow_methods)
        if cors.allow_headers:
            out["Access-Control-Allow-Headers"] = ", ".join(cors.allow_headers)
        if cors.max_age:
            out["Access-Control-Max-Age"] = str(cors.max_age)
    elif cors.expose_headers:
        out["Access-Control-Expose-Headers"] = ", ".join(cors.expose_headers)
    return out


def _with_cors(response: web.StreamResponse, url: FunctionUrlConfig,
               request: web.Request) -> web.StreamResponse:
    origin = request.headers.get("Origin")
    if url.cors is None or origin is None:
        return response
    for name in [n for n in response.headers if n.lower().startswith("access-control-")]:
        response.headers.popall(name, None)  # the URL's CORS settings answer, not the function
    response.headers.update(cors_headers(url.cors, origin, preflight=False))
    return response


# --- answers --------------------------------------------------------------------------------------------


def _message(status: int, message: str) -> web.Response:
    return web.json_response({"Message": message}, status=status)


def _too_large(limit: int) -> web.Response:
    """Lambda's URL answer to a body over the limit (``server.max_body``, 6 MB by default)."""
    log.info("function url: request body over %d bytes refused (413); server.max_body raises the limit",
             limit)
    response = _message(413, f"Request must be smaller than {limit} bytes for the InvokeFunction operation")
    response.headers["x-amzn-ErrorType"] = "RequestEntityTooLargeException"
    return response


def _bad_gateway() -> web.Response:
    """A function error or a response that cannot be sent: Lambda's URL answer."""
    return web.Response(status=502, text="Internal Server Error", content_type="text/plain")


class _Malformed:
    """Records that the mapping found the response malformed, and logs why."""

    def __init__(self, function: str, request_id: str) -> None:
        self.called = False
        self._extra = {"function": function, "request_id": request_id, "error_type": "handler"}

    def __call__(self, reason: str) -> None:
        self.called = True
        log.error("function URL: the function's response is malformed, answered 502: %s; return statusCode, "
                  "headers, cookies and body as Lambda's function URL (payload format 2.0) expects", reason,
                  extra=self._extra)


def map_result(result: Result, on_malformed: _Malformed) -> web.Response:
    """The payload 2.0 mapping (a bare value is a 200 JSON body), with Lambda's URL answers to a function
    error, a timeout, a throttle and a malformed response."""
    if result.outcome is Outcome.THROTTLED:
        return _message(429, "Rate Exceeded.")
    if result.function_error or result.outcome is not Outcome.SUCCESS:
        return _bad_gateway()
    response = apigw.map_result(result, on_malformed)
    return _bad_gateway() if on_malformed.called else response


async def _iam_caller(request: web.Request, keys: dict[str, str], body_limit: int,
                      request_id: str) -> tuple[dict[str, Any], bytes] | web.Response:
    """The caller a SigV4 signature names and the body, or the refusal (403 before the body is read when
    the headers alone cannot be valid)."""
    if not keys or not sigv4.is_signed(request.headers):
        return _forbidden(request_id, "missing SigV4 signature")
    try:
        sigv4.check_headers(request.headers, keys)
    except sigv4.SignatureError as exc:
        return _forbidden(request_id, exc.message)
    try:
        body = await read_body(request, body_limit)
    except BodyTooLarge:
        return _too_large(body_limit)
    try:
        key = sigv4.verify(sigv4.SignedRequest(request.method, request.raw_path, request.headers, body), keys)
    except sigv4.SignatureError as exc:
        return _forbidden(request_id, exc.message)
    config = request.app[CTX].config
    caller = {"accessKey": key, "accountId": config.aws.account_id, "callerId": key,
              "cognitoIdentity": None, "principalOrgId": None,
              "userArn": f"arn:aws:iam::{config.aws.account_id}:user/{key}", "userId": key}
    return caller, body


def _forbidden(request_id: str, why: str) -> web.Response:
    log.info("function URL: request refused, %s", why, extra={"request_id": request_id, "status": 403})
    return _message(403, "Forbidden")


async def handle(request: web.Request) -> web.StreamResponse:
    """Answer a request to ``/lambda-url/{function}{tail}``."""
    name = request.match_info["function"]
    raw = request.rel_url.raw_path
    return await serve(request, name, raw[len(PREFIX) + 1 + len(raw.split("/", 3)[2]):] or "/")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def url_hosts(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request to a function's URL host goes to the function, whatever its path."""
    if ".lambda-url." in request.host:
        name = function_of_host(request.app[CTX].config, request.host)
        if name is not None:
            return await serve(request, name, request.rel_url.raw_path or "/")
    return await handler(request)


async def serve(request: web.Request, name: str, raw_path: str) -> web.StreamResponse:
    """Answer ``request`` as function ``name``'s URL, the event's ``rawPath`` being ``raw_path``."""
    ctx = request.app[CTX]
    config = ctx.config  # the running config: a reload changes which functions have URLs
    fn = config.functions.get(name)
    request_id = new_request_id()
    if fn is None or fn.url is None:
        return _message(404, "Not Found")  # as a URL id that names no function URL
    url = fn.url
    headers = {"x-amzn-RequestId": request_id}

    origin = request.headers.get("Origin")
    if (url.cors is not None and request.method == "OPTIONS" and origin is not None
            and "Access-Control-Request-Method" in request.headers):
        return web.Response(status=200, headers={**headers, **cors_headers(url.cors, origin, preflight=True)})

    caller: dict[str, Any] | None = None
    try:
        if url.auth == "AWS_IAM":
            got = await _iam_caller(request, config.server.invoke_keys, config.server.max_body, request_id)
            if isinstance(got, web.Response):
                got.headers.update(headers)
                return _with_cors(got, url, request)
            caller, body = got
        else:
            body = await read_body(request, config.server.max_body)
    except BodyTooLarge:
        return _too_large(config.server.max_body)
    except BodyUnavailable as exc:
        return exc.response()

    event = build_event(request, body, raw_path=raw_path, config=config, function=name,
                        request_id=request_id, caller=caller)
    inv = Invocation(function=name, payload=compact_json.dumpb(event), source=SOURCE,
                     request_id=request_id)
    extra = {"function": name, "request_id": request_id}
    if url.invoke_mode == "RESPONSE_STREAM":
        return await _serve_streamed(request, ctx.dispatcher, inv, url, headers)
    try:
        result = await ctx.dispatcher.invoke(inv)
    except REFUSED as exc:
        log.warning("function URL: not invoked: %s", type(exc).__name__, extra=extra)
        response = _message(429, "Rate Exceeded.") if isinstance(exc, Throttled) else _bad_gateway()
    else:
        response = map_result(result, _Malformed(name, request_id))
    response.headers.update(headers)
    return _with_cors(response, url, request)


# --- RESPONSE_STREAM ------------------------------------------------------------------------------------


async def _serve_streamed(request: web.Request, dispatcher: Any, inv: Invocation, url: FunctionUrlConfig,
                          headers: dict[str, str]) -> web.StreamResponse:
    """Answer as the function writes (see the module doc)."""
    extra = {"function": inv.function, "request_id": inv.request_id}
    async with StreamedCall(dispatcher, inv) as call:
        try:
            streams = await call.streams()
            result = None if streams else await call.result()
        except REFUSED as exc:
            log.warning("function URL: not invoked: %s", type(exc).__name__, extra=extra)
            refused = _message(429, "Rate Exceeded.") if isinstance(exc, Throttled) else _bad_gateway()
            refused.headers.update(headers)
            return _with_cors(refused, url, request)
        if result is not None:
            whole = _whole(result)
            whole.headers.update(headers)
            return _with_cors(whole, url, request)
        streamed = await write_streamed(
            request, call, headers=headers, decorate=lambda response: _with_cors(response, url, request),
            on_malformed=_Malformed(inv.function, inv.request_id), where="function URL", extra=extra)
        if streamed is not None:
            return streamed
        failed = _bad_gateway()
        failed.headers.update(headers)
        return _with_cors(failed, url, request)


def _whole(result: Result) -> web.Response:
    """A function that did not stream, behind a RESPONSE_STREAM URL: its response as it is."""
    if result.outcome is Outcome.THROTTLED:
        return _message(429, "Rate Exceeded.")
    if result.function_error or result.outcome is not Outcome.SUCCESS:
        return _bad_gateway()
    return web.Response(status=200, body=result.payload, content_type="application/json")


def add_function_url_routes(app: web.Application) -> None:
    """Serve every function's URL; a function without ``url`` (or unknown) answers 404. Before the
    webhook catch-all (``/lambda-url/`` is reserved for function URLs)."""
    app.router.add_route("*", PREFIX + "/{function}", handle)
    app.router.add_route("*", PREFIX + "/{function}/{tail:.*}", handle)


def log_open_urls(config: RouterConfig) -> None:
    """One line at start naming the functions whose URL anyone who reaches the port may call."""
    open_urls = sorted(name for name, fn in config.functions.items()
                       if fn.url is not None and fn.url.auth == "NONE")
    if open_urls:
        log.warning("function URLs with auth NONE, callable by anyone who reaches the port: %s",
                    ", ".join(open_urls))
