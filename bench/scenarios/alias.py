"""Scenario 16: what a weighted alias costs a sync webhook. One router, two routes to the same trivial
python handler: ``/ok`` unqualified ($LATEST) and ``/live`` on the alias ``ok:live`` (version 1, with 10 % of
the invocations going to version 2), measured interleaved at 32 connections, so a slow moment of the
machine hits both alike.

The two versions are published through the router's own ``PublishVersion`` (the function's environment
changes between the two, so the second is a new version), and the alias and its route are added by a hot
reload (``POST /admin/reload``), as a user would do it.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import yaml

from bench.harness import HOST, PYTHON, BenchError, Ctx, ServerProcess, free_port
from bench.report import Row
from bench.router_proc import router_config
from bench.scenarios.http_sync import measure, router_target


async def _post(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.post(url, data=b"{}") as r:
        body = await r.text()
        if r.status >= 300:
            raise BenchError(f"POST {url}: {r.status} {body[:300]}")
        out: dict[str, Any] = json.loads(body)
        return out


async def run(ctx: Ctx) -> list[Row]:
    rounds, seconds, warm_s = (1, 3.0, 2.0) if ctx.quick else (3, 8.0, 3.0)
    work = ctx.tmp / "alias"
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = router_config(port, work)
    path = work / "router.yaml"

    def write() -> None:
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    write()
    base = f"http://{HOST}:{port}"
    proc = ServerProcess("router (alias)", [PYTHON, "-m", "router", "run", "--config", str(path)],
                         log_path=work / "router.log")
    try:
        async with proc, aiohttp.ClientSession() as session:
            await proc.wait_http(base + "/readyz")
            publish = base + "/2015-03-31/functions/ok/versions"
            v1 = int((await _post(session, publish))["Version"])
            cfg["functions"]["ok"]["environment"] = {"BENCH_VERSION": "2"}
            write()
            await _post(session, base + "/admin/reload")
            v2 = int((await _post(session, publish))["Version"])
            if v2 == v1:
                raise BenchError("the second publish did not make a new version")
            cfg["functions"]["ok"]["aliases"] = {"live": {"version": v1, "weights": {v2: 0.1}}}
            cfg["routes"].append({"name": "live", "source": {"type": "webhook", "path": "/live",
                                                             "methods": ["GET", "POST"]},
                                  "function": "ok:live"})
            write()
            outcome = await _post(session, base + "/admin/reload")
            targets = {"unqualified": router_target(proc.pid, base, "/ok"),
                       "alias": router_target(proc.pid, base, "/live")}
            ctx.say(f"16: 32 connections, {rounds} x {seconds:g}s per route "
                    f"(reload: {outcome.get('result')})")
            m = await measure(ctx, targets, 32, seconds, rounds, warm_s)
    finally:
        ctx.leaked.extend(proc.leaked)
    rps, p50, front = m.rps(), m.p50(), m.front()
    s = "16 weighted alias, 32 conn"
    return [
        Row(s, "throughput (2xx/s)", "req/s", rps["alias"], "same router, unqualified route",
            rps["unqualified"],
            note=m.errors_note() or f"alias live: version {v1}, 10 % to version {v2}; interleaved runs"),
        Row(s, "latency p50", "ms", p50["alias"], "same router, unqualified route", p50["unqualified"]),
        Row(s, "CPU per request, router process", "us", front["alias"], "same router, unqualified route",
            front["unqualified"], note="the same router process, measured during each route's runs"),
    ]
