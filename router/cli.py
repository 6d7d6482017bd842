"""Command line: ``router run | validate | schema | invoke | routes | pause | resume | status``."""

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

    # Pause and resume (issue 12): through the running router's admin API.
    for verb, text in (("pause", "pause a route (its source stops) or a function (its events wait)"),
                       ("resume", "resume a paused route or function")):
        p = sub.add_parser(verb, help=f"{text}, in the running router")
        p.add_argument("kind", choices=["route", "function"])
        p.add_argument("name", help="route or function name from the config")
        _add_admin(p)
    p = sub.add_parser("status", help="list the running router's routes and functions with their state")
    p.add_argument("--json", action="store_true", help="print the admin API's JSON")
    _add_admin(p)
    return parser


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


def _table(rows: list[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out, err = sys.stdout, sys.stderr
    if args.command == "schema":
        return cmd_schema(out)
    path = getattr(args, "file", None) or args.config or _default_config()
    if args.command == "validate":
        return cmd_validate(path, out, err)
    if args.command == "routes":
        return cmd_routes(path, out, err)
    if args.command == "invoke":
        return cmd_invoke(path, args.function, args.event, out, err)
    if args.command in ("pause", "resume", "status"):
        return cmd_control(path, args, out, err)
    if args.command == "run":
        from router.app import run

        return run(path)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
