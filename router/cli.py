"""Command line: ``router run | validate | schema | invoke | routes | reload | failures | pause | resume
| status | import | publish | build``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TextIO

from router import __version__
from router.config import models as m
from router.config.models import RouteConfig
from router.errors import ConfigError

DEFAULT_CONFIG = "./config.yaml"


def _default_config() -> str:
    return os.environ.get("ROUTER_CONFIG") or DEFAULT_CONFIG


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c", "--config", default=None, metavar="FILE",
        help="config file (default: $ROUTER_CONFIG, else ./config.yaml)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="router", description="Self-hosted, Lambda-compatible event router."
    )
    parser.add_argument("--version", action="version", version=f"router {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="serve the routes of a config file")
    _add_config(p)

    p = sub.add_parser("validate", help="check a config file; print every problem as FILE:LINE:COL")
    p.add_argument("file", nargs="?", default=None, help="config file (or use --config)")
    _add_config(p)

    sub.add_parser("schema", help="print the JSON Schema of the config file")

    p = sub.add_parser("invoke", help="run one function once, locally, and print its result and logs")
    p.add_argument("function", help="function name from the config")
    p.add_argument("-e", "--event", default=None, metavar="FILE",
                   help="event JSON file ('-' for stdin; default: {})")
    _add_config(p)

    p = sub.add_parser("routes", help="list the routes of a config file")
    _add_config(p)

    p = sub.add_parser("build", help="install the requirements.txt / package.json of functions and their "
                       "layers into the dependency cache ($ROUTER_DEPS_CACHE) ahead of time")
    p.add_argument("functions", nargs="*", metavar="FUNCTION", help="functions to build (default: all)")
    _add_config(p)

    p = sub.add_parser("reload", help="make the running router re-read its config file (as SIGHUP does) "
                       "and say what changed, or why it was refused")
    p.add_argument("--url", default=None, help="the router's address (default: $ROUTER_URL, else the "
                   "config's server.host and server.port)")
    _add_config(p)
    _add_failures_parser(sub)
    # Pause and resume (issue 12): through the running router's admin API.
    for verb, text in (("pause", "pause a route (its source stops) or a function (its events wait)"),
                       ("resume", "resume a paused route or function")):
        p = sub.add_parser(verb, help=f"{text}, in the running router")
        p.add_argument("kind", choices=["route", "function"])
        p.add_argument("name", help="route or function name from the config")
        _add_admin(p)
    _add_import_parser(sub)
    p = sub.add_parser("status", help="list the running router's routes and functions with their state")
    p.add_argument("--json", action="store_true", help="print the admin API's JSON")
    _add_admin(p)
    # Versions (issue 13): PublishVersion on the running router's control API.
    p = sub.add_parser("publish", help="publish the function's code and config as its next version, in the "
                       "running router (as Lambda's PublishVersion)")
    p.add_argument("function", help="function name from the config")
    p.add_argument("--description", default="", help="the version's description")
    p.add_argument("--json", action="store_true", help="print the FunctionConfiguration JSON")
    _add_admin(p)
    return parser


def _add_import_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``router import sam|serverless FILE [-o OUT] [--force]``: a router config from a template."""
    p = sub.add_parser("import", help="write a router config from a SAM template or a serverless.yml, "
                       "listing what it could not import")
    p.add_argument("format", choices=["sam", "serverless"], help="the kind of file")
    p.add_argument("source", metavar="FILE", help="template.yaml (sam) or serverless.yml (serverless)")
    p.add_argument("-o", "--output", default=None, metavar="OUT",
                   help="write the config to OUT (code dirs relative to it) instead of stdout")
    p.add_argument("--force", action="store_true", help="overwrite OUT when it exists")


def _add_failures_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``router failures list|show|redrive|purge``: the failed events a running router keeps."""
    p = sub.add_parser("failures", help="list, show, redrive or purge the failed events a running router "
                       "keeps")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (("list", "list failed events, newest first"),
                       ("show", "show one failed event whole: its destination record and payload"),
                       ("redrive", "invoke failed events again, as new async invocations"),
                       ("purge", "delete failed events")):
        a = actions.add_parser(name, help=text)
        if name == "show":
            a.add_argument("id", type=int, help="the failed event's id (see `router failures list`)")
        else:
            a.add_argument("--function", help="only events of this function")
            a.add_argument("--route", help="only events of this route")
            a.add_argument("--condition", help="only events given up for this reason "
                           "(RetriesExhausted, EventAgeExceeded, RetryAttemptsExhausted, RecordAgeExceeded)")
            a.add_argument("--since", help="failed at or after: a duration ago (1h), ISO-8601, epoch seconds")
            a.add_argument("--until", help="failed before: a duration ago (10m), ISO-8601 or epoch seconds")
        if name == "list":
            a.add_argument("--limit", type=int, default=None, help="at most this many (default 100)")
            a.add_argument("--before", type=int, default=None, help="only ids below this (the next page)")
        if name in ("redrive", "purge"):
            a.add_argument("--ids", help="these failed events (comma-separated ids)")
            a.add_argument("--all", action="store_true", help="every failed event (when no filter is given)")
        if name == "redrive":
            a.add_argument("--rate", type=float, default=None,
                           help="events submitted per second (default 10, at most 1000)")
        a.add_argument("--url", default=None, help="the running router (default: $ROUTER_URL, else the "
                       "config's server host and port)")
        a.add_argument("--json", action="store_true", help="print the router's JSON answer as it is")
        _add_config(a)


def _add_admin(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None, help="the running router (default: $ROUTER_URL, else the "
                   "config's server.host and server.port)")
    _add_config(p)


def _load(path: str, err: TextIO) -> object | None:
    from router.config.loader import load_config
    from router.redaction import install

    try:
        config = load_config(path)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=err)
        return None
    install(config.secrets)  # what the commands print is redacted like the logs
    return config


def cmd_validate(path: str, out: TextIO, err: TextIO) -> int:
    config = _load(path, err)
    if config is None:
        return 1
    from router.config.models import RouterConfig

    assert isinstance(config, RouterConfig)
    print(f"{path}: ok ({len(config.functions)} functions, {len(config.routes)} routes)", file=out)
    return 0


def cmd_schema(out: TextIO) -> int:
    from router.config.schema import json_schema

    out.write(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")
    return 0


def _trigger(route: RouteConfig) -> str:
    """What makes the route fire, in one short phrase."""
    src = route.source
    if isinstance(src, m.WebhookSourceConfig):
        return f"{','.join(src.methods)} {src.path}"
    if isinstance(src, m.ScheduleSourceConfig):
        return f"cron({src.cron}) {src.timezone}" if src.cron else f"rate({src.rate:g}s)"
    if isinstance(src, m.SqsSourceConfig):
        return src.queue_url
    if isinstance(src, m.AmqpSourceConfig):
        return f"queue {src.queue}"
    return src.stream_arn


def cmd_routes(path: str, out: TextIO, err: TextIO) -> int:
    from router.config.models import RouterConfig

    config = _load(path, err)
    if config is None:
        return 1
    assert isinstance(config, RouterConfig)
    from router.redaction import redact

    rows: list[tuple[str, ...]] = [("ROUTE", "SOURCE", "TRIGGER", "FUNCTION", "INVOCATION")]
    for r in config.routes:
        # A webhook path or queue URL built from a secret (.../services/${TOKEN}) shows the variable.
        rows.append(tuple(redact(cell) for cell in (
            r.name, r.source.type, _trigger(r), r.function, r.invocation_type)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)
    return 0


def cmd_invoke(path: str, function: str, event_file: str | None, out: TextIO, err: TextIO) -> int:
    from router.config.models import RouterConfig
    from router.local_invoke import invoke_once

    config = _load(path, err)
    if config is None:
        return 1
    assert isinstance(config, RouterConfig)
    if event_file is None:
        payload = b"{}"
    elif event_file == "-":
        payload = sys.stdin.buffer.read()
    else:
        try:
            payload = Path(event_file).read_bytes()
        except OSError as exc:
            print(f"--event: cannot read {event_file}: {exc.strerror}", file=err)
            return 2
    try:
        json.loads(payload or b"null")
    except ValueError as exc:
        print(f"--event: {event_file or 'stdin'} is not valid JSON: {exc}", file=err)
        return 2
    return asyncio.run(invoke_once(config, function, payload, out=out, err=err))


def cmd_reload(path: str, url: str | None, out: TextIO, err: TextIO) -> int:
    """``router reload``: POST /admin/reload to the running router; 0 applied or unchanged, 1 refused."""
    from router.admin_client import AdminClient, AdminError
    from router.config.models import RouterConfig

    config = _load(path, err)  # the same checks the router makes: a broken file is not even sent
    if config is None:
        print("router reload: not asked; fix the file first (the running router keeps its config)", file=err)
        return 1
    assert isinstance(config, RouterConfig)
    try:
        answer = AdminClient(config, url=url).request("POST", "/admin/reload").body
    except AdminError as exc:
        if exc.status == 400 and isinstance(exc.body, dict):  # refused: the running config is kept
            print(f"reload refused, still serving generation {exc.body.get('generation')}:", file=err)
            for line in exc.body.get("problems", []):
                print(f"  {line}", file=err)
            return 1
        print(f"router reload: {exc}", file=err)
        return 1
    if answer["result"] == "unchanged":
        print(f"no change (generation {answer['generation']})", file=out)
    else:
        print(f"reloaded: generation {answer['generation']}: {answer['summary']}", file=out)
    return 0


def cmd_failures(path: str, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``router failures ACTION``: ask the running router (``/admin/failures``); 1 when it cannot be
    reached or refuses, 2 for a request that needs a filter and has none."""
    from router.admin_client import AdminClient, AdminError
    from router.config.models import RouterConfig

    # With --url and no config file, nothing else is needed from one.
    config = RouterConfig.model_validate({}) if args.url and not Path(path).exists() else _load(path, err)
    if config is None:
        return 1
    assert isinstance(config, RouterConfig)
    filters = {key: getattr(args, key, None) for key in ("function", "route", "condition", "since", "until")}
    try:
        client = AdminClient(config, url=args.url)
        if args.action == "list":
            answer = client.request("GET", "/admin/failures",
                                    query={**filters, "limit": args.limit, "before": args.before})
        elif args.action == "show":
            answer = client.request("GET", f"/admin/failures/{args.id}")
        else:
            chosen = {k: v for k, v in filters.items() if v is not None}
            if args.ids:
                chosen["ids"] = [part.strip() for part in args.ids.split(",") if part.strip()]
            if not chosen and not args.all:
                print(f"router failures {args.action}: name --ids or a filter (--function, --route, "
                      f"--condition, --since, --until), or --all for every failed event", file=err)
                return 2
            if args.action == "redrive":
                body: dict[str, object] = {**chosen, "all": args.all}
                if args.rate is not None:
                    body["rate"] = args.rate
                answer = client.request("POST", "/admin/failures/redrive", body=body)
            else:
                query = {k: (",".join(v) if isinstance(v, list) else v) for k, v in chosen.items()}
                answer = client.request("DELETE", "/admin/failures",
                                        query={**query, "all": "true" if args.all else None})
    except AdminError as exc:
        print(f"router failures {args.action}: {exc}", file=err)
        return 1
    body_out = answer.body
    if args.json or args.action == "show":
        print(json.dumps(body_out, indent=2), file=out)
    elif args.action == "list":
        _print_failures(body_out, out)
    elif args.action == "redrive":
        print(f"{body_out['scheduled']} failed events scheduled for redrive at {body_out['rate']:g}/s",
              file=out)
        for item in body_out["redrives"]:
            print(f"  {item['id']}: {item['request_id']} -> {item['redriven_as']}", file=out)
    else:
        print(f"{body_out['purged']} failed events purged", file=out)
    return 0


def _print_failures(body: dict[str, object], out: TextIO) -> None:
    items = body.get("failures")
    assert isinstance(items, list)
    rows: list[tuple[str, ...]] = [
        ("ID", "FAILED_AT", "FUNCTION", "ROUTE", "CONDITION", "ATTEMPTS", "ERROR", "REDRIVEN_AS")]
    for e in items:
        error = str(e.get("error_message") or "")
        rows.append((str(e["id"]), str(e["failed_at"]), str(e["function"]), str(e.get("route") or "-"),
                     str(e["condition"]), str(e["attempts"]), (error[:57] + "...") if len(error) > 60 else
                     error or "-", str(e.get("redriven_as") or "-")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)
    if body.get("next_before"):
        print(f"(more: --before {body['next_before']})", file=out)
def cmd_control(path: str, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``router pause | resume route|function NAME`` and ``router status``, via the admin API."""
    from urllib.parse import quote

    from router.admin_client import AdminClient, AdminError
    from router.config.models import RouterConfig

    config = _load(path, err)
    if config is None:
        return 1
    assert isinstance(config, RouterConfig)
    client = AdminClient(config, url=args.url)
    try:
        if args.command in ("pause", "resume"):
            kind = "routes" if args.kind == "route" else "functions"
            item = client.request("POST", f"/admin/{kind}/{quote(args.name, safe='')}/{args.command}").body
            print(f"{args.kind} {item['name']}: {item['state']}", file=out)
            return 0
        routes = client.request("GET", "/admin/routes").body["routes"]
        functions = client.request("GET", "/admin/functions").body["functions"]
    except AdminError as exc:
        print(f"router {args.command}: {exc}", file=err)
        return 1
    if args.json:
        print(json.dumps({"routes": routes, "functions": functions}, indent=2), file=out)
        return 0
    rows: list[tuple[str, ...]] = [("ROUTE", "SOURCE", "FUNCTION", "STATE")]
    rows += [(r["name"], r["type"], r["function"], r["state"]) for r in routes]
    _table(rows, out)
    print(file=out)
    rows = [("FUNCTION", "STATE", "RESERVED CONCURRENCY", "RETRIES", "MAX EVENT AGE")]
    rows += [(f["name"], f["state"],
              "-" if f["reserved_concurrency"] is None else str(f["reserved_concurrency"]),
              str(f["maximum_retry_attempts"]), f"{f['maximum_event_age']:g}s") for f in functions]
    _table(rows, out)
    return 0


def cmd_publish(path: str, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``router publish FUNCTION``: PublishVersion on the running router."""
    from urllib.parse import quote

    from router.admin_client import AdminClient, AdminError
    from router.config.models import RouterConfig

    config = _load(path, err)
    if config is None:
        return 1
    assert isinstance(config, RouterConfig)
    try:
        body = AdminClient(config, url=args.url).request(
            "POST", f"/2015-03-31/functions/{quote(args.function, safe='')}/versions",
            body={"Description": args.description}).body
    except AdminError as exc:
        print(f"router publish: {exc}", file=err)
        return 1
    if args.json:
        print(json.dumps(body, indent=2), file=out)
    else:
        print(f"function {args.function}: version {body['Version']} (CodeSha256 {body['CodeSha256']})",
              file=out)
    return 0


def cmd_build(path: str, functions: list[str], out: TextIO, err: TextIO) -> int:
    from router.config.models import RouterConfig
    from router.runtime.build import build

    config = _load(path, err)
    if config is None:
        return 1
    assert isinstance(config, RouterConfig)
    return build(config, functions, out, err)


def _table(rows: list[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out, err = sys.stdout, sys.stderr
    if args.command == "schema":
        return cmd_schema(out)
    if args.command == "import":
        from router.importers.output import run_import

        return run_import(args.format, args.source, args.output, args.force, out, err)
    path = getattr(args, "file", None) or args.config or _default_config()
    if args.command == "validate":
        return cmd_validate(path, out, err)
    if args.command == "routes":
        return cmd_routes(path, out, err)
    if args.command == "build":
        return cmd_build(path, args.functions, out, err)
    if args.command == "invoke":
        return cmd_invoke(path, args.function, args.event, out, err)
    if args.command == "reload":
        return cmd_reload(path, args.url, out, err)
    if args.command == "failures":
        return cmd_failures(path, args, out, err)
    if args.command in ("pause", "resume", "status"):
        return cmd_control(path, args, out, err)
    if args.command == "publish":
        return cmd_publish(path, args, out, err)
    if args.command == "run":
        from router.app import run

        return run(path)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
