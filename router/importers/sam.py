"""AWS SAM template -> router config: ``AWS::Serverless::Function`` (and ``AWS::Lambda::Function``)
resources with ``Globals.Function`` applied, their ``EventInvokeConfig`` and their ``Events``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from router.config.problems import Loc
from router.importers import convert as c
from router.importers.intrinsics import FUNCTION_TYPES, Resolver, try_resolve
from router.importers.source import Notes, Template, TemplateError

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FUNCTION_KEYS = {
    "Runtime", "Handler", "CodeUri", "Code", "InlineCode", "MemorySize", "Timeout", "Environment", "Layers",
    "ReservedConcurrentExecutions", "EventInvokeConfig", "Events", "FunctionName", "Description",
    "PackageType", "SnapStart", "ProvisionedConcurrencyConfig", "DeadLetterQueue", "DeadLetterConfig",
}
_FUNCTION_IGNORED = {
    "Policies", "Role", "Architectures", "Tags", "PermissionsBoundary", "KmsKeyArn", "CodeSigningConfigArn",
    "AssumeRolePolicyDocument", "PropagateTags", "RolePath", "EphemeralStorage", "VpcConfig", "Tracing",
}
_API_KEYS = {"Path", "Method", "RestApiId", "ApiId", "PayloadFormatVersion", "TimeoutInMillis"}
_SQS_KEYS = {"Queue", "BatchSize", "MaximumBatchingWindowInSeconds", "FunctionResponseTypes", "Enabled",
             "ScalingConfig", "FilterCriteria"}
_STREAM_KEYS = {"Stream", "StartingPosition", "StartingPositionTimestamp", "BatchSize",
                "MaximumBatchingWindowInSeconds", "ParallelizationFactor", "BisectBatchOnFunctionError",
                "MaximumRetryAttempts", "MaximumRecordAgeInSeconds", "FunctionResponseTypes",
                "DestinationConfig", "Enabled", "FilterCriteria", "TumblingWindowInSeconds"}
_MQ_KEYS = {"Broker", "Queues", "BatchSize", "MaximumBatchingWindowInSeconds", "Enabled", "FilterCriteria",
            "SourceAccessConfigurations", "SecretsManagerKmsKeyId"}
_EVENT_TYPES = {"Api", "HttpApi", "Schedule", "ScheduleV2", "SQS", "Kinesis", "DynamoDB", "MQ"}
_SCHEDULE_KEYS = {"Schedule", "ScheduleExpression", "ScheduleExpressionTimezone", "Input", "Enabled",
                  "State", "Name", "Description"}


def is_sam(data: dict[str, Any]) -> bool:
    transform = data.get("Transform")
    transforms = transform if isinstance(transform, list) else [transform]
    return "AWS::Serverless-2016-10-31" in transforms or isinstance(data.get("Resources"), dict)


def convert(template: Template, out_dir: Path, notes: Notes) -> dict[str, Any]:
    """The router config for ``template``; what it cannot carry over goes to ``notes``."""
    data = template.data
    if not is_sam(data):
        raise TemplateError(f"{template.path}: not a SAM or CloudFormation template (no Resources); "
                            "for a serverless.yml use `router import serverless`")
    resources = data.get("Resources") or {}
    functions = {k: v for k, v in resources.items()
                 if isinstance(v, dict) and v.get("Type") in FUNCTION_TYPES}
    for logical, res in resources.items():
        type_ = str(res.get("Type", "")) if isinstance(res, dict) else ""
        if type_ not in FUNCTION_TYPES and type_.startswith(("AWS::Serverless::",
                                                             "AWS::Lambda::EventSourceMapping")):
            notes.add(("Resources", logical), f"Resources.{logical} ({res.get('Type')}): not imported")
    names = {logical: _function_name(res, logical) for logical, res in functions.items()}
    resolver = Resolver(data, template.path.stem, "us-east-1", "000000000000", names)
    for key in ("Conditions", "Mappings"):
        if key in data:
            notes.add((key,), f"{key}: not evaluated; values behind Fn::If / Fn::FindInMap are left out")
    globals_ = (data.get("Globals") or {}).get("Function") or {}
    lookup = {**{n: n for n in names.values()}, **names}
    out_functions: dict[str, Any] = {}
    routes: list[dict[str, Any]] = []
    for logical, res in functions.items():
        loc: Loc = ("Resources", logical, "Properties")
        props = _merge(globals_, res.get("Properties") or {})
        template.aliases[loc] = ("Globals", "Function")  # a note on a global setting names its line
        fn = _function(template, props, loc, resolver, out_dir, lookup, notes)
        if fn is None:
            continue
        out_functions[names[logical]] = fn
        for event_id, event in (props.get("Events") or {}).items():
            route = _route(event, (*loc, "Events", event_id), names[logical], event_id, resolver, lookup,
                           notes)
            if route is not None:
                c.add_route(routes, route, notes, (*loc, "Events", event_id))
    dropped = set(names.values()) - set(out_functions)
    _drop_references(out_functions, routes, dropped, notes)
    return {"version": 1, "functions": out_functions, "routes": routes}


def _function_name(res: dict[str, Any], logical: str) -> str:
    name = (res.get("Properties") or {}).get("FunctionName")
    return name if isinstance(name, str) and _NAME.match(name) else logical


def _merge(globals_: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
    """SAM's Globals rules: the function's scalars win, mappings merge, lists are the global's then the
    function's."""
    out = dict(globals_)
    for key, value in props.items():
        base = out.get(key)
        if isinstance(base, dict) and isinstance(value, dict) and not any(k.startswith("Fn::") or k == "Ref"
                                                                          for k in value):
            out[key] = _merge(base, value)
        elif isinstance(base, list) and isinstance(value, list):
            out[key] = base + value
        else:
            out[key] = value
    return out


def _function(template: Template, props: dict[str, Any], loc: Loc, resolver: Resolver, out_dir: Path,
              functions: dict[str, str], notes: Notes) -> dict[str, Any] | None:
    name = loc[1]
    c.unknown_keys(props, _FUNCTION_KEYS, _FUNCTION_IGNORED, notes, loc, f"{name}")
    if props.get("PackageType") == "Image":
        notes.add((*loc, "PackageType"), f"{name}: container image functions are not supported; left out")
        return None
    if "InlineCode" in props:
        notes.add((*loc, "InlineCode"), f"{name}: InlineCode: write the code to a file and set code; "
                                        "function left out")
        return None
    runtime = c.runtime(try_resolve(resolver, props.get("Runtime"), notes, (*loc, "Runtime"), "Runtime"),
                        notes, (*loc, "Runtime"))
    if runtime is None:
        return None
    code = try_resolve(resolver, props.get("CodeUri", props.get("Code")), notes, (*loc, "CodeUri"), "CodeUri")
    if not isinstance(code, str) or code.startswith("s3://"):
        notes.add((*loc, "CodeUri"), f"{name}: CodeUri is not a local path (S3 or missing); code set to the "
                                     "template's directory: point it at the function's code")
        code = "."
    code_path = (template.path.parent / code).resolve()
    if code_path.is_file():
        code_path = code_path.parent
    fn: dict[str, Any] = {"runtime": runtime, "handler": str(props.get("Handler") or ""),
                          "code": _relative(code_path, out_dir)}
    if not fn["handler"]:
        del fn["handler"]
    for key, target in (("MemorySize", "memory"), ("Timeout", "timeout"),
                        ("ReservedConcurrentExecutions", "concurrency"), ("Description", "description")):
        if key in props:
            value = try_resolve(resolver, props[key], notes, (*loc, key), key)
            if value is not None:
                fn[target] = value if target == "description" else int(value)
    provisioned = (props.get("ProvisionedConcurrencyConfig") or {}).get("ProvisionedConcurrentExecutions")
    if provisioned is not None:
        value = try_resolve(resolver, provisioned, notes, (*loc, "ProvisionedConcurrencyConfig"),
                            "ProvisionedConcurrencyConfig")
        if value is not None:
            fn["provisioned"] = int(value)  # environments kept warm (Lambda: on the published alias)
    if fn.get("concurrency") == 0:
        notes.add((*loc, "ReservedConcurrentExecutions"), f"{name}: reserved concurrency 0 (throttled) "
                                                          "cannot be written; left out")
        del fn["concurrency"]
    variables = ((props.get("Environment") or {}).get("Variables")) or {}
    env: dict[str, str] = {}
    for var, value in variables.items():
        resolved = try_resolve(resolver, value, notes, (*loc, "Environment", "Variables", var),
                               f"{name} environment {var}")
        if resolved is not None:
            env[var] = str(resolved).lower() if isinstance(resolved, bool) else str(resolved)
    if env:
        fn["environment"] = env
    if props.get("Layers"):
        local: list[str] = []
        other: list[str] = []
        for layer in props["Layers"]:
            path, label = _layer(template, layer, out_dir)
            (local if path is not None else other).append(path or label)
        if local:
            fn["layers"] = local
        if other:
            notes.add((*loc, "Layers"), f"{name}: Layers: {', '.join(other)}: not a directory of this "
                                        "template; put the layer's content in a directory and list it "
                                        "under layers:")
    snap = props.get("SnapStart")
    if isinstance(snap, dict) and snap.get("ApplyOn") == "PublishedVersions":
        if runtime.startswith("python"):
            fn["snap_start"] = True
        else:
            notes.add((*loc, "SnapStart"), f"{name}: SnapStart is python-only in the router; left out")
    invoke = props.get("EventInvokeConfig")
    if isinstance(invoke, dict):
        fn_async = _async(invoke, (*loc, "EventInvokeConfig"), resolver, functions, notes)
        if fn_async:
            fn["async"] = fn_async
    for key in ("DeadLetterQueue", "DeadLetterConfig"):  # SAM's, and AWS::Lambda::Function's
        dlq = props.get(key)
        if isinstance(dlq, dict) and dlq.get("TargetArn") is not None:
            at = (*loc, key, "TargetArn")
            target = try_resolve(resolver, dlq["TargetArn"], notes, at, f"{name} {key}")
            dead = None if target is None else c.dead_letter(target, str(dlq.get("Type", "")), notes, at,
                                                             f"{name} {key}")
            if dead is not None:
                fn.setdefault("async", {})["dead_letter"] = dead
    return fn


def _layer(template: Template, layer: Any, out_dir: Path) -> tuple[str | None, str]:
    """A layer: (the local directory of a LayerVersion of the template, relative to the output, or None;
    how to name it otherwise: its ARN or reference as written)."""
    if isinstance(layer, dict) and isinstance(layer.get("Ref"), str):
        resource = (template.data.get("Resources") or {}).get(layer["Ref"]) or {}
        props = resource.get("Properties") or {} if isinstance(resource, dict) else {}
        content = props.get("ContentUri", props.get("Content"))
        if isinstance(content, str) and not content.startswith("s3://"):
            return _relative((template.path.parent / content).resolve(), out_dir), layer["Ref"]
        return None, f"{layer['Ref']} (not a local directory)"
    return None, str(layer)


def _relative(path: Path, out_dir: Path) -> str:
    import os

    rel = os.path.relpath(path, out_dir.resolve())
    return rel if rel != "." else "."


def _async(invoke: dict[str, Any], loc: Loc, resolver: Resolver, functions: dict[str, str],
           notes: Notes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "MaximumRetryAttempts" in invoke:
        out["retries"] = int(resolver.resolve(invoke["MaximumRetryAttempts"]))
    if "MaximumEventAgeInSeconds" in invoke:
        out["max_event_age"] = int(resolver.resolve(invoke["MaximumEventAgeInSeconds"]))
    config = invoke.get("DestinationConfig") or {}
    for key, target in (("OnSuccess", "on_success"), ("OnFailure", "on_failure")):
        entry = config.get(key)
        if not isinstance(entry, dict):
            continue
        where = (*loc, "DestinationConfig", key)
        dest_value = None
        if entry.get("Destination") is not None:
            dest_value = try_resolve(resolver, entry["Destination"], notes, (*where, "Destination"),
                                     f"{loc[1]} {key}")
            if dest_value is None:
                continue
        at = (*where, "Destination") if "Destination" in entry else where
        dest = c.destination(dest_value, str(entry.get("Type", "")), functions, notes, at, f"{loc[1]} {key}")
        if dest is not None:
            out[target] = dest
    return out


def _route(event: Any, loc: Loc, function: str, event_id: str, resolver: Resolver,
           functions: dict[str, str], notes: Notes) -> dict[str, Any] | None:
    if not isinstance(event, dict):
        return None
    kind = str(event.get("Type", ""))
    if kind not in _EVENT_TYPES:
        notes.add(loc, f"{function} event {event_id}: {kind or 'this'} events are not supported by the "
                       "router (webhook, schedule, sqs, kinesis, dynamodb_stream, amqp); route left out")
        return None
    props = try_resolve(resolver, event.get("Properties") or {}, notes, (*loc, "Properties"), event_id)
    if props is None:
        return None
    where: Loc = (*loc, "Properties")
    what = f"{function} event {event_id} ({kind})"
    route: dict[str, Any] = {"name": c.route_name(function, event_id), "function": function}
    if props.get("Enabled") is False or props.get("State") == "DISABLED":
        notes.add(loc, f"{what}: disabled in the template; route left out")
        return None
    if kind in ("Api", "HttpApi"):
        c.unknown_keys(props, _API_KEYS, {"Auth", "RequestParameters", "RequestModel", "RouteSettings"},
                       notes, where, what)
        for key in ("Auth", "RequestModel"):
            if key in props:
                notes.add((*where, key), f"{what}.{key}: API Gateway authorizers and models are not "
                                         "imported; use the route's auth (hmac, bearer, api_key)")
        if kind == "HttpApi" and "Path" not in props:
            route["source"] = c.webhook_source("/{proxy+}", "ANY")
            notes.add(loc, f"{what}: the catch-all $default route is written as ANY /{{proxy+}} (it does "
                           "not match /)")
        else:
            route["source"] = c.webhook_source(props.get("Path"), props.get("Method"))
        if kind == "Api":
            route["source"]["payload"] = "v1"  # the REST API proxy event
        elif str(props.get("PayloadFormatVersion", "2.0")) == "1.0":
            route["source"]["payload"] = "v1"
            notes.add(loc, f"{what}: HTTP API payload 1.0 is written as payload: v1, the REST API proxy "
                           "event it follows (requestContext differs in a few fields)")
        return route
    if kind in ("Schedule", "ScheduleV2"):
        c.unknown_keys(props, _SCHEDULE_KEYS, set(), notes, where, what)
        source = c.schedule_source(props.get("Schedule", props.get("ScheduleExpression")),
                                   props.get("ScheduleExpressionTimezone"), notes, where)
        if source is None:
            return None
        route["source"] = source
        if "Input" in props:
            try:
                route["input"] = json.loads(str(props["Input"]))
            except ValueError:
                route["input"] = props["Input"]
        return route
    if kind == "SQS":
        c.unknown_keys(props, _SQS_KEYS, set(), notes, where, what)
        source = {"type": "sqs", "queue_url": c.queue_url(props.get("Queue"), notes, (*where, "Queue"), what)}
        _copy(props, source, {"BatchSize": "batch_size", "MaximumBatchingWindowInSeconds": "batch_window"})
        if "ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []):
            source["report_batch_item_failures"] = True
        concurrency = (props.get("ScalingConfig") or {}).get("MaximumConcurrency")
        if concurrency is not None:
            source["max_concurrency"] = int(concurrency)
        route["source"] = source
    elif kind in ("Kinesis", "DynamoDB"):
        c.unknown_keys(props, _STREAM_KEYS, set(), notes, where, what)
        stream_kind = "kinesis" if kind == "Kinesis" else "dynamodb_stream"
        source = {"type": stream_kind, "stream_arn": c.stream_arn(props.get("Stream"), kind + " stream",
                                                                  notes, (*where, "Stream"), what)}
        _copy(props, source, {
            "StartingPosition": "starting_position",
            "StartingPositionTimestamp": "starting_position_timestamp",
            "BatchSize": "batch_size", "MaximumBatchingWindowInSeconds": "batch_window",
            "ParallelizationFactor": "parallelization", "BisectBatchOnFunctionError": "bisect_on_error",
            "MaximumRetryAttempts": "max_retry_attempts", "MaximumRecordAgeInSeconds": "max_record_age",
            "TumblingWindowInSeconds": "tumbling_window"})
        if "ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []):
            source["report_batch_item_failures"] = True
        on_failure = ((props.get("DestinationConfig") or {}).get("OnFailure")) or None
        if isinstance(on_failure, dict):
            target = on_failure.get("Destination")
            kind_of = str(on_failure.get("Type", ""))
            at = (*where, "DestinationConfig", "OnFailure")
            at = (*at, "Destination") if "Destination" in on_failure else at
            dest = c.destination(target, kind_of, functions, notes, at, f"{what} OnFailure")
            if dest is not None:
                source["on_failure"] = dest
        route["source"] = source
    elif kind == "MQ":
        c.unknown_keys(props, _MQ_KEYS, set(), notes, where, what)
        queues = props.get("Queues") or []
        broker = props.get("Broker")
        broker_name = getattr(broker, "logical", "") or c.broker_name(str(broker))
        source = {"type": "amqp", "url": c.amqp_url(broker_name, notes, (*where, "Broker"), what),
                  "queue": str(queues[0]) if queues else "queue", "declare": False}
        if len(queues) > 1:
            notes.add((*where, "Queues"), f"{what}: only the first queue is imported")
        _copy(props, source, {"BatchSize": "batch_size", "MaximumBatchingWindowInSeconds": "batch_window"})
        if "batch_size" in source:
            source["prefetch"] = max(int(source["batch_size"]), 10)
        route["source"] = source
    else:  # pragma: no cover - _EVENT_TYPES lists the kinds handled above
        return None
    if props.get("FilterCriteria"):
        route["filters"] = c.filters(props["FilterCriteria"], notes, (*where, "FilterCriteria"))
    return route


def _copy(props: dict[str, Any], source: dict[str, Any], names: dict[str, str]) -> None:
    for key, target in names.items():
        if key in props and props[key] is not None:
            source[target] = props[key]


def _drop_references(functions: dict[str, Any], routes: list[dict[str, Any]], dropped: set[str],
                     notes: Notes) -> None:
    """Routes and destinations naming a function that was left out go too (they would not validate)."""
    if not dropped:
        return
    routes[:] = [r for r in routes if r["function"] not in dropped]
    for fn in functions.values():
        for key in ("on_success", "on_failure"):
            dest = (fn.get("async") or {}).get(key)
            if dest and dest.get("type") == "function" and dest["function"] in dropped:
                notes.add(("Resources", dest["function"]), f"{key} destination to {dest['function']} "
                          "left out: that function was not imported")
                del fn["async"][key]
