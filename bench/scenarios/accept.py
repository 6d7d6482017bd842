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

from bench.harness import Ctx, cpu_seconds, metric_sum
from bench.load import LoadResult, run_load
from bench.report import Row, at_least
from bench.router_proc import running_bare, running_router

BODY = b'{"kind":"bench","n":1}'


async def _count(session: aiohttp.ClientSession, url: str) -> float:
    async with session.get(url) as r:
        return float(await r.text())


async def _drain(session: aiohttp.ClientSession, base: str, within: float) -> tuple[bool, float | None]:
    """Wait until the router invoked ``sink`` for every event it received. Returns whether it did, and
    the delivery rate (events/s) over the wait when at least 100 events were still queued at its start."""
    t0 = time.monotonic()
    done0: float | None = None
    backlog = 0.0
    while time.monotonic() - t0 < within:
        received = await metric_sum(session, base, "router_async_events_received_total", function="sink")
        done = await metric_sum(session, base, "router_invocations_total", function="sink")
        if done0 is None:
            done0, backlog = done, received - done
        if done >= received:
            elapsed = time.monotonic() - t0
            return True, (done - done0) / elapsed if backlog >= 100 and elapsed > 0 else None
        await asyncio.sleep(0.2)  # polling interval for a progress counter
    return False, None


async def run(ctx: Ctx) -> list[Row]:
    rounds, n = (1, 2000) if ctx.quick else (3, 5000)
    conns, cap = 64, 10.0
    ctx.say(f"5: {rounds} x {n} events, {conns} connections (at most {cap:g}s a run)")
    router_res: list[LoadResult] = []
    bare_res: list[LoadResult] = []
    notes: list[str] = []
    router_cpu: list[float] = []
    rates: list[float] = []
    async with (
        running_router(ctx, "accept") as (rproc, rbase),
        running_bare(ctx, "bare accept", "bare_accept.py", "--db", str(ctx.tmp / "bare_accept.db"),
                     ready_path="/ready") as (_bproc, bbase),
        aiohttp.ClientSession() as session,
    ):
        for _ in range(rounds):
            before = await metric_sum(session, rbase, "router_async_events_received_total", function="sink")
            c0 = cpu_seconds([rproc.pid])
            res = await run_load(rbase + "/accept", connections=conns, seconds=cap, method="POST", body=BODY,
                                 limit=n)
            after = await metric_sum(session, rbase, "router_async_events_received_total", function="sink")
            router_res.append(res)
            ok = res.requests - res.errors
            if after - before < ok:
                notes.append(f"router answered {ok} events but counted {after - before:.0f} as persisted")
            drained, rate = await _drain(session, rbase, within=120.0)
            if not drained:
                notes.append("router backlog not delivered within 120 s; next round not idle")
            if rate is not None:
                rates.append(rate)
            if drained:
                router_cpu.append((cpu_seconds([rproc.pid]) - c0) / max(ok, 1) * 1e6)

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
        Row(s, "router CPU per event, accepted to delivered", "us",
            statistics.median(router_cpu) if router_cpu else None,
            note="router process CPU from the start of a round until sink ran for every event / events"),
        Row(s, "async delivery rate (backlog drain)", "events/s",
            statistics.median(rates) if rates else None,
            note="events/s the router delivered to sink (concurrency 2) from its queue after accepting"),
    ]
