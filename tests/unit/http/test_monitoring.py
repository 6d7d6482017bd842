"""/livez, /healthz, /readyz, /metrics and the separate metrics app, over real HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from router.http.context import HttpContext
from router.http.server import BODY_SLACK, build_app, build_metrics_app
from router.metrics import Metrics
from router.readiness import Readiness

from .conftest import FakeDispatcher, make_config, start


async def test_livez_and_healthz_need_nothing(serve: Any) -> None:
    server = await serve(ready=False)
    server.ctx.readiness.begin_shutdown()
    for path in ("/livez", "/healthz"):
        async with server.session.get(server.url + path) as r:
            assert r.status == 200
            assert await r.json() == {"status": "ok"}


async def test_readyz_follows_start_checks_flags_and_shutdown(serve: Any) -> None:
    server = await serve(ready=False)
    readiness: Readiness = server.ctx.readiness

    async def get() -> tuple[int, Any]:
        async with server.session.get(server.url + "/readyz") as r:
            return r.status, await r.json()

    assert await get() == (503, {"status": "not ready", "reasons": ["starting"]})
    readiness.set_started()
    assert await get() == (200, {"status": "ready"})

    store_up = True

    async def ping() -> bool:
        if not store_up:
            raise ConnectionError("refused")
        return True

    readiness.add_check("state_store", ping)
    assert (await get())[0] == 200
    store_up = False
    assert await get() == (503, {"status": "not ready", "reasons": ["state_store: ConnectionError"]})
    store_up = True

    readiness.set_flag("route:orders", False, "reconnecting")
    assert await get() == (503, {"status": "not ready", "reasons": ["route:orders: reconnecting"]})
    readiness.set_flag("route:orders", True)
    assert (await get())[0] == 200

    readiness.begin_shutdown()
    assert await get() == (503, {"status": "not ready", "reasons": ["shutting down"]})


async def test_slow_check_times_out() -> None:
    readiness = Readiness(check_timeout=0.05)
    readiness.set_started()
    never = asyncio.Event()

    async def hang() -> None:
        await never.wait()

    readiness.add_check("state_store", hang)
    assert await readiness.reasons() == ["state_store: no answer within 0.05s"]


async def test_metrics_endpoint(serve: Any) -> None:
    server = await serve()
    server.ctx.metrics.build_info.labels(version="9.9").set(1)
    async with server.session.get(server.url + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == CONTENT_TYPE_LATEST
        text = await r.text()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "router_build_info" in names
    assert "router_webhook_requests" in names


async def test_metrics_port_moves_metrics_off_the_main_app(serve: Any) -> None:
    config = make_config(server={"metrics_port": 0})
    server = await serve(config)
    async with server.session.get(server.url + "/metrics") as r:
        assert r.status == 404
    ctx = HttpContext(config, FakeDispatcher(), Metrics(), Readiness())
    runner, url = await start(build_metrics_app(ctx))
    try:
        async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
            assert r.status == 200
            assert "router_build_info" in await r.text()
    finally:
        await runner.cleanup()


async def test_oversize_body_past_client_max_size_is_413_json() -> None:
    """aiohttp's own client_max_size error (a handler reading without a limit) becomes JSON, not 500."""
    ctx = HttpContext(make_config(server={"max_body": 1024, "max_async_body": 1024}), FakeDispatcher(),
                      Metrics(), Readiness())
    app = build_app(ctx)

    async def raw(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    app.router.add_post("/raw", raw)
    runner, url = await start(app)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(url + "/raw", data=b"x" * 1000) as r:
                assert r.status == 200
            async with s.post(url + "/raw", data=b"x" * (1024 + BODY_SLACK + 1)) as r:
                assert r.status == 413
                assert await r.json() == {"message": "Request Entity Too Large"}
    finally:
        await runner.cleanup()


async def test_readyz_reasons_never_show_a_secret(serve: Any) -> None:
    from router.redaction import REDACTOR, install

    server = await serve()
    install({"arn:aws:kinesis:eu-west-1:123456789012:stream/secret-stream": "STREAM_ARN"})
    try:
        server.ctx.readiness.set_flag(
            "route:clicks", False, "arn:aws:kinesis:eu-west-1:123456789012:stream/secret-stream not found")
        async with server.session.get(server.url + "/readyz") as r:
            assert await r.json() == {"status": "not ready",
                                      "reasons": ["route:clicks: ${STREAM_ARN} not found"]}
    finally:
        REDACTOR.clear()
