"""Lambda's control API on the Invoke port, so the AWS CLI and SDKs manage a running router: functions
(ListFunctions, GetFunction, GetFunctionConfiguration), reserved concurrency
(Put/Get/DeleteFunctionConcurrency; 0 pauses a function), event source mappings
(List/Get/UpdateEventSourceMapping: ``Enabled`` pauses or resumes a polling route) and event invoke
configs (Get/PutFunctionEventInvokeConfig: retries and event age at run time) and function URLs
(GetFunctionUrlConfig, ListFunctionUrlConfigs: what the config's ``url`` says, read only).

Paths and JSON shapes are those of botocore's Lambda service model; errors go through ``aws_errors`` so
botocore raises the right class. Authentication is the Invoke API's (``invoke_auth.authenticate``).
The config file owns everything else: a change of another field is InvalidParameterValueException
saying so. Changes are kept in the state store (``router.core.controls``) and survive a restart.

Event source mappings are the routes with a polling source (sqs, kinesis, dynamodb_stream, amqp), each
with a UUID derived from its name (stable across restarts); webhook and schedule routes are paused through
the admin API (``router.http.admin_api``).
"""

from __future__ import annotations

import json
import math
import platform
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from router.config.models import (
    AmqpSourceConfig,
    DestinationConfig,
    DynamodbStreamSourceConfig,
    KinesisSourceConfig,
    RouteConfig,
    RouterConfig,
    SqsSourceConfig,
)
from router.core.controls import ControlError, Controls
from router.core.versions import Versions, config_snapshot
from router.http import aws_errors
from router.http.context import CTX, HttpContext
from router.http.function_url import function_url
from router.http.invoke_api import parse_function_name
from router.http.invoke_auth import authenticate
from router.invocation import new_request_id
from router.mappings import mapping_uuid
from router.urls import safe_url

POLLER_TYPES = ("sqs", "kinesis", "dynamodb_stream", "amqp")
BODY_LIMIT = 64 * 1024
"""Largest control request body read (they are small JSON objects)."""
MAX_ITEMS = 50
"""Page size of ListFunctions and ListEventSourceMappings when MaxItems is not given (Lambda's 50)."""
LAMBDA_RETRIES = (0, 2)
LAMBDA_EVENT_AGE = (60, 21600)
"""Bounds of MaximumRetryAttempts and MaximumEventAgeInSeconds in PutFunctionEventInvokeConfig."""
OWNED = "the config file owns it"

_FN = "/{FunctionName}"


REVISION_NAMESPACE = uuid.UUID("0b6c5a51-8d0e-5c57-b7a2-3f4e2d1c9a88")
"""uuid5 namespace of a function's RevisionId: the same config gives the same id, a change a new one."""


def lambda_timestamp(epoch: float) -> str:
    """A FunctionConfiguration's LastModified as Lambda writes it: ``2024-05-01T12:00:00.123+0000``."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def sqs_queue_arn(queue_url: str, region: str) -> str:
    """``https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`` -> ``arn:aws:sqs:REGION:ACCOUNT:NAME`` (a local
    endpoint's host gives no region: ``region``)."""
    from urllib.parse import urlsplit

    parts = urlsplit(queue_url)
    path = [p for p in parts.path.split("/") if p]
    host = parts.hostname or ""
    if host.startswith("sqs.") and host.count(".") >= 2:
        region = host.split(".")[1]
    if len(path) >= 2:
        return f"arn:aws:sqs:{region}:{path[-2]}:{path[-1]}"
    return safe_url(queue_url)


def invalid(message: str, request_id: str) -> web.Response:
    return aws_errors.aws_error(400, "InvalidParameterValueException", message, request_id)


def _not_found(message: str, request_id: str) -> web.Response:
    return aws_errors.aws_error(404, "ResourceNotFoundException", message, request_id, message_key="Message")


def _json(body: Any, request_id: str, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers={"x-amzn-RequestId": request_id})


class ControlApi:
    """The handlers; ``started``: epoch seconds shown as the functions' LastModified."""

    def __init__(self, ctx: HttpContext, controls: Controls, started: float) -> None:
        self._ctx = ctx  # its config is the running one: a reload replaces it
        self.controls = controls
        self.started = started

    @property
    def config(self) -> RouterConfig:
        return self._ctx.config

    @property
    def versions(self) -> Versions | None:
        return self._ctx.versions

    @property
    def pollers(self) -> dict[str, RouteConfig]:
        return {r.name: r for r in self.config.routes if r.source.type in POLLER_TYPES}

    @property
    def by_uuid(self) -> dict[str, RouteConfig]:
        return {mapping_uuid(name): r for name, r in self.pollers.items()}

    # --- shapes -----------------------------------------------------------------------------------------

    def function_configuration(self, name: str) -> dict[str, Any]:
        """$LATEST's FunctionConfiguration: LastModified is when the router started or a reload changed
        the function, RevisionId changes with its config."""
        fn = self.config.functions[name]
        modified = self._ctx.modified.get(name, self.started)
        logging_config: dict[str, Any] = {"LogFormat": fn.logging.log_format,
                                          "LogGroup": f"/aws/lambda/{name}"}
        if fn.logging.log_format == "JSON":  # Lambda's defaults: INFO
            logging_config["ApplicationLogLevel"] = fn.logging.application_log_level or "INFO"
            logging_config["SystemLogLevel"] = fn.logging.system_log_level or "INFO"
        out: dict[str, Any] = {
            "FunctionName": name,
            "FunctionArn": self.config.aws.function_arn(name),
            "Description": fn.description,
            "Timeout": math.ceil(fn.timeout),
            "MemorySize": fn.memory,
            "LastModified": lambda_timestamp(modified),
            "CodeSize": 0,
            "Version": "$LATEST",
            "State": "Active",
            "LastUpdateStatus": "Successful",
            "PackageType": "Zip",
            "Architectures": ["arm64" if platform.machine() in ("aarch64", "arm64") else "x86_64"],
            "RevisionId": str(uuid.uuid5(REVISION_NAMESPACE, f"{name}\n{config_snapshot(fn)}")),
            "LoggingConfig": logging_config,
        }
        if fn.runtime is not None:
            out["Runtime"] = fn.runtime
        if fn.handler is not None:
            out["Handler"] = fn.handler
        dlq = fn.async_.dead_letter
        if dlq is not None:
            out["DeadLetterConfig"] = {"TargetArn": dlq.topic_arn if dlq.queue_url is None
                                       else sqs_queue_arn(dlq.queue_url, self.config.aws.region)}
        return out

    def destination_arn(self, dest: DestinationConfig) -> str:
        """What a destination is, in ARN form where it has one (functions, SQS queues)."""
        match dest.type:
            case "function":
                return self.config.aws.function_arn(dest.function)
            case "sqs":
                return sqs_queue_arn(dest.queue_url, self.config.aws.region)
            case "sns":
                return dest.topic_arn
            case "eventbridge":
                return dest.event_bus_arn
            case "s3":
                return dest.bucket_arn
            case "file":
                return f"file:{dest.path}"
            case _:
                return safe_url(dest.url)

    def has_event_invoke_config(self, name: str) -> bool:
        """Whether the function has one: an ``async:`` block in the config, or retries or an event age
        put at run time (without either, Lambda's defaults apply and Get answers that there is none)."""
        state = self.controls.function(name)
        return ("async_" in self.config.functions[name].model_fields_set
                or state.maximum_retry_attempts is not None or state.maximum_event_age is not None)

    def event_invoke_config(self, name: str, qualifier: str | None = None) -> dict[str, Any]:
        """The function's event invoke config; with ``qualifier`` (a version or alias, which run with
        their function's) under that qualifier's ARN."""
        settings = self.controls.async_config(name)
        arn = self.config.aws.function_arn(name)
        out: dict[str, Any] = {
            "LastModified": self.controls.function(name).updated_at or self.started,
            "FunctionArn": arn if qualifier is None else f"{arn}:{qualifier}",
            "MaximumRetryAttempts": settings.retries,
            "MaximumEventAgeInSeconds": int(settings.max_event_age),
        }
        dests: dict[str, Any] = {}
        if settings.on_success is not None:
            dests["OnSuccess"] = {"Destination": self.destination_arn(settings.on_success)}
        if settings.on_failure is not None:
            dests["OnFailure"] = {"Destination": self.destination_arn(settings.on_failure)}
        if dests:
            out["DestinationConfig"] = dests
        return out

    def mapping(self, route: RouteConfig) -> dict[str, Any]:
        """The EventSourceMappingConfiguration of a polling route, with the keys Lambda's answers have
        (as captured from AWS in LocalStack's validated snapshots): ``FunctionResponseTypes`` always
        (``[]`` without ReportBatchItemFailures), ``FilterCriteria`` with filters; for SQS no
        ``LastProcessingResult`` and ``ScalingConfig`` only when set; for streams ``DestinationConfig``
        always (``{"OnFailure": {}}`` without one), ``TumblingWindowInSeconds`` and "User action"."""
        src = route.source
        enabled = self.controls.route_enabled(route.name)
        aws = self.config.aws
        uuid_ = mapping_uuid(route.name)
        out: dict[str, Any] = {
            "UUID": uuid_,
            "EventSourceMappingArn": (f"arn:aws:lambda:{aws.region}:{aws.account_id}:"
                                      f"event-source-mapping:{uuid_}"),
            "FunctionArn": aws.function_arn(route.function),
            "LastModified": self.controls.route_updated(route.name) or self.started,
            "State": "Enabled" if enabled else "Disabled",
            "StateTransitionReason": "USER_INITIATED",
        }
        if route.filters:
            out["FilterCriteria"] = {"Filters": [{"Pattern": json.dumps(p)} for p in route.filters]}
        if isinstance(src, SqsSourceConfig):
            out.update(EventSourceArn=sqs_queue_arn(src.queue_url, aws.region), BatchSize=src.batch_size,
                       MaximumBatchingWindowInSeconds=int(src.batch_window),
                       FunctionResponseTypes=["ReportBatchItemFailures"] if src.report_batch_item_failures
                       else [])
            if "max_concurrency" in src.model_fields_set:
                out["ScalingConfig"] = {"MaximumConcurrency": src.max_concurrency}
        elif isinstance(src, KinesisSourceConfig | DynamodbStreamSourceConfig):
            failure = ({} if src.on_failure is None
                       else {"Destination": self.destination_arn(src.on_failure)})
            out.update(EventSourceArn=src.stream_arn, BatchSize=src.batch_size,
                       MaximumBatchingWindowInSeconds=int(src.batch_window),
                       StartingPosition=src.starting_position, ParallelizationFactor=src.parallelization,
                       BisectBatchOnFunctionError=src.bisect_on_error,
                       MaximumRetryAttempts=src.max_retry_attempts,
                       MaximumRecordAgeInSeconds=int(src.max_record_age),
                       FunctionResponseTypes=["ReportBatchItemFailures"] if src.report_batch_item_failures
                       else [],
                       DestinationConfig={"OnFailure": failure},
                       TumblingWindowInSeconds=int(src.tumbling_window),
                       StateTransitionReason="User action", LastProcessingResult="No records processed")
        elif isinstance(src, AmqpSourceConfig):
            out.update(EventSourceArn=safe_url(src.url), BatchSize=src.batch_size,
                       MaximumBatchingWindowInSeconds=int(src.batch_window), Queues=[src.queue],
                       FunctionResponseTypes=[])
        return out

    # --- lookups ----------------------------------------------------------------------------------------

    def function_ref(self, request: web.Request, request_id: str) -> tuple[str, str | None] | web.Response:
        """The function the path names (name, partial or full ARN) and its qualifier (``:q`` or
        ``?Qualifier=``; None for $LATEST), or the error answer."""
        raw = request.match_info["FunctionName"]
        ref = parse_function_name(raw)
        if ref is None:
            return invalid(f"FunctionName: not a function name or ARN, got {raw!r}", request_id)
        given = request.query.get("Qualifier") or None
        if ref.qualifier and given and ref.qualifier != given:
            return invalid(f"The derived qualifier from the function name does not match the specified "
                           f"qualifier ({ref.qualifier} and {given})", request_id)
        qualifier = ref.qualifier or given
        if ref.name not in self.config.functions:
            return aws_errors.not_found(self.config.aws.function_arn(ref.name), request_id)
        return ref.name, None if qualifier == "$LATEST" else qualifier

    async def has_qualifier(self, name: str, qualifier: str) -> bool:
        """Whether ``qualifier`` is a published version or an alias of function ``name``."""
        versions = self.versions
        return versions is not None and await versions.exists(name, qualifier)


async def _begin(request: web.Request) -> tuple[ControlApi, str, bytes | web.Response]:
    """The API, a request id, and the body once the caller is authenticated (or the refusal)."""
    request_id = new_request_id()
    api = request.app[CONTROL_API]
    return api, request_id, await authenticate(request, request_id, BODY_LIMIT)


_FUNCTION_ONLY = ("{operation} takes the function's unqualified name or ARN: it applies to the function "
                  "'{name}', not to its version or alias '{qualifier}'")


async def _begin_function(request: web.Request, operation: str, refusal: str = _FUNCTION_ONLY
                          ) -> tuple[ControlApi, str, str, bytes] | web.Response:
    """``_begin``, then the unqualified function the path names: the API, a request id, the function's
    name and the body; or the refusal (credentials, an unknown function, and ``refusal`` for a version or
    alias named to an ``operation`` of the function itself)."""
    begun = await _begin_qualified(request)
    if isinstance(begun, web.Response):
        return begun
    api, request_id, name, qualifier, body = begun
    if qualifier is not None:
        return invalid(refusal.format(operation=operation, name=name, qualifier=qualifier), request_id)
    return api, request_id, name, body


async def _begin_qualified(request: web.Request
                           ) -> tuple[ControlApi, str, str, str | None, bytes] | web.Response:
    """``_begin``, then the function the path names and its qualifier (None: $LATEST), which must be one
    of its published versions or aliases: the API, a request id, the name, the qualifier and the body."""
    api, request_id, body = await _begin(request)
    if isinstance(body, web.Response):
        return body
    found = api.function_ref(request, request_id)
    if isinstance(found, web.Response):
        return found
    name, qualifier = found
    if qualifier is not None and not await api.has_qualifier(name, qualifier):
        return _not_found(f"Function not found: {api.config.aws.function_arn(name)}:{qualifier}", request_id)
    return api, request_id, name, qualifier, body


def _body_json(body: bytes, request_id: str) -> dict[str, Any] | web.Response:
    try:
        data = json.loads(body or b"{}")
    except ValueError as exc:
        return aws_errors.bad_content(str(exc), request_id)
    if not isinstance(data, dict):
        return aws_errors.bad_content("expected a JSON object", request_id)
    return data


def _page(items: list[dict[str, Any]], request: web.Request, key: str, request_id: str) -> web.Response:
    """One page of ``items`` (``Marker``: the index to start at, ``MaxItems``: the page size)."""
    try:
        start = int(request.query.get("Marker", "0"))
        size = int(request.query.get("MaxItems", str(MAX_ITEMS)))
    except ValueError:
        return invalid("Marker and MaxItems must be whole numbers", request_id)
    if start < 0 or not 1 <= size <= 10000:
        return invalid("Marker must be 0 or more and MaxItems 1 to 10000", request_id)
    out: dict[str, Any] = {key: items[start:start + size]}
    if start + size < len(items):
        out["NextMarker"] = str(start + size)
    return _json(out, request_id)


# --- functions ------------------------------------------------------------------------------------------


async def list_functions(request: web.Request) -> web.Response:
    """Every function's $LATEST; with ``FunctionVersion=ALL`` each one's published versions after it."""
    api, rid, body = await _begin(request)
    if isinstance(body, web.Response):
        return body
    every = request.query.get("FunctionVersion")
    if every not in (None, "ALL"):
        return invalid(f"FunctionVersion: the only value is ALL, got {every!r}", rid)
    published = request.app.get(PUBLISHED) if every == "ALL" else None
    items: list[dict[str, Any]] = []
    for name in sorted(api.config.functions):
        items.append(api.function_configuration(name))
        if published is not None:
            items += await published(api, name)
    return _page(items, request, "Functions", rid)


async def get_function(request: web.Request) -> web.Response:
    qualified = _qualified(request)
    if qualified is not None:
        return await qualified(request, "GetFunction")
    begun = await _begin_function(request, "GetFunction")
    if isinstance(begun, web.Response):
        return begun
    api, rid, name, _body = begun
    out: dict[str, Any] = {"Configuration": api.function_configuration(name), "Tags": {}}
    reserved = api.controls.reserved(name)
    if reserved is not None:
        out["Concurrency"] = {"ReservedConcurrentExecutions": reserved}
    return _json(out, rid)


async def get_function_configuration(request: web.Request) -> web.Response:
    qualified = _qualified(request)
    if qualified is not None:
        return await qualified(request, "GetFunctionConfiguration")
    begun = await _begin_function(request, "GetFunctionConfiguration")
    if isinstance(begun, web.Response):
        return begun
    api, rid, name, _body = begun
    return _json(api.function_configuration(name), rid)


# --- concurrency ----------------------------------------------------------------------------------------


async def get_concurrency(request: web.Request) -> web.Response:
    begun = await _begin_function(request, "GetFunctionConcurrency")
    if isinstance(begun, web.Response):
        return begun
    api, rid, name, _body = begun
    reserved = api.controls.reserved(name)
    return _json({} if reserved is None else {"ReservedConcurrentExecutions": reserved}, rid)


async def put_concurrency(request: web.Request) -> web.Response:
    begun = await _begin_function(request, "PutFunctionConcurrency")
    if isinstance(begun, web.Response):
        return begun
    api, rid, name, body = begun
    data = _body_json(body, rid)
    if isinstance(data, web.Response):
        return data
    value = data.get("ReservedConcurrentExecutions")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return invalid(f"ReservedConcurrentExecutions: a whole number 0 or more is required, got {value!r}",
                       rid)
    try:
        await api.controls.set_reserved(name, value)
    except ControlError as exc:
        return invalid(str(exc), rid)
    return _json({"ReservedConcurrentExecutions": value}, rid)


async def delete_concurrency(request: web.Request) -> web.Response:
    begun = await _begin_function(request, "DeleteFunctionConcurrency")
    if isinstance(begun, web.Response):
        return begun
    api, rid, name, _body = begun
    await api.controls.set_reserved(name, None)  # back to the config's concurrency (if any)
    return web.Response(status=204, headers={"x-amzn-RequestId": rid})


# --- event invoke config --------------------------------------------------------------------------------


async def get_event_invoke_config(request: web.Request) -> web.Response:
    """The function's; a version's or alias's is its function's (the router keeps one a function)."""
    begun = await _begin_qualified(request)
    if isinstance(begun, web.Response):
        return begun
    api, rid, name, qualifier, _body = begun
    if not api.has_event_invoke_config(name):
        arn = api.config.aws.function_arn(name)
        return _not_found(f"The function {arn}:{qualifier or '$LATEST'} doesn't have an EventInvokeConfig "
                          f"(functions.{name}.async in the config sets one; so does "
                          "PutFunctionEventInvokeConfig)", rid)
    return _json(api.event_invoke_config(name, qualifier), rid)


async def put_event_invoke_config(request: web.Request) -> web.Response:
    """Replaces the run-time overrides, as Lambda's Put replaces the whole config: a field left out goes
    back to the config file's value. Destinations stay the config file's. One config a function: its
    versions and aliases run with it, so a Qualifier is refused."""
    begun = await _begin_function(
        request, "PutFunctionEventInvokeConfig", "Qualifier '{qualifier}': the router keeps one event invoke "
        "config a function, for $LATEST and every version and alias of it; put it on '{name}' unqualified")
    if isinstance(begun, web.Response):
        return begun
    api, rid, name, body = begun
    data = _body_json(body, rid)
    if isinstance(data, web.Response):
        return data
    if data.get("DestinationConfig"):
        return invalid(f"DestinationConfig: {OWNED}; set functions.{name}.async.on_success / on_failure "
                       "there", rid)
    retries = data.get("MaximumRetryAttempts")
    age = data.get("MaximumEventAgeInSeconds")
    lo, hi = LAMBDA_RETRIES
    if retries is not None and (not isinstance(retries, int) or not lo <= retries <= hi):
        return invalid(f"MaximumRetryAttempts: must be {lo} to {hi}, got {retries!r}", rid)
    lo, hi = LAMBDA_EVENT_AGE
    if age is not None and (not isinstance(age, int) or not lo <= age <= hi):
        return invalid(f"MaximumEventAgeInSeconds: must be {lo} to {hi}, got {age!r}", rid)
    await api.controls.set_invoke_config(name, retries=retries, max_age=None if age is None else float(age))
    return _json(api.event_invoke_config(name), rid)


# --- event source mappings ------------------------------------------------------------------------------


async def list_mappings(request: web.Request) -> web.Response:
    api, rid, body = await _begin(request)
    if isinstance(body, web.Response):
        return body
    routes = list(api.pollers.values())
    wanted_fn = request.query.get("FunctionName")
    if wanted_fn is not None:
        ref = parse_function_name(wanted_fn)
        if ref is None:
            return invalid(f"FunctionName: not a function name or ARN, got {wanted_fn!r}", rid)
        # A mapping runs one target: the function itself or one of its versions or aliases; the name
        # lists the mappings of exactly that target, as Lambda's does.
        wanted = (ref.name, ref.qualifier or "$LATEST")
        routes = [r for r in routes if _target(r.function) == wanted]
    items = [api.mapping(r) for r in routes]
    wanted_arn = request.query.get("EventSourceArn")
    if wanted_arn is not None:
        items = [m for m in items if m["EventSourceArn"] == wanted_arn]
    return _page(items, request, "EventSourceMappings", rid)


def _target(function: str) -> tuple[str, str]:
    """A route's ``function`` (``name`` or ``name:qualifier``) as (name, qualifier or $LATEST)."""
    name, _, qualifier = function.partition(":")
    return name, qualifier or "$LATEST"


def _route_of(api: ControlApi, request: web.Request, rid: str) -> RouteConfig | web.Response:
    key = request.match_info["UUID"]
    route = api.by_uuid.get(key)
    if route is None:
        return _not_found(f"The resource you requested does not exist. (Service: Lambda, event source "
                          f"mapping {key}; `aws lambda list-event-source-mappings` lists them)", rid)
    return route


async def get_mapping(request: web.Request) -> web.Response:
    api, rid, body = await _begin(request)
    if isinstance(body, web.Response):
        return body
    route = _route_of(api, request, rid)
    if isinstance(route, web.Response):
        return route
    return _json(api.mapping(route), rid)


async def update_mapping(request: web.Request) -> web.Response:
    """``Enabled`` pauses (false) or resumes (true) the route; other fields belong to the config file:
    sent with the values they have, they are accepted as no change, with others refused."""
    api, rid, body = await _begin(request)
    if isinstance(body, web.Response):
        return body
    route = _route_of(api, request, rid)
    if isinstance(route, web.Response):
        return route
    data = _body_json(body, rid)
    if isinstance(data, web.Response):
        return data
    fn = data.pop("FunctionName", None)
    if fn is not None:
        ref = parse_function_name(str(fn))
        if ref is None or (ref.name, ref.qualifier or "$LATEST") != _target(route.function):
            return invalid(f"FunctionName: route '{route.name}' runs function '{route.function}'; {OWNED} "
                           "(routes[].function)", rid)
    enabled = data.pop("Enabled", None)
    current = api.mapping(route)
    changed = sorted(k for k, v in data.items() if k not in current or current[k] != v)
    if changed:  # a field sent with the value it has already is no change (tools send the whole mapping)
        return invalid(f"{', '.join(changed)}: route '{route.name}': {OWNED}; change routes[].source "
                       "there (only Enabled changes at run time)", rid)
    if enabled is not None:
        if not isinstance(enabled, bool):
            return invalid(f"Enabled: true or false, got {enabled!r}", rid)
        await api.controls.set_route_enabled(route.name, enabled)
    return _json(api.mapping(route), rid, status=202)


# --- function URLs --------------------------------------------------------------------------------------


def _url_config(api: ControlApi, request: web.Request, name: str) -> dict[str, Any] | None:
    """The function's URL config in Lambda's shape (``FunctionUrl`` on this router), or None."""
    url = api.config.functions[name].url
    if url is None:
        return None
    when = datetime.fromtimestamp(api.started, UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    out: dict[str, Any] = {
        "FunctionUrl": function_url(f"{request.scheme}://{request.host}", name),
        "FunctionArn": api.config.aws.function_arn(name),
        "AuthType": url.auth,
        "CreationTime": when,
        "LastModifiedTime": when,
        "InvokeMode": url.invoke_mode,
    }
    if url.cors is not None:
        c = url.cors
        out["Cors"] = {"AllowCredentials": c.allow_credentials, "AllowHeaders": c.allow_headers,
                       "AllowMethods": c.allow_methods, "AllowOrigins": c.allow_origins,
                       "ExposeHeaders": c.expose_headers, "MaxAge": c.max_age}
    return out


async def get_function_url_config(request: web.Request) -> web.Response:
    begun = await _begin_qualified(request)
    if isinstance(begun, web.Response):
        return begun
    api, rid, name, qualifier, _body = begun
    if qualifier is not None:
        return _not_found(f"The resource you requested does not exist: a function URL of the router is on "
                          f"'{name}' itself ({name}:{qualifier} has none)", rid)
    out = _url_config(api, request, name)
    if out is None:
        return _not_found(f"The resource you requested does not exist: function '{name}' has no url in the "
                          "router's config", rid)
    return _json(out, rid)


async def list_function_url_configs(request: web.Request) -> web.Response:
    begun = await _begin_function(request, "ListFunctionUrlConfigs")
    if isinstance(begun, web.Response):
        return begun
    api, rid, name, _body = begun
    out = _url_config(api, request, name)
    return _page([] if out is None else [out], request, "FunctionUrlConfigs", rid)


CONTROL_API = web.AppKey("router_control_api", ControlApi)
QualifiedGet = Callable[[web.Request, str], Awaitable[web.Response]]
QUALIFIED: web.AppKey[QualifiedGet] = web.AppKey("router_qualified_get")
"""GetFunction / GetFunctionConfiguration of a version or alias (``router.http.versions_api``)."""
Published = Callable[[ControlApi, str], Awaitable[list[dict[str, Any]]]]
PUBLISHED: web.AppKey[Published] = web.AppKey("router_published_versions")
"""The FunctionConfigurations of a function's published versions (``router.http.versions_api``)."""


def _qualified(request: web.Request) -> QualifiedGet | None:
    """The handler of a request naming a version or alias, when the versions API is there."""
    qualifier = request.query.get("Qualifier")
    if qualifier in (None, "", "$LATEST"):
        ref = parse_function_name(request.match_info["FunctionName"])
        qualifier = None if ref is None else ref.qualifier
    if qualifier in (None, "$LATEST"):
        return None
    return request.app.get(QUALIFIED)


def add_control_routes(app: web.Application) -> None:
    """Lambda's control operations on ``app`` (with the Invoke API: ``server.invoke_api``)."""
    ctx = app[CTX]
    assert ctx.controls is not None, "the control API needs the router's Controls"
    app[CONTROL_API] = ControlApi(ctx, ctx.controls, time.time())
    r = app.router
    r.add_get("/2015-03-31/functions", list_functions)
    r.add_get("/2015-03-31/functions/", list_functions)
    r.add_get("/2015-03-31/functions" + _FN, get_function)
    r.add_get("/2015-03-31/functions" + _FN + "/configuration", get_function_configuration)
    r.add_put("/2017-10-31/functions" + _FN + "/concurrency", put_concurrency)
    r.add_delete("/2017-10-31/functions" + _FN + "/concurrency", delete_concurrency)
    r.add_get("/2019-09-30/functions" + _FN + "/concurrency", get_concurrency)
    r.add_get("/2019-09-25/functions" + _FN + "/event-invoke-config", get_event_invoke_config)
    r.add_put("/2019-09-25/functions" + _FN + "/event-invoke-config", put_event_invoke_config)
    r.add_get("/2021-10-31/functions" + _FN + "/url", get_function_url_config)
    r.add_get("/2021-10-31/functions" + _FN + "/urls", list_function_url_configs)
    r.add_get("/2015-03-31/event-source-mappings", list_mappings)
    r.add_get("/2015-03-31/event-source-mappings/", list_mappings)
    r.add_get("/2015-03-31/event-source-mappings/{UUID}", get_mapping)
    r.add_put("/2015-03-31/event-source-mappings/{UUID}", update_mapping)
