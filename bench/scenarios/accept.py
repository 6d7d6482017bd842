"""Scenario 5: async accept. POST events to an async webhook route (SQLite state) with 64 connections until
N events were answered; events/s = 2xx answers / elapsed. Checked against the router's own count of
persisted events (``router_async_events_received_total``) so an answer that persisted nothing cannot
count. Between rounds the router is given time to deliver its backlog, so every round starts idle.

Baseline: bench/servers/bare_accept.py, one aiosqlite INSERT + COMMIT per request (WAL, synchronous=NORMAL).
"""

from __future__ import annotations

import asyncio
import statistics
import time

import aiohttp

from bench.harness import Ctx, metric_sum
from bench.load import LoadResult, run_load
from bench.report import Row, at_least
from bench.router_proc import running_bare, running_router

BODY = b'{"kind":"bench","n":1}'


async def _count(session: aiohttp.ClientSession, url: str) -> float:
    async with session.get(url) as r:
        return float(await r.text())


async def _drain(session: aiohttp.ClientSession, base: str, within: float) -> float | None:
    """Wait until the router invoked ``sink`` for every event it received; seconds taken, None if not."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        received = await metric_sum(session, base, "router_async_events_received_total", function="sink")
        done = await metric_sum(session, base, "router_invocations_total", function="sink")
        if done >= received:
            return time.monotonic() - t0
        await asyncio.sleep(0.2)  # polling interval for a progress counter
    return None


async def run(ctx: Ctx) -> list[Row]:
    rounds, n = (1, 2000) if ctx.quick else (3, 5000)
    conns, cap = 64, 10.0
    ctx.say(f"5: {rounds} x {n} events, {conns} connections (at most {cap:g}s a run)")
    router_res: list[LoadResult] = []
    bare_res: list[LoadResult] = []
    notes: list[str] = []
    async with (
        running_router(ctx, "accept") as (_r, rbase),
        running_bare(ctx, "bare accept", "bare_accept.py", "--db", str(ctx.tmp / "bare_accept.db"),
                     ready_path="/ready") as (_b, bbase),
        aiohttp.ClientSession() as session,
    ):
        for _ in range(rounds):
            before = await metric_sum(session, rbase, "router_async_events_received_total", function="sink")
            res = await run_load(rbase + "/accept", connections=conns, seconds=cap, method="POST", body=BODY,
                                 limit=n)
            after = await metric_sum(session, rbase, "router_async_events_received_total", function="sink")
            router_res.append(res)
            ok = res.requests - res.errors
            if after - before < ok:
                notes.append(f"router answered {ok} events but counted {after - before:.0f} as persisted")
            drained = await _drain(session, rbase, within=60.0)
            if drained is None:
                notes.append("router backlog not delivered within 60 s; next round not idle")

            before = await _count(session, bbase + "/count")
            res = await run_load(bbase + "/accept", connections=conns, seconds=cap, method="POST", body=BODY,
                                 limit=n)
            after = await _count(session, bbase + "/count")
            bare_res.append(res)
            if after - before < res.requests - res.errors:
                notes.append("bare server answered more events than it stored")
    r = statistics.median(x.ok_rps for x in router_res)
    b = statistics.median(x.ok_rps for x in bare_res)
    errs = sum(x.errors for x in router_res)
    if errs:
        notes.append(f"{errs} router answers were errors")
    s = "5 async accept, 64 conn"
    return [
        Row(s, "events persisted /s", "events/s", r, "aiosqlite commit per event", b,
            target=">= 3,000/s", ok=at_least(r, 3000), note="; ".join(dict.fromkeys(notes))),
        Row(s, "accept latency p99", "ms", statistics.median(x.p99_ms for x in router_res),
            "aiosqlite commit per event", statistics.median(x.p99_ms for x in bare_res)),
    ]
