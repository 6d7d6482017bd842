"""What monitoring asks of the router, without auth: ``/livez`` and ``/healthz`` (process alive),
``/readyz`` (ready to serve) for probes, ``/metrics`` for Prometheus."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from router.http.context import CTX


async def livez(request: web.Request) -> web.Response:
    """Alive: no dependency checks, so a slow store never gets the process restarted."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    reasons = await request.app[CTX].readiness.reasons()
    if reasons:
        return web.json_response({"status": "not ready", "reasons": reasons}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[CTX].metrics.registry)
    # CONTENT_TYPE_LATEST carries its charset; aiohttp wants it in the header, not in content_type=.
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_monitoring_routes(app: web.Application, *, with_metrics: bool = True) -> None:
    app.router.add_get("/livez", livez, allow_head=True)
    app.router.add_get("/healthz", livez, allow_head=True)
    app.router.add_get("/readyz", readyz, allow_head=True)
    if with_metrics:
        app.router.add_get("/metrics", metrics)
