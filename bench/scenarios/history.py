"""Scenario 17: what recording the invocation history costs a sync webhook (issue 12). One router, two
functions alike but for ``history.enabled`` (the trivial python handler behind ``/ok``, recorded, and
``/ok_off``, not), driven in alternating runs at 32 connections and then at 1, so a slow moment of the
machine hits both alike (runs of separate routers, one a variant, spread by 5-13 % a run on the 2-vCPU
hosts, which hides a cost of a few per cent).

Each round is a pair of runs, one a route, in alternating order; the throughput figure is the median
of the rounds' on/off ratios, with the 95 % interval of their mean: "not measurably slower" is an
interval that reaches 1.0 (its width, in the note, says how small a cost the run could have seen). CPU
per request is the router process's during each route's runs, and the history's writer process's
(SQLite) over all runs per recorded request: its writes of one route's invocations may fall in the
other's runs.
"""

from __future__ import annotations

import math
import statistics

from bench.harness import Ctx, cmdline, cpu_seconds, descendants
from bench.load import LoadResult, run_load
from bench.report import Row
from bench.router_proc import OK_CODE, running_router
from bench.scenarios.http_sync import Target, cold_starts, warm

ON, OFF = "history on", "history off"


def _writer(router_pid: int) -> list[int]:
    return [p for p in descendants(router_pid) if "history_writer" in cmdline(p)]


def _interval(ratios: list[float]) -> tuple[float, float]:
    """The 95 % interval of the mean of ``ratios`` (normal approximation)."""
    mean = statistics.fmean(ratios)
    half = 1.96 * statistics.stdev(ratios) / math.sqrt(len(ratios)) if len(ratios) > 1 else math.inf
    return mean - half, mean + half


async def _pairs(router_pid: int, urls: dict[str, str], connections: int, seconds: float, rounds: int
                 ) -> tuple[dict[str, list[LoadResult]], dict[str, list[float]], float]:
    """``rounds`` pairs of runs, the order alternating; the results, the router's CPU per request of each
    run, and the writer's CPU over all of them per recorded request."""
    load: dict[str, list[LoadResult]] = {ON: [], OFF: []}
    cpu: dict[str, list[float]] = {ON: [], OFF: []}
    writer = _writer(router_pid)
    w0 = cpu_seconds(writer)
    for i in range(rounds):
        for name in (ON, OFF) if i % 2 == 0 else (OFF, ON):
            c0 = cpu_seconds([router_pid])
            res = await run_load(urls[name], connections=connections, seconds=seconds)
            c1 = cpu_seconds([router_pid])
            load[name].append(res)
            cpu[name].append((c1 - c0) / max(res.requests, 1) * 1e6)
    recorded = sum(r.requests for r in load[ON])
    return load, cpu, (cpu_seconds(writer) - w0) / max(recorded, 1) * 1e6


async def run(ctx: Ctx) -> list[Row]:
    rounds, seconds, warm_s = (3, 2.0, 2.0) if ctx.quick else (10, 4.0, 3.0)
    one_rounds = 3 if ctx.quick else 6
    off_fn = {"runtime": "python3.11", "handler": "app.handler", "code": str(OK_CODE), "timeout": "10s",
              "memory": 256, "history": {"enabled": False}}
    route = {"name": "ok_off", "source": {"type": "webhook", "path": "/ok_off", "methods": ["GET", "POST"]},
             "function": "ok_off"}
    rows: list[Row] = []
    async with running_router(ctx, "history", extra_routes=[route], extra_functions={"ok_off": off_fn},
                              history="on") as (proc, base):
        urls = {ON: base + "/ok", OFF: base + "/ok_off"}
        for name, url in urls.items():
            await warm(ctx, name, Target(url, lambda: ([proc.pid], []), cold_starts(base)), 32, warm_s,
                       within=60.0)
        ctx.say(f"17: {rounds} x {seconds:g}s a route at 32 connections, {one_rounds} at 1, alternating")
        for connections, n in ((32, rounds), (1, one_rounds)):
            load, cpu, writer_us = await _pairs(proc.pid, urls, connections, seconds, n)
            ratios = [a.ok_rps / b.ok_rps for a, b in zip(load[ON], load[OFF], strict=True) if b.ok_rps]
            low, high = _interval(ratios)
            on_rps = statistics.median(r.ok_rps for r in load[ON])
            off_rps = statistics.median(r.ok_rps for r in load[OFF])
            errors = sum(r.errors for rs in load.values() for r in rs)
            s = f"17 history on/off, {connections} conn"
            rows += [
                Row(s, "throughput (2xx/s), history on", "req/s", on_rps, "history off, same router", off_rps,
                    ratio=statistics.median(ratios), target="not measurably slower", ok=low <= 1.0,
                    note=(f"per-round on/off ratios {', '.join(f'{r:.2f}' for r in ratios)}; 95 % interval "
                          f"of their mean {low:.3f}-{high:.3f}" + (f"; {errors} errors" if errors else ""))),
                Row(s, "latency p99, history on", "ms", statistics.median(r.p99_ms for r in load[ON]),
                    "history off, same router", statistics.median(r.p99_ms for r in load[OFF])),
                Row(s, "CPU per request, router process", "us", statistics.median(cpu[ON]),
                    "history off, same router", statistics.median(cpu[OFF]),
                    note="the router process during each route's runs (median of runs)"),
                Row(s, "CPU per recorded request, history writer", "us", writer_us,
                    note="the writer process (SQLite) over both routes' runs / requests to the recorded "
                         "route"),
            ]
    return rows
