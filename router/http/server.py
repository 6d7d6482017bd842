"""The aiohttp applications: the main app (webhooks, Invoke API, health, metrics) and a metrics-only app.

The app runner belongs to ``router.app``; this module only builds applications.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from router.http.context import CTX, DispatcherLike, HttpContext
from router.http.error_pages import json_error_pages
from router.http.health import add_health_routes
from router.http.invoke_api import add_invoke_routes
from router.http.readiness import Readiness

__all__ = ["DispatcherLike", "HttpContext", "Readiness", "build_app", "build_metrics_app"]

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
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unhandled error in HTTP handler", extra={"event": request.method})
        return web.json_response({"message": "Internal Server Error"}, status=500)


def build_app(ctx: HttpContext) -> web.Application:
    """The main app: health, /metrics (unless ``server.metrics_port`` is set), Invoke API, webhooks."""
    # Imported here: the webhook source depends on this package's context, not the other way round.
    from router.sources.webhook import register_webhook_routes

    server = ctx.config.server
    app = web.Application(
        client_max_size=max(server.max_body, server.max_async_body) + BODY_SLACK,
        middlewares=[json_errors, json_error_pages],
    )
    app[CTX] = ctx
    add_health_routes(app, with_metrics=server.metrics_port is None)
    if server.invoke_api:
        add_invoke_routes(app)
    register_webhook_routes(app, ctx)
    return app


def build_metrics_app(ctx: HttpContext) -> web.Application:
    """The app for ``server.metrics_port``: /metrics and the health endpoints only."""
    app = web.Application(middlewares=[json_errors, json_error_pages])
    app[CTX] = ctx
    add_health_routes(app, with_metrics=True)
    return app
