"""serverless.yml (Serverless Framework, provider aws) -> router config: ``functions`` with the
``provider`` defaults, their destinations and their ``events``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from router.config.problems import Loc
from router.importers import convert as c
from router.importers.intrinsics import Resolver, Unresolved
from router.importers.source import Notes, Template, TemplateError
from router.importers.variables import Variables

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MEMORY_DEFAULT, TIMEOUT_DEFAULT = 1024, 6  # the Serverless Framework's own defaults
_FUNCTION_KEYS = {"handler", "runtime", "memorySize", "timeout", "environment", "layers",
                  "reservedConcurrency", "provisionedConcurrency",
                  "maximumRetryAttempts", "maximumEventAge", "destinations", "events", "description", "name",
                  "image", "package", "snapStart", "onError"}
_FUNCTION_IGNORED = {"role", "iamRoleStatements", "architecture", "tags", "tracing", "vpc", "kmsKeyArn",
                     "layersTarget", "url", "logRetentionInDays",
                     "ephemeralStorage"}
_STREAM = {"batchSize": "batch_size", "startingPosition": "starting_position",
           "startingPositionTimestamp": "starting_position_timestamp", "batchWindow": "batch_window",
           "maximumBatchingWindow": "batch_window", "parallelizationFactor": "parallelization",
           "bisectBatchOnFunctionError": "bisect_on_error", "maximumRetryAttempts": "max_retry_attempts",
           "maximumRecordAgeInSeconds": "max_record_age", "tumblingWindowInSeconds": "tumbling_window"}


class _Context:
    """What every function and event needs: the variables, the CloudFormation resolver, the notes."""

    def __init__(self, template: Template, notes: Notes) -> None:
        self.template, self.notes = template, notes
        self.variables = Variables(template.data)
        functions = template.data.get("functions") or {}
        # The CloudFormation logical id of each function, as the framework names it
        # (hello -> HelloLambdaFunction).
        names = {_logical_id(k): k for k in functions}
        resources = ((template.data.get("resources") or {}).get("Resources")) or {}
        resources = {**resources, **{lid: {"Type": "AWS::Lambda::Function"} for lid in names}}
        self.cfn = Resolver({"Resources": resources}, str(template.data.get("service", "service")),
                            self.variables.region(), "000000000000", names)
        self.functions = {**{k: k for k in functions}, **names}

    def value(self, raw: Any, loc: Loc, what: str) -> Any:
        """``raw`` with variables and intrinsics resolved, or None (listed) when it cannot be."""
        try:
            return self.cfn.resolve(self.variables.resolve(raw))
        except Unresolved as exc:
            self.notes.add(loc, f"{what}: not imported: {exc}")
            return None


def _logical_id(name: str) -> str:
    normal = name[:1].upper() + name[1:]
    return normal.replace("-", "Dash").replace("_", "Underscore") + "LambdaFunction"


def convert(template: Template, out_dir: Path, notes: Notes) -> dict[str, Any]:
    data = template.data
    if "functions" not in data and "provider" not in data:
        raise TemplateError(f"{template.path}: not a serverless.yml (no provider, no functions); for a SAM "
                            "template use `router import sam`")
    ctx = _Context(template, notes)
    provider = data.get("provider") or {}
    provider_name = provider if isinstance(provider, str) else provider.get("name", "aws")
    if provider_name != "aws":
        raise TemplateError(f"{template.path}: provider {provider_name!r}: only provider aws (Lambda) can be "
                            "imported")
    if data.get("plugins"):
        notes.add(("plugins",), "plugins: not run; what they add (constructs, bundling, requirements) is not "
                                "imported")
    if data.get("constructs"):
        notes.add(("constructs",), "constructs (serverless-lift): not imported")
    functions: dict[str, Any] = {}
    routes: list[dict[str, Any]] = []
    for name, raw in (data.get("functions") or {}).items():
        loc: Loc = ("functions", name)
        if not isinstance(raw, dict) or not _NAME.match(name):
            notes.add(loc, f"functions.{name}: not a function the router can name (1-64 of A-Z a-z 0-9 _ -); "
                           "left out")
            continue
        fn = _function(ctx, name, raw, provider, loc, out_dir)
        if fn is None:
            continue
        functions[name] = fn
        for i, event in enumerate(raw.get("events") or []):
            route = _route(ctx, name, i, event, (*loc, "events", i))
            if route is not None:
                c.add_route(routes, route, notes, (*loc, "events", i))
    return {"version": 1, "functions": functions, "routes": routes}


def _function(ctx: _Context, name: str, raw: dict[str, Any], provider: dict[str, Any], loc: Loc,
              out_dir: Path) -> dict[str, Any] | None:
    notes = ctx.notes
    c.unknown_keys(raw, _FUNCTION_KEYS, _FUNCTION_IGNORED, notes, loc, f"functions.{name}")
    if "image" in raw:
        notes.add((*loc, "image"), f"functions.{name}: container image functions are not supported; left out")
        return None
    where = (*loc, "runtime") if "runtime" in raw else ("provider", "runtime")
    runtime = c.runtime(ctx.value(raw.get("runtime", provider.get("runtime")), where, "runtime"), notes,
                        where)
    if runtime is None:
        return None
    if (raw.get("package") or {}).get("artifact"):
        notes.add((*loc, "package"), f"functions.{name}: package.artifact (a built zip): unzip it and point "
                                     "code at it; code set to the service directory")
    import os

    code = os.path.relpath(ctx.template.path.parent.resolve(), out_dir.resolve())
    fn: dict[str, Any] = {"runtime": runtime, "handler": ctx.value(raw.get("handler"), (*loc, "handler"),
                                                                     "handler"), "code": code}
    if not fn["handler"]:
        del fn["handler"]
    if raw.get("description"):
        fn["description"] = str(ctx.value(raw["description"], (*loc, "description"), "description") or "")
    for key, target, default in (("memorySize", "memory", MEMORY_DEFAULT),
                                 ("timeout", "timeout", TIMEOUT_DEFAULT)):
        chosen_loc = (*loc, key) if key in raw else ("provider", key)
        value = ctx.value(raw.get(key, provider.get(key, default)), chosen_loc, key)
        fn[target] = int(value) if value is not None else default
    env_raw = {**(provider.get("environment") or {}), **(raw.get("environment") or {})}
    env: dict[str, str] = {}
    for var, value in env_raw.items():
        where = (*loc, "environment", var) if var in (raw.get("environment") or {}) else \
            ("provider", "environment", var)
        resolved = ctx.value(value, where, f"{name} environment {var}")
        if resolved is not None:
            env[var] = str(resolved).lower() if isinstance(resolved, bool) else str(resolved)
    if env:
        fn["environment"] = env
    layers = raw.get("layers", provider.get("layers"))
    if layers:
        local: list[str] = []
        other: list[str] = []
        for layer in layers if isinstance(layers, list) else []:
            path, label = _layer(ctx, layer, out_dir)
            (local if path is not None else other).append(path or label)
        if local:
            fn["layers"] = local
        if other:
            notes.add((*loc, "layers") if "layers" in raw else ("provider", "layers"),
                      f"functions.{name}: layers: {', '.join(other)}: not a layer of this service; put "
                      "the layer's content in a directory and list it under layers:")
    if raw.get("reservedConcurrency") is not None:
        value = ctx.value(raw["reservedConcurrency"], (*loc, "reservedConcurrency"), "reservedConcurrency")
        if value:
            fn["concurrency"] = int(value)
    if raw.get("provisionedConcurrency"):
        value = ctx.value(raw["provisionedConcurrency"], (*loc, "provisionedConcurrency"),
                          "provisionedConcurrency")
        if value:
            fn["provisioned"] = int(value)
    async_: dict[str, Any] = {}
    if raw.get("maximumRetryAttempts") is not None:
        async_["retries"] = int(raw["maximumRetryAttempts"])
    if raw.get("maximumEventAge") is not None:
        async_["max_event_age"] = int(raw["maximumEventAge"])
    for key, target in (("onSuccess", "on_success"), ("onFailure", "on_failure")):
        entry = (raw.get("destinations") or {}).get(key)
        if entry is None:
            continue
        dloc = (*loc, "destinations", key)
        kind = ""
        if isinstance(entry, dict):
            dloc = (*dloc, "arn") if "arn" in entry else dloc
            kind, entry = str(entry.get("type", "")), entry.get("arn")
        resolved = ctx.value(entry, dloc, f"{name} {key}")
        if resolved is None:
            continue
        if not kind and str(resolved) in ctx.functions:
            kind = "lambda"  # a plain function name of this service
        dest = c.destination(resolved, kind, ctx.functions, notes, dloc, f"{name} {key}")
        if dest is not None:
            async_[target] = dest
    if raw.get("onError") is not None:  # the function's DeadLetterConfig target (an SNS or SQS ARN)
        resolved = ctx.value(raw["onError"], (*loc, "onError"), f"{name} onError")
        dead = None if resolved is None else c.dead_letter(resolved, "", notes, (*loc, "onError"),
                                                           f"{name} onError")
        if dead is not None:
            async_["dead_letter"] = dead
    if async_:
        fn["async"] = async_
    return fn


def _layer(ctx: _Context, layer: Any, out_dir: Path) -> tuple[str | None, str]:
    """A layer: (its local path relative to the output when it is a layer of this service, ``{Ref:
    CommonLambdaLayer}`` for ``layers.common``, or None; how to name it otherwise: an ARN as written)."""
    import os

    ref = layer.get("Ref") if isinstance(layer, dict) else None
    if isinstance(ref, str) and ref.endswith("LambdaLayer"):
        for key, spec in (ctx.template.data.get("layers") or {}).items():
            layer_id = _logical_id(key).removesuffix("LambdaFunction") + "LambdaLayer"
            if layer_id == ref and isinstance(spec, dict):
                path = (ctx.template.path.parent / str(spec.get("path", "."))).resolve()
                return os.path.relpath(path, out_dir.resolve()), ref
    return None, str(ref or layer)


def _route(ctx: _Context, function: str, index: int, event: Any, loc: Loc) -> dict[str, Any] | None:
    notes = ctx.notes
    if not isinstance(event, dict) or len(event) != 1:
        notes.add(loc, f"functions.{function}.events[{index}]: expected one event type (httpApi, http, "
                       "schedule, sqs, stream, rabbitmq); left out")
        return None
    (kind, raw), = event.items()
    what = f"{function} event {index} ({kind})"
    props = ctx.value(raw, (*loc, kind), what)
    if props is None:
        return None
    route: dict[str, Any] = {"name": c.route_name(function, kind, str(index)), "function": function}
    options = props if isinstance(props, dict) else {}
    if options.get("enabled") is False:
        notes.add(loc, f"{what}: disabled (enabled: false); route left out")
        return None
    if kind in ("httpApi", "http"):
        if props == "*":
            method, path = "ANY", "/{proxy+}"
            notes.add(loc, f"{what}: the catch-all '*' is written as ANY /{{proxy+}} (it does not match /)")
        elif isinstance(props, str):
            method, _, path = props.strip().partition(" ")
        else:
            method, path = str(options.get("method", "ANY")), str(options.get("path", "/"))
        for key in ("authorizer", "private"):
            if options.get(key):
                notes.add((*loc, kind, key), f"{what}.{key}: not imported; use the route's auth (hmac, "
                                             "bearer, api_key)")
        route["source"] = c.webhook_source(path.strip(), method.strip())
        if kind == "http":
            route["source"]["payload"] = "v1"  # the REST API proxy event
        return route
    if kind == "schedule":
        rates = options.get("rate", props) if isinstance(props, dict) else props
        rates = rates if isinstance(rates, list) else [rates]
        if len(rates) > 1:
            notes.add((*loc, kind), f"{what}: only the first of {len(rates)} rates is imported")
        source = c.schedule_source(rates[0], options.get("timezone"), notes, (*loc, kind))
        if source is None:
            return None
        route["source"] = source
        if "input" in options:
            route["input"] = options["input"]
        return route
    if kind == "sqs":
        arn = options.get("arn", props) if isinstance(props, dict) else props
        source = {"type": "sqs", "queue_url": c.queue_url(arn, notes, (*loc, kind), what)}
        for key, target in (("batchSize", "batch_size"), ("maximumBatchingWindow", "batch_window"),
                            ("maximumConcurrency", "max_concurrency")):
            if options.get(key) is not None:
                source[target] = options[key]
        if options.get("functionResponseType") == "ReportBatchItemFailures":
            source["report_batch_item_failures"] = True
        route["source"] = source
    elif kind == "stream":
        arn = options.get("arn", props) if isinstance(props, dict) else props
        stream_type = str(options.get("type") or ("dynamodb" if ":dynamodb:" in str(arn) else "kinesis"))
        router_type = "dynamodb_stream" if stream_type == "dynamodb" else "kinesis"
        source = {"type": router_type,
                  "stream_arn": c.stream_arn(arn, f"{stream_type} stream", notes, (*loc, kind), what)}
        for key, target in _STREAM.items():
            if options.get(key) is not None:
                source[target] = options[key]
        if options.get("functionResponseType") == "ReportBatchItemFailures":
            source["report_batch_item_failures"] = True
        on_failure = (options.get("destinations") or {}).get("onFailure")
        if on_failure is not None:
            failure_arn = on_failure.get("arn") if isinstance(on_failure, dict) else on_failure
            kind_of = str(on_failure.get("type", "")) if isinstance(on_failure, dict) else ""
            dest = c.destination(failure_arn, kind_of, ctx.functions, notes, (*loc, kind, "destinations"),
                                 f"{what} onFailure")
            if dest is not None:
                source["on_failure"] = dest
        route["source"] = source
    elif kind in ("rabbitmq", "activemq"):
        if kind == "activemq":
            notes.add(loc, f"{what}: ActiveMQ speaks AMQP 1.0 / OpenWire; the router's amqp source speaks "
                           "AMQP 0-9-1 (RabbitMQ): point it at a RabbitMQ queue")
        broker = c.broker_name(str(options.get("arn", "")))
        source = {"type": "amqp", "url": c.amqp_url(broker, notes, (*loc, kind, "arn"), what),
                  "queue": str(options.get("queue", "queue")), "declare": False}
        for key, target in (("batchSize", "batch_size"), ("maximumBatchingWindow", "batch_window")):
            if options.get(key) is not None:
                source[target] = options[key]
        if "batch_size" in source:
            source["prefetch"] = max(int(source["batch_size"]), 10)
        route["source"] = source
    else:
        notes.add(loc, f"{what}: {kind} events are not supported by the router (webhook, schedule, sqs, "
                       "kinesis, dynamodb_stream, amqp); route left out")
        return None
    if options.get("filterPatterns"):
        route["filters"] = [p for p in options["filterPatterns"] if isinstance(p, dict)]
    return route
