"""The Lambda Invoke API (DESIGN §4.5): ``POST /2015-03-31/functions/{name}/invocations``.

boto3 and the AWS CLI work against it with ``endpoint_url`` set to the router. When
``server.invoke_token`` is set, a request must carry the token, either as
``Authorization: Bearer <token>`` (curl, HTTP clients) or as ``X-Api-Key: <token>``. When
``server.invoke_keys`` (access key id -> secret) is set, the AWS SDKs and CLI authenticate as with AWS:
their SigV4 signature is verified (``router.http.sigv4``). With a token only, boto3 can send it as
``X-Api-Key`` from an event hook (any credentials will do; the signature is then not checked)::

    client = boto3.client("lambda", endpoint_url="http://router:8080", region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x")
    def _token(request, **_):
        request.headers["X-Api-Key"] = TOKEN
    client.meta.events.register("before-sign.lambda.Invoke", _token)

Credentials are checked before anything else (DESIGN §9a): a stranger gets 403 whether the function
exists or not, for DryRun too, so the API is no oracle of function names. A SigV4 request is checked as
far as it can be without its body (key, date, signed headers) before the body is read.

A qualifier (``Qualifier=``, or ``name:qualifier`` / a qualified ARN) runs a published version or an
alias of the config (``router.core.versions``); the answer's ``X-Amz-Executed-Version`` names the version
that ran. A version or alias the function does not have is ResourceNotFoundException naming the qualified
ARN, as in Lambda (for ``Event`` too, before the event is accepted).
An empty payload reaches the function as ``{}``, as in Lambda. ``X-Amz-Client-Context`` must be at most
3,583 bytes of base64 JSON object, else InvalidRequestContentException, as in Lambda.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from dataclasses import dataclass

from aiohttp import web

from router.core.recursion import refusal_message
from router.errors import PayloadTooLarge, RouterError, Throttled, Unavailable, VersionError
from router.http import aws_errors
from router.http.context import CTX, HttpContext
from router.http.invoke_auth import authenticate
from router.http.refusals import REFUSED, Refusals
from router.invocation import Invocation, Outcome, Result, new_request_id
from router.redaction import redact

log = logging.getLogger("router.http.invoke_api")

PATH = "/2015-03-31/functions/{name}/invocations"
ASYNC_PATH = "/2014-11-13/functions/{name}/invoke-async"
"""InvokeAsync, deprecated by Lambda but still in the SDKs and the CLI (``aws lambda invoke-async``)."""
SOURCE = "invoke_api"
LOG_TAIL_BYTES = 4096
CLIENT_CONTEXT_LIMIT = 3583
"""Bytes of base64 ``X-Amz-Client-Context`` Lambda takes (Invoke API reference: "Up to 3,583 bytes")."""
CLIENT_CONTEXT_INVALID = "Client context must be a valid Base64-encoded JSON object."
_QUALIFIER = re.compile(r"^(\$LATEST|[A-Za-z0-9_-]{1,128})$")

_NAME = re.compile(
    r"^(?:arn:(?P<partition>aws[a-zA-Z-]*):lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):function:"
    r"|(?P<account2>\d{12}):function:)?"
    r"(?P<name>[A-Za-z0-9_-]{1,64})(?::(?P<qualifier>\$LATEST|[A-Za-z0-9_-]{1,128}))?$"
)


@dataclass(frozen=True, slots=True)
class FunctionRef:
    """A parsed ``FunctionName``: plain name, partial ARN or full ARN, with an optional qualifier."""

    name: str
    qualifier: str | None
    region: str | None
    account: str | None


def parse_function_name(value: str) -> FunctionRef | None:
    """Parse ``name``, ``name:qualifier``, ``ACCOUNT:function:name[:q]`` or a full ARN; None if malformed."""
    m = _NAME.match(value)
    if m is None:
        return None
    return FunctionRef(
        name=m["name"], qualifier=m["qualifier"], region=m["region"], account=m["account"] or m["account2"]
    )


def _log_result(logs: str) -> str:
    # The caller may be another team: a config secret the function printed is shown as ${NAME}.
    return base64.b64encode(redact(logs).encode()[-LOG_TAIL_BYTES:]).decode("ascii")


def client_context_problem(value: str) -> str | None:
    """Why an ``X-Amz-Client-Context`` is refused (Lambda's InvalidRequestContentException), or None:
    it must be at most 3,583 bytes of base64 that decodes to a JSON object."""
    size = len(value.encode("utf-8", "surrogateescape"))  # the bytes it arrived as (aiohttp's decoding)
    if size > CLIENT_CONTEXT_LIMIT:
        return (f"Client context must be at most {CLIENT_CONTEXT_LIMIT} bytes of base64-encoded data, "
                f"got {size} bytes")
    try:
        parsed = json.loads(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return CLIENT_CONTEXT_INVALID
    return None if isinstance(parsed, dict) else CLIENT_CONTEXT_INVALID


@dataclass(slots=True)
class InvokeRequest:
    """An Invoke request that passed the checks both Invoke operations make (``begin``)."""

    request_id: str
    body: bytes  # the payload: JSON, ``{}`` when empty
    name: str  # the function
    qualifier: str | None  # a version or alias (None: $LATEST)
    arn: str  # the function's ARN as answers name it (qualified when a qualifier was given)
    kind: str  # RequestResponse | Event
    client_context: str | None


async def begin(request: web.Request, kinds: tuple[str, ...],
                invocation_type: str | None = None) -> InvokeRequest | web.Response:
    """Credentials, the function name and qualifier, the invocation type (one of ``kinds`` or DryRun;
    ``invocation_type`` for an operation that has one of its own), the client context and the payload,
    checked as Lambda checks them: the request, or the answer (an error, or DryRun's 204)."""
    ctx: HttpContext = request.app[CTX]
    request_id = new_request_id()
    authenticated = await authenticate(request, request_id, ctx.config.server.max_body)
    if isinstance(authenticated, web.Response):
        return authenticated
    body = authenticated

    raw_name = request.match_info["name"]
    ref = parse_function_name(raw_name)
    if ref is None:
        return aws_errors.validation(
            f"1 validation error detected: Value '{raw_name}' at 'functionName' failed to satisfy "
            "constraint: must be a function name, a partial ARN or a function ARN",
            request_id,
        )
    aws = ctx.config.aws
    qualifier = request.query.get("Qualifier") or ref.qualifier
    if ref.qualifier and qualifier != ref.qualifier:
        return aws_errors.aws_error(
            400, "InvalidParameterValueException",
            "The derived qualifier from the function name does not match the specified qualifier.",
            request_id)
    if qualifier == "$LATEST":
        qualifier = None
    base_arn = aws.function_arn(ref.name)
    if qualifier is not None and not _QUALIFIER.match(qualifier):
        return aws_errors.validation(
            f"1 validation error detected: Value '{qualifier}' at 'qualifier' failed to satisfy constraint: "
            "Member must satisfy regular expression pattern: (|[a-zA-Z0-9$_-]+)", request_id)
    if (
        (ref.region is not None and ref.region != aws.region)
        or (ref.account is not None and ref.account != aws.account_id)
        or not ctx.dispatcher.has_function(ref.name)
    ):
        shown = raw_name if raw_name.startswith("arn:") else base_arn
        if qualifier and not shown.endswith(f":{qualifier}"):
            shown += f":{qualifier}"
        return aws_errors.not_found(shown, request_id)

    kind = invocation_type or request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
    if kind not in (*kinds, "DryRun"):
        return aws_errors.validation(
            f"1 validation error detected: Value '{kind}' at 'invocationType' failed to satisfy "
            f"constraint: Member must satisfy enum value set: [{', '.join([*sorted(kinds), 'DryRun'])}]",
            request_id,
        )
    client_context = request.headers.get("X-Amz-Client-Context") or None  # empty is as absent
    if client_context is not None:
        problem = client_context_problem(client_context)
        if problem is not None:
            return aws_errors.aws_error(400, "InvalidRequestContentException", problem, request_id)
    if kind == "DryRun":  # the checks an invocation makes before it runs: the qualifier's too
        if qualifier is not None and not (ctx.versions is not None
                                          and await ctx.versions.exists(ref.name, qualifier)):
            return aws_errors.not_found(f"{base_arn}:{qualifier}", request_id)
        return web.Response(status=204, headers={"x-amzn-RequestId": request_id})

    if not body.strip():
        body = b"{}"
    try:
        json.loads(body)
    except (ValueError, RecursionError) as exc:
        return aws_errors.bad_content(_json_error(exc), request_id)
    arn = base_arn if qualifier is None else f"{base_arn}:{qualifier}"
    return InvokeRequest(request_id, body, ref.name, qualifier, arn, kind, client_context)


def _invocation(request: web.Request, begun: InvokeRequest) -> Invocation:
    return Invocation(
        function=begun.name,
        payload=begun.body,
        source=SOURCE,
        request_id=begun.request_id,
        invocation_type="async" if begun.kind == "Event" else "sync",
        log_tail=request.headers.get("X-Amz-Log-Type") == "Tail",
        client_context=begun.client_context,
        # The AWS SDKs send the calling function's _X_AMZN_TRACE_ID: a chain's hops (recursive loops).
        trace_id=request.headers.get("X-Amzn-Trace-Id") or None,
        qualifier=begun.qualifier,
    )


async def invoke_async(request: web.Request) -> web.StreamResponse:
    """InvokeAsync: the payload as an ``Event`` invocation (same checks, limit and errors), answered
    ``202 {"Status": 202}`` once the event is persisted."""
    ctx: HttpContext = request.app[CTX]
    begun = await begin(request, ("Event",), invocation_type="Event")
    if isinstance(begun, web.Response):
        return begun
    inv = _invocation(request, begun)
    try:
        await ctx.dispatcher.submit(inv)
    except REFUSED as exc:
        return InvokeApiRefusals(begun.arn).answer(exc, inv)
    return web.json_response({"Status": 202}, status=202, headers={
        "x-amzn-RequestId": begun.request_id, "Location": f"/invocations/{begun.request_id}"})


async def invoke(request: web.Request) -> web.StreamResponse:
    ctx: HttpContext = request.app[CTX]
    begun = await begin(request, ("RequestResponse", "Event"))
    if isinstance(begun, web.Response):
        return begun
    request_id, kind = begun.request_id, begun.kind
    inv = _invocation(request, begun)
    try:
        if kind == "Event":
            await ctx.dispatcher.submit(inv)
            return web.Response(status=202, headers={"x-amzn-RequestId": request_id,
                                                     "Location": f"/invocations/{request_id}"})
        result = await ctx.dispatcher.invoke(inv)
    except REFUSED as exc:
        return InvokeApiRefusals(begun.arn).answer(exc, inv)

    refused = refused_result(result, request_id)
    if refused is not None:
        return refused
    headers = {"x-amzn-RequestId": request_id, "X-Amz-Executed-Version": result.executed_version}
    if result.function_error:
        headers["X-Amz-Function-Error"] = result.function_error
    if inv.log_tail:
        headers["X-Amz-Log-Result"] = _log_result(result.logs)
    return web.Response(status=200, body=result.payload, content_type="application/json", headers=headers)


def refused_result(result: Result, request_id: str) -> web.Response | None:
    """The answer to a sync invocation that ran no function, as Lambda's error: no execution environment
    could be had (429, the memory budget), or recursive loop detection stopped it (400
    ``RecursiveInvocationException``, not a function error); None for any other result."""
    if result.outcome is Outcome.THROTTLED:
        return aws_errors.too_many_requests(request_id, Throttled.ACCOUNT)
    refused = refusal_message(result)
    if refused is not None:
        return aws_errors.aws_error(400, "RecursiveInvocationException", refused, request_id,
                                    message_key="Message")
    return None


class InvokeApiRefusals(Refusals):
    """The dispatcher's refusals answered as Lambda's Invoke errors, so botocore raises the same class."""

    __slots__ = ("_arn",)

    def __init__(self, arn: str) -> None:
        self._arn = arn  # the function's ARN as the answer names it

    def not_found(self, inv: Invocation) -> web.Response:
        return aws_errors.not_found(self._arn, inv.request_id)

    def throttled(self, inv: Invocation, exc: Throttled) -> web.Response:
        log.info("invoke api: throttled", extra={**_extra(inv), "error_type": "throttled"})
        return aws_errors.too_many_requests(inv.request_id, exc.reason)

    def too_large(self, inv: Invocation, exc: PayloadTooLarge) -> web.Response:
        event_size = exc.size if inv.invocation_type == "async" else None
        setting = "server.max_async_body" if event_size is not None else "server.max_body"
        log.info("invoke api: payload of %d bytes over %d refused (413); %s raises the limit", exc.size,
                 exc.limit, setting, extra=_extra(inv))
        return aws_errors.too_large(exc.limit, inv.request_id, event_size=event_size)

    def unavailable(self, inv: Invocation, exc: Unavailable) -> web.Response:
        response = self.failed(inv, exc)
        response.set_status(503)  # not accepted: 503 (the SDKs retry it) with Retry-After
        response.headers["Retry-After"] = str(exc.retry_after)
        return response

    def failed(self, inv: Invocation, exc: RouterError | OSError) -> web.Response:
        if isinstance(exc, VersionError):  # a published version whose code or config cannot be used
            log.error("invoke api: %s", exc, extra={**_extra(inv), "error_type": "config"})
            return aws_errors.service_error(str(exc), inv.request_id)
        # The state store or the async queue could not take the event.
        log.error("invoke api: could not dispatch the invocation: %s", exc,
                  extra={**_extra(inv), "error_type": "connection"})
        return aws_errors.service_error(
            "the router could not accept the invocation (its state store or async queue is unavailable); "
            "retry later", inv.request_id)


def _extra(inv: Invocation) -> dict[str, str]:
    return {"function": inv.function, "request_id": inv.request_id, "source": SOURCE}


def _json_error(exc: ValueError | RecursionError) -> str:
    if isinstance(exc, RecursionError):
        return "Could not parse payload into json: nested too deeply"
    if isinstance(exc, json.JSONDecodeError):
        return f"Could not parse payload into json: {exc.msg} at line {exc.lineno} column {exc.colno}"
    return "Could not parse payload into json: the body is not valid UTF-8"


def add_invoke_routes(app: web.Application) -> None:
    app.router.add_post(PATH, invoke)
    app.router.add_post(ASYNC_PATH, invoke_async)
    app.router.add_post(ASYNC_PATH + "/", invoke_async)  # botocore's path ends with a slash
