"""Scenario 5: async accept. POST events to an async webhook route (SQLite state) with 64 connections until
N events were answered; events/s = 2xx answers / elapsed. Checked against the router's own count of
persisted events (``router_async_events_received_total``) so an answer that persisted nothing cannot
count. Between rounds the router is given time to deliver its backlog, so every round starts idle.

Baseline: bench/servers/bare_accept.py, one aiosqlite INSERT + COMMIT per request (WAL, synchronous=FULL,
as the router's default ``state.durability: fsync``).
"""

from __future__ import annotations

import asyncio
import contextlib
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


class Progress:
    """Samples (time, received, delivered) of the router's ``sink`` counters every 0.25 s while a round
    runs, to see when accepting ended, when delivery caught up, and the delivery rate in between."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base
        self.samples: list[tuple[float, float, float]] = []
        self.caught_up = asyncio.Event()
        self.expect = float("inf")  # received count to reach; set once the load run knows its answers

    async def sample(self) -> tuple[float, float]:
        received = await metric_sum(self.session, self.base, "router_async_events_received_total",
                                    function="sink")
        done = await metric_sum(self.session, self.base, "router_invocations_total", function="sink")
        return received, done

    async def poll(self, stop: asyncio.Event) -> None:
        """Sample until ``stop``; ``caught_up`` is set once ``expect`` events were received and run."""
        while not stop.is_set():
            received, done = await self.sample()
            self.samples.append((time.monotonic(), received, done))
            if received >= self.expect and done >= received:
                self.caught_up.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)  # sampling interval

    def delivery_rate(self) -> float | None:
        """Events/s delivered between the end of accepting and catching up, when >= 100 were left."""
        if not self.samples:
            return None
        final = self.samples[-1][1]
        t_accepted, done_then = next((t, d) for t, r, d in self.samples if r >= final)
        t_done = next((t for t, r, d in self.samples if d >= final), None)
        if t_done is None or final - done_then < 100 or t_done <= t_accepted:
            return None
        return (final - done_then) / (t_done - t_accepted)


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
            before, _ = await Progress(session, rbase).sample()
            progress = Progress(session, rbase)
            stop = asyncio.Event()
            c0 = cpu_seconds([rproc.pid])
            async with asyncio.TaskGroup() as tg:
                tg.create_task(progress.poll(stop))
                res = await run_load(rbase + "/accept", connections=conns, seconds=cap, method="POST",
                                     body=BODY, limit=n)
                ok = res.requests - res.errors
                progress.expect = before + ok
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(progress.caught_up.wait(), 120.0)
                stop.set()
            router_res.append(res)
            after = progress.samples[-1][1] if progress.samples else before
            if after - before < ok:
                notes.append(f"router answered {ok} events but counted {after - before:.0f} as persisted")
            if not progress.caught_up.is_set():
                notes.append("router backlog not delivered within 120 s; next round not idle")
            else:
                router_cpu.append((cpu_seconds([rproc.pid]) - c0) / max(ok, 1) * 1e6)
            rate = progress.delivery_rate()
            if rate is not None:
                rates.append(rate)

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
