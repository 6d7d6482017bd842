"""The aiohttp applications: the main app (webhooks, Invoke API, health, metrics) and a metrics-only app,
the guarded runners that serve them, and the start-up line saying what a listener exposes.

The runners are started and stopped by ``router.app``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from router.config.models import RouterConfig, WebhookSourceConfig, is_loopback
from router.core.dispatcher import Dispatch
from router.http import aws_errors
from router.http.admin_api import add_control_and_admin_routes
from router.http.admin_failures import add_failure_routes
from router.http.admin_reload import add_reload_route
from router.http.connections import ConnectionGuard, GuardedAppRunner
from router.http.console import add_console_routes
from router.http.context import CTX, HttpContext
from router.http.error_pages import AWS_API, json_error_pages
from router.http.fast_webhook import FastRequestHandler, FastWebhooks
from router.http.function_url import add_function_url_routes, log_open_urls, url_hosts
from router.http.invocations_api import add_invocation_routes
from router.http.invoke_api import add_invoke_routes
from router.http.invoke_stream import add_invoke_stream_routes
from router.http.limits import LIMITS, BodyLimits, BodyUnavailable, ByteBudget
from router.http.monitoring import add_monitoring_routes
from router.http.webhook import WEBHOOKS, register_webhook_routes
from router.invocation import new_request_id
from router.readiness import Readiness

__all__ = ["Dispatch", "HttpContext", "Readiness", "build_app", "build_metrics_app", "build_runner",
           "exposure"]

log = logging.getLogger("router.http")

# Room above server.max_body for aiohttp's own limit, so handlers see the exact limit themselves.
BODY_SLACK = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Oversize bodies become 413 JSON and unexpected errors 500 JSON, never aiohttp's text pages."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return web.json_response({"message": "Request Entity Too Large"}, status=413)
    except BodyUnavailable as exc:  # too slow (408) or no room in server.max_body_buffer (503)
        return exc.response()
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unhandled error in HTTP handler", extra={"event": request.method})
        if AWS_API.match(request.path):  # an SDK's client parses it (and retries it, as a ServiceException)
            return aws_errors.service_error("Internal error of the router; its log says what failed",
                                            new_request_id())
        return web.json_response({"message": "Internal Server Error"}, status=500)


async def close_when_draining(request: web.Request, response: web.StreamResponse) -> None:
    """From SIGTERM on (``server.drain_delay``), every answer says ``Connection: close``: a keep-alive
    client then opens its next connection to another replica instead of holding this one to the end.
    (``on_response_prepare``: also for the answers a handler writes itself, as webhooks do.)"""
    if request.app[CTX].readiness.shutting_down:
        response.force_close()
        response.headers["Connection"] = "close"  # the headers were made before this hook runs


def build_app(ctx: HttpContext) -> web.Application:
    """The main app: health, /metrics (unless ``server.metrics_port`` is set), Invoke API, webhooks."""
    server = ctx.config.server
    gauge = ctx.metrics.http_body_buffer
    app = web.Application(
        client_max_size=max(server.max_body, server.max_async_body) + BODY_SLACK,
        middlewares=[json_errors, json_error_pages, url_hosts],  # url_hosts: function URL hosts
    )
    app[CTX] = ctx
    app.on_response_prepare.append(close_when_draining)
    app[LIMITS] = BodyLimits(ByteBudget(server.max_body_buffer, gauge.set), server.body_timeout, ctx.metrics)
    add_monitoring_routes(app, with_metrics=server.metrics_port is None)
    if server.invoke_api:
        add_invoke_routes(app)
        add_invoke_stream_routes(app)  # InvokeWithResponseStream (issue 13: response streaming)
        add_invocation_routes(app)  # /invocations, /admin/invocations (issue 12: history, status API)
        add_reload_route(app)
        if server.console:
            add_console_routes(app)
        add_failure_routes(app)  # /admin/failures (issue 12: failed events)
    if server.invoke_api and ctx.controls is not None:  # issue 12: pause/resume, Lambda's control API
        add_control_and_admin_routes(app)
    add_function_url_routes(app)  # function URLs: /lambda-url/{function}/...
    log_open_urls(ctx.config)
    register_webhook_routes(app, ctx)
    return app


def build_metrics_app(ctx: HttpContext) -> web.Application:
    """The app for ``server.metrics_port``: /metrics and the health endpoints only."""
    app = web.Application(middlewares=[json_errors, json_error_pages])
    app[CTX] = ctx
    add_monitoring_routes(app, with_metrics=True)
    return app


def in_container() -> bool:
    """Whether this process runs in a Docker or Podman container (their marker files)."""
    return Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()


READ_BUFSIZE = 16 * 1024
"""aiohttp reads a body ahead of its handler until twice this is buffered (its default, 64 KiB, let 300
stalled connections waiting for room in the body budget hold ~100 MB more; 16 KiB, ~30 MB)."""
METRICS_LISTENER_CAP = 64
"""Connections the ``server.metrics_port`` listener takes at once (scrapers and probes)."""


def build_runner(app: web.Application, ctx: HttpContext, *, listener: str, cap: int) -> GuardedAppRunner:
    """The runner of one listener: aiohttp's, with ``server``'s idle and header timeouts and ``cap``; an app
    with webhook routes (the main one) answers whole webhook requests on the fast path
    (``router.http.fast_webhook``)."""
    server = ctx.config.server
    guard = ConnectionGuard(listener, cap, ctx.metrics, server.header_timeout, server.body_timeout)
    fast: dict[str, Any] = {}
    if WEBHOOKS in app:
        fast = {"protocol": FastRequestHandler,
                "protocol_kwargs": {"fast": FastWebhooks(app[WEBHOOKS], ctx, app[LIMITS])}}
    return GuardedAppRunner(app, guard=guard, shutdown_timeout=server.shutdown_timeout, access_log=None,
                            keepalive_timeout=server.idle_timeout, read_bufsize=READ_BUFSIZE, **fast)


def exposure(config: RouterConfig, port: int, *, metrics_only: bool = False,
             in_container: bool = False) -> tuple[int, str]:
    """The start-up line (and its log level) saying what a listener serves and how each part is
    protected. Webhook routes are named, never their paths (a path may hold a secret)."""
    server = config.server
    local = is_loopback(server.host)
    where = (f"http://{server.host}:{port} ("
             + ("loopback only" if local else "reachable from other machines") + ")")
    parts: list[str] = []
    level = logging.INFO
    if local and in_container:
        where += (" INSIDE A CONTAINER: only its own network namespace reaches it; set server.host: "
                  "0.0.0.0 to publish the port")
        level = logging.WARNING
    if not metrics_only:
        hooks = [f"{r.name} ({r.source.auth.type if r.source.auth else 'no auth'})"
                 for r in config.routes if isinstance(r.source, WebhookSourceConfig)]
        parts.append("webhooks: " + (", ".join(hooks) if hooks else "none"))
        if not server.invoke_api:
            parts.append("Invoke API: off")
        elif server.invoke_auth is not None:
            parts.append(f"Invoke API: {server.invoke_auth} required")
        else:
            parts.append("Invoke API: NO AUTH, anyone who reaches this address can run any function"
                         + ("" if local else " (server.allow_unauthenticated_invoke)"))
            if not local:
                level = logging.WARNING
    health = "/livez /healthz /readyz"
    if metrics_only or server.metrics_port is None:
        health += " /metrics"
    parts.append(f"{health}: no auth")
    return level, f"listening on {where}: " + "; ".join(parts)
