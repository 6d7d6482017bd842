"""Checks across the config that one model cannot make alone: names that refer to other entries,
duplicates, cron expressions, time zones, code directories, event filter patterns, and the ``node``
that a ``nodejsNN.x`` runtime needs (on the router's PATH, of the runtime's major version).

They read the parsed data (not the validated models) so that they run, and report, even when model
validation found other problems; each check skips values of the wrong type (validation reports those).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from router.config.cron import CronError, cron_trigger, zone
from router.config.models import ServerConfig
from router.config.node import MIN_MAJOR, find_node, runtime_major
from router.config.problems import Loc, Problem, format_loc, suggestion
from router.config.units import parse_size
from router.config.yaml_source import Document
from router.filters import check_filters

_UNFILTERED_SOURCES = ("webhook", "schedule")
"""Lambda filters only event source mappings; a webhook or schedule event is taken or refused whole."""
_PATH_PARAM = re.compile(r"\{[^}]*\}")


def cross_check(doc: Document, config_dir: Path) -> list[Problem]:
    """Every cross-reference problem in ``doc``."""
    data = doc.data
    functions = data.get("functions")
    names = [n for n in functions if isinstance(n, str)] if isinstance(functions, dict) else []
    routes = data.get("routes")
    routes = routes if isinstance(routes, list) else []
    problems: list[Problem] = []
    problems += _function_refs(doc, names, functions if isinstance(functions, dict) else {}, routes)
    problems += _route_names(doc, routes)
    problems += _webhook_paths(doc, routes)
    problems += _schedules(doc, routes)
    problems += _filters(doc, routes)
    problems += _ports(doc)
    problems += _open_invoke_api(doc)
    problems += _iam_urls_without_keys(doc, functions if isinstance(functions, dict) else {})
    if isinstance(functions, dict):
        problems += _code_dirs(doc, functions, config_dir)
        problems += _layer_dirs(doc, functions, config_dir)
        problems += _node_runtimes(doc, functions)
        problems += _memory_budget(doc, functions)
    return problems


def show(doc: Document, loc: Loc, value: Any) -> str:
    """``repr(value)``, or ``value from ${VAR}`` when it came from the environment."""
    origin = doc.origins.get(loc)
    return origin.describe() if origin is not None else repr(value)


def _unknown_function(doc: Document, loc: Loc, name: str, names: list[str]) -> Problem:
    hidden = loc in doc.origins
    hint = "" if hidden else suggestion(name, names, "functions")
    if not names:
        hint = "; no functions are defined under 'functions'"
    return Problem(doc.position(loc), format_loc(loc), f"unknown function {show(doc, loc, name)}{hint}")


def _qualified_ref(doc: Document, loc: Loc, value: str, names: list[str],
                   functions: dict[str, Any]) -> list[Problem]:
    """``name:qualifier`` in a route: a known function, and ``$LATEST``, a version number or one of its
    aliases (whether a version number was published is known only once the router runs)."""
    name, _, qualifier = value.partition(":")
    if name not in names:
        return [_unknown_function(doc, loc, name, names)]
    if qualifier == "$LATEST" or (qualifier.isdigit() and int(qualifier) >= 1):
        return []
    fn = functions.get(name)
    aliases = fn.get("aliases") if isinstance(fn, dict) else None
    known = [a for a in aliases if isinstance(a, str)] if isinstance(aliases, dict) else []
    if qualifier in known:
        return []
    have = ", ".join(known) if known else "none"
    return [Problem(doc.position(loc), format_loc(loc),
                    f"function '{name}' has no alias {qualifier!r} (its aliases: {have}); write name:ALIAS "
                    f"with an alias under functions.{name}.aliases, name:VERSION or name:$LATEST")]


def _function_refs(doc: Document, names: list[str], functions: dict[str, Any],
                   routes: list[Any]) -> list[Problem]:
    known = set(names)
    out: list[Problem] = []
    for i, route in enumerate(routes):
        if not isinstance(route, dict):
            continue
        fn = route.get("function")
        if isinstance(fn, str) and ":" in fn:  # name:alias, name:3 or name:$LATEST (versions and aliases)
            out += _qualified_ref(doc, ("routes", i, "function"), fn, names, functions)
        elif isinstance(fn, str) and fn not in known:
            out.append(_unknown_function(doc, ("routes", i, "function"), fn, names))
        source = route.get("source")
        if isinstance(source, dict) and isinstance(source.get("on_failure"), dict):
            out += _destination(doc, ("routes", i, "source", "on_failure"), source["on_failure"], names)
    for fname, fn_cfg in functions.items():
        if not isinstance(fn_cfg, dict) or not isinstance(fn_cfg.get("async"), dict):
            continue
        for which in ("on_success", "on_failure"):
            dest = fn_cfg["async"].get(which)
            if isinstance(dest, dict):
                out += _destination(doc, ("functions", fname, "async", which), dest, names)
    return out


def _destination(doc: Document, loc: Loc, dest: dict[str, Any], names: list[str]) -> list[Problem]:
    target = dest.get("function")
    if dest.get("type") == "function" and isinstance(target, str) and target not in names:
        return [_unknown_function(doc, (*loc, "function"), target, names)]
    return []


def _route_names(doc: Document, routes: list[Any]) -> list[Problem]:
    first: dict[str, int] = {}
    out: list[Problem] = []
    for i, route in enumerate(routes):
        name = route.get("name") if isinstance(route, dict) else None
        if not isinstance(name, str):
            continue
        if name in first:
            loc: Loc = ("routes", i, "name")
            line = doc.position(("routes", first[name], "name")).line
            out.append(Problem(doc.position(loc), format_loc(loc),
                               f"duplicate route name {show(doc, loc, name)} (first used at line {line})"))
        else:
            first[name] = i
    return out


def _webhook_paths(doc: Document, routes: list[Any]) -> list[Problem]:
    seen: dict[str, list[tuple[int, set[str]]]] = {}
    out: list[Problem] = []
    for i, route in enumerate(routes):
        source = route.get("source") if isinstance(route, dict) else None
        if not isinstance(source, dict) or source.get("type") != "webhook":
            continue
        path = source.get("path")
        methods = source.get("methods", ["POST"])
        if not isinstance(path, str) or not isinstance(methods, list):
            continue
        wanted = {str(m).upper() for m in methods}
        key = _PATH_PARAM.sub("{}", path.rstrip("/") or "/")
        for j, other in seen.get(key, []):
            both = wanted & other if "ANY" not in wanted | other else wanted | other
            if both:
                loc: Loc = ("routes", i, "source", "path")
                shown = sorted(both - {"ANY"}) or ["ANY"]
                out.append(Problem(
                    doc.position(loc), format_loc(loc),
                    f"webhook path {show(doc, loc, path)} with {', '.join(shown)} is already served by "
                    f"route {_route_name(routes, j)} (routes[{j}]); "
                    "give one of them another path or other methods",
                ))
                break
        seen.setdefault(key, []).append((i, wanted))
    return out


def _route_name(routes: list[Any], i: int) -> str:
    name = routes[i].get("name") if isinstance(routes[i], dict) else None
    return repr(name) if isinstance(name, str) else f"#{i}"


def _schedules(doc: Document, routes: list[Any]) -> list[Problem]:
    out: list[Problem] = []
    for i, route in enumerate(routes):
        source = route.get("source") if isinstance(route, dict) else None
        if not isinstance(source, dict) or source.get("type") != "schedule":
            continue
        base: Loc = ("routes", i, "source")
        tz = source.get("timezone", "UTC")
        tz_ok = True
        if isinstance(tz, str):
            try:
                zone(tz)
            except CronError as exc:
                tz_ok = False
                out.append(_at(doc, (*base, "timezone"), str(exc)))
        cron = source.get("cron")
        if isinstance(cron, str):
            try:
                cron_trigger(cron, tz if tz_ok and isinstance(tz, str) else "UTC")
            except CronError as exc:
                out.append(_at(doc, (*base, "cron"), str(exc)))
    return out


def _filters(doc: Document, routes: list[Any]) -> list[Problem]:
    out: list[Problem] = []
    for i, route in enumerate(routes):
        patterns = route.get("filters") if isinstance(route, dict) else None
        if not isinstance(patterns, list):
            continue
        source = route.get("source")
        kind = source.get("type") if isinstance(source, dict) else None
        if patterns and kind in _UNFILTERED_SOURCES:
            loc0: Loc = ("routes", i, "filters")
            out.append(Problem(doc.position(loc0), format_loc(loc0),
                               f"filters apply to polled sources (sqs, kinesis, dynamodb_stream, amqp), "
                               f"not to {kind} routes; remove them or check the event in the function"))
            continue
        for exc in check_filters(patterns):
            loc: Loc = ("routes", i, "filters", exc.index, *exc.path)
            message = exc.message
            if doc.origins_under(loc):  # the message may quote a value from the environment
                message = f"invalid filter pattern ({doc.origins_under(loc)[0].describe()})"
            out.append(Problem(doc.position(loc), format_loc(loc), message))
    return out


def _ports(doc: Document) -> list[Problem]:
    """``server.metrics_port`` must be another port than ``server.port`` (0, any free port, aside)."""
    server = doc.data.get("server")
    if not isinstance(server, dict) or "metrics_port" not in server:
        return []
    port, metrics_port = _port(server.get("port", 8080)), _port(server["metrics_port"])
    if port is not None and port == metrics_port and port != 0:
        loc: Loc = ("server", "metrics_port")
        return [Problem(doc.position(loc), format_loc(loc),
                        f"metrics_port must be another port than server.port (both {port}); give /metrics "
                        "its own port or remove metrics_port to serve it on server.port")]
    return []


def _port(value: Any) -> int | None:
    """A port as written (a number, or digits from ``${VAR}``); None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _code_dirs(doc: Document, functions: dict[str, Any], config_dir: Path) -> list[Problem]:
    out: list[Problem] = []
    for name, fn in functions.items():
        if not isinstance(fn, dict) or not isinstance(fn.get("code"), str) or "runtime" not in fn:
            continue
        loc: Loc = ("functions", name, "code")
        path = (config_dir / Path(fn["code"]).expanduser()).resolve()
        if not path.is_dir():
            what = "not a directory" if path.exists() else "directory not found"
            shown = doc.origins[loc].describe() if loc in doc.origins else str(path)
            out.append(Problem(doc.position(loc), format_loc(loc), f"{what}: {shown}"))
    return out


def _layer_dirs(doc: Document, functions: dict[str, Any], config_dir: Path) -> list[Problem]:
    """Every ``functions.NAME.layers`` entry is a directory (relative to the config file)."""
    out: list[Problem] = []
    for name, fn in functions.items():
        layers = fn.get("layers") if isinstance(fn, dict) else None
        if not isinstance(layers, list):
            continue
        if layers and "runtime" not in fn:
            loc0: Loc = ("functions", name, "layers")
            out.append(Problem(doc.position(loc0), format_loc(loc0),
                               "layers are for local functions (with runtime and code); remove layers"))
            continue
        for i, layer in enumerate(layers):
            if not isinstance(layer, str):
                continue
            loc: Loc = ("functions", name, "layers", i)
            path = (config_dir / Path(layer).expanduser()).resolve()
            if not path.is_dir():
                what = "layer is not a directory" if path.exists() else "layer directory not found"
                out.append(Problem(doc.position(loc), format_loc(loc),
                                   f"{what}: {str(path)!r}; give the directory holding the layer's python/, "
                                   "nodejs/, bin/ or lib/ (relative to this config file)"))
    return out


def _node_runtimes(doc: Document, functions: dict[str, Any]) -> list[Problem]:
    """A ``nodejsNN.x`` function needs ``node`` NN on the PATH the router starts its workers with."""
    out: list[Problem] = []
    path = os.environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin"
    for name, fn in functions.items():
        runtime = fn.get("runtime") if isinstance(fn, dict) else None
        major = runtime_major(runtime) if isinstance(runtime, str) else None
        if runtime is None or major is None or major < MIN_MAJOR:
            continue  # not Node.js, or refused by validation
        try:
            find_node(runtime, path)
        except ValueError as exc:
            out.append(_at(doc, ("functions", name, "runtime"), str(exc)))
    return out


def _memory_budget(doc: Document, functions: dict[str, Any]) -> list[Problem]:
    """A local function whose ``memory`` is over ``limits.environment_memory`` could never start."""
    limits = doc.data.get("limits")
    raw = limits.get("environment_memory") if isinstance(limits, dict) else None
    if raw is None:
        return []
    try:
        budget_mb = parse_size(raw) // (1024 * 1024)
    except ValueError:
        return []  # validation reports it
    out: list[Problem] = []
    for name, fn in functions.items():
        memory = fn.get("memory", 128) if isinstance(fn, dict) and "runtime" in fn else None
        if isinstance(memory, int) and not isinstance(memory, bool) and memory > budget_mb:
            out.append(_at(doc, ("functions", name, "memory"),
                           f"{memory} MB is more than limits.environment_memory ({budget_mb} MB), so no "
                           "environment of this function could ever start; lower memory or raise the budget"))
    return out


def _open_invoke_api(doc: Document) -> list[Problem]:
    """DESIGN §9a: an Invoke API without credentials runs any function for anyone who reaches it, so on a
    non-loopback host it needs ``server.allow_unauthenticated_invoke: true``."""
    raw = doc.data.get("server", {})
    if not isinstance(raw, dict):
        return []
    try:
        server = ServerConfig.model_validate(raw)
    except ValidationError:
        return []  # validation reports it
    if not server.invoke_api_exposed:
        return []
    loc: Loc = ("server", "host") if "host" in raw else ("server",)
    return [Problem(
        doc.position(loc), format_loc(loc),
        f"the Invoke API would run any function for anyone who can reach {show(doc, loc, server.host)} "
        f"port {show(doc, ('server', 'port'), server.port)}: it has no server.invoke_token or "
        "server.invoke_keys; set one of them "
        "(e.g. invoke_token: ${INVOKE_TOKEN}), or listen on 127.0.0.1, or turn it off with "
        "invoke_api: false, or accept the risk with allow_unauthenticated_invoke: true",
    )]


def _iam_urls_without_keys(doc: Document, functions: dict[str, Any]) -> list[Problem]:
    """A function URL with ``auth: AWS_IAM`` checks SigV4 with ``server.invoke_keys``: without keys no
    request could ever pass."""
    server = doc.data.get("server")
    if isinstance(server, dict) and server.get("invoke_keys"):
        return []
    out: list[Problem] = []
    for name, fn in functions.items():
        url = fn.get("url") if isinstance(fn, dict) else None
        if isinstance(url, dict) and url.get("auth") == "AWS_IAM":
            loc: Loc = ("functions", name, "url", "auth")
            out.append(Problem(doc.position(loc), format_loc(loc),
                               "AWS_IAM needs server.invoke_keys (the access keys SigV4 signatures are "
                               "checked with); add them, or set auth: NONE to open the URL to anyone"))
    return out


def _at(doc: Document, loc: Loc, message: str) -> Problem:
    """A problem at ``loc`` whose message quotes the value: when that came from the environment, the
    message (which may quote parts of it) is replaced by one that names only its origin."""
    origin = doc.origins.get(loc)
    if origin is not None:
        message = f"invalid {loc[-1]} ({origin.describe()})"
    return Problem(doc.position(loc), format_loc(loc), message)
