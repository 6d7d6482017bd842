"""Scenarios 1 and 2: a sync webhook to the trivial python handler, beside a bare aiohttp proxy in front of a
bare aiohttp function (the same two-process shape), the bare function called directly, and (scenario 1)
serverless-offline running the same handler.

Runs are interleaved (router, proxy, direct, serverless-offline, router, ...) and each figure is the median
over rounds, so a slow moment of the machine hits all of them alike. The helpers here (warm-up until no
environment starts, interleaved measurement) serve scenarios 12 and 13 too.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from bench.harness import Ctx, cpu_seconds, descendants, metric_sum
from bench.load import LoadResult, run_load
from bench.peers import PeerFunction, handler_processes, serverless_offline, start_offline
from bench.report import Row, at_least, at_most
from bench.router_proc import OK_CODE, running_bare, running_router

Pids = Callable[[], tuple[list[int], list[int]]]
"""The front process (router, proxy) and the back processes (environments, function) of a target."""

Counter = Callable[[], Awaitable[float]]
"""A figure that moves while a target still starts processes (the router's cold starts, a process count)."""


@dataclass
class Target:
    url: str
    pids: Pids
    starts: Counter | None = None  # warm until a whole run leaves it unchanged; None: one warm-up run


@dataclass
class Measured:
    load: dict[str, list[LoadResult]] = field(default_factory=dict)
    cpu: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # us/request: front, back

    def rps(self) -> dict[str, float]:
        return {k: _med(v, lambda r: r.ok_rps) for k, v in self.load.items()}

    def p50(self) -> dict[str, float]:
        return {k: _med(v, lambda r: r.p50_ms) for k, v in self.load.items()}

    def p99(self) -> dict[str, float]:
        return {k: _med(v, lambda r: r.p99_ms) for k, v in self.load.items()}

    def front(self) -> dict[str, float]:
        return {k: statistics.median(c[0] for c in v) for k, v in self.cpu.items()}

    def back(self) -> dict[str, float]:
        return {k: statistics.median(c[1] for c in v) for k, v in self.cpu.items()}

    def errors_note(self) -> str:
        parts = []
        for name, rs in self.load.items():
            errs, total = sum(r.errors for r in rs), sum(r.requests for r in rs)
            if errs:
                parts.append(f"{name}: {errs} of {total} responses were errors "
                             "(non-2xx/3xx or socket errors)")
        return "; ".join(parts)


def _med(results: list[LoadResult], key: Callable[[LoadResult], float]) -> float:
    return statistics.median(key(r) for r in results)


def cold_starts(base: str) -> Counter:
    """The router's ``router_cold_starts_total`` (all functions)."""
    async def count() -> float:
        async with aiohttp.ClientSession() as s:
            return await metric_sum(s, base, "router_cold_starts_total")
    return count


def process_count(pids: Callable[[], list[int]]) -> Counter:
    async def count() -> float:
        return float(len(pids()))
    return count


async def environments(base: str, function: str) -> float:
    """The router's ``router_environments{function=...}`` summed over states (idle, busy, starting)."""
    async with aiohttp.ClientSession() as s:
        return await metric_sum(s, base, "router_environments", function=function)


async def warm(ctx: Ctx, name: str, target: Target, connections: int, window: float, within: float) -> None:
    """Drive ``target`` in ``window``-second runs until one run started nothing (``target.starts`` did not
    move), so the measured runs see warm environments only."""
    if target.starts is None:
        await run_load(target.url, connections=connections, seconds=window)
        return
    deadline = time.monotonic() + within
    while True:
        before = await target.starts()
        await run_load(target.url, connections=connections, seconds=window)
        after = await target.starts()
        if after == before:
            return
        if time.monotonic() > deadline:
            ctx.notes.append(f"{name} still starting environments or processes after {within:g}s of "
                             f"warm-up at {connections} connections ({after:.0f} so far)")
            return


async def measure(ctx: Ctx, targets: dict[str, Target], connections: int, seconds: float, rounds: int,
                  warm_s: float) -> Measured:
    """Warm every target, then ``rounds`` interleaved runs of each; CPU per request of front and back."""
    for name, t in targets.items():
        await warm(ctx, name, t, connections, warm_s, within=60.0)
    out = Measured({k: [] for k in targets}, {k: [] for k in targets})
    for _ in range(rounds):
        for name, t in targets.items():
            front, back = t.pids()
            f0, b0 = cpu_seconds(front), cpu_seconds(back)
            res = await run_load(t.url, connections=connections, seconds=seconds)
            f1, b1 = cpu_seconds(front), cpu_seconds(back)
            out.load[name].append(res)
            n = max(res.requests, 1)
            out.cpu[name].append(((f1 - f0) / n * 1e6, (b1 - b0) / n * 1e6))
    return out


def router_target(proc_pid: int, base: str, path: str) -> Target:
    return Target(base + path, lambda: ([proc_pid], descendants(proc_pid)), cold_starts(base))


def offline_target(proc_pid: int, base: str, path: str, python: bool) -> Target:
    """serverless-offline: the node process in front, its python handler processes behind; warmed until
    no new handler process starts (node handlers run inside the node process)."""
    starts = process_count(lambda: handler_processes(proc_pid)) if python else None
    return Target(base + path, lambda: ([proc_pid], descendants(proc_pid)), starts)


def offline_processes_note(pid: int) -> str:
    kids = descendants(pid)
    py = handler_processes(pid)
    return (f"serverless-offline: 1 node process + {len(py)} python handler processes "
            f"({len(kids)} child processes in all: each python under an sh -c)")


async def run(ctx: Ctx) -> list[Row]:
    rounds, seconds, warm_s = (1, 3.0, 2.0) if ctx.quick else (3, 8.0, 3.0)
    rows: list[Row] = []
    async with contextlib.AsyncExitStack() as stack:
        fn_proc, fn_url = await stack.enter_async_context(
            running_bare(ctx, "bare function", "bare_function.py"))
        px_proc, proxy_url = await stack.enter_async_context(
            running_bare(ctx, "bare proxy", "bare_proxy.py", "--upstream", fn_url))
        router_proc, router_url = await stack.enter_async_context(running_router(ctx, "http"))
        targets = {
            "router": router_target(router_proc.pid, router_url, "/ok"),
            "proxy": Target(proxy_url + "/ok", lambda: ([px_proc.pid], [fn_proc.pid])),
            "direct": Target(fn_url + "/ok", lambda: ([fn_proc.pid], [])),
        }
        client = ""
        if ctx.wants("1"):
            why = await serverless_offline(ctx)
            sls_pid = 0
            fns = [PeerFunction("ok_py", OK_CODE, "python3.11", "/ok")]
            started = None if why else await start_offline(ctx, stack, "offline-1", fns)
            if started:
                sls_pid, sls_url = started
                targets["serverless-offline"] = offline_target(sls_pid, sls_url, "/ok", python=True)
            else:
                why = why or "it did not start"
            ctx.say(f"1: 32 connections, {rounds} x {seconds:g}s per target ({', '.join(targets)})")
            m = await measure(ctx, targets, 32, seconds, rounds, warm_s)
            # Counted at the end of the run, while every environment is still warm.
            envs = await environments(router_url, "ok")
            router_kids = len(descendants(router_proc.pid))
            sls_envs = len(handler_processes(sls_pid)) if sls_pid else None
            sls_kids = len(descendants(sls_pid)) if sls_pid else 0
            sls_note = offline_processes_note(sls_pid) if sls_pid else f"serverless-offline skipped: {why}"
            client = m.load["router"][0].client
            rps, p50, p99, front, back = m.rps(), m.p50(), m.p99(), m.front(), m.back()
            s = "1 webhook sync, 32 conn"
            ratio = rps["router"] / rps["proxy"] if rps["proxy"] else None
            sls_rps = rps.get("serverless-offline")
            sls_ratio = rps["router"] / sls_rps if sls_rps else None
            total = {k: front[k] + back[k] for k in front}
            rows += [
                Row(s, "throughput (2xx/s)", "req/s", rps["router"], "bare proxy", rps["proxy"],
                    target=">= 0.8x proxy", ok=at_least(ratio, 0.8), note=m.errors_note()),
                Row(s, "throughput vs serverless-offline", "req/s", rps["router"],
                    "serverless-offline, python", sls_rps, target=">= 2.0x serverless-offline",
                    ok=at_least(sls_ratio, 2.0), note="" if sls_rps else sls_note),
                Row(s, "throughput vs function alone", "req/s", rps["router"], "bare function",
                    rps["direct"]),
                Row(s, "latency p50", "ms", p50["router"], "bare proxy", p50["proxy"]),
                Row(s, "latency p50 vs serverless-offline", "ms", p50["router"],
                    "serverless-offline, python", p50.get("serverless-offline")),
                Row(s, "latency p99", "ms", p99["router"], "bare proxy", p99["proxy"]),
                Row(s, "CPU per request, front process", "us", front["router"], "bare proxy", front["proxy"],
                    note="router process vs proxy process, user+system CPU / responses"),
                Row(s, "CPU per request, function side", "us", back["router"], "bare function",
                    back["proxy"], note="all environments of the router vs the one bare function process"),
                Row(s, "CPU per request, all processes", "us", total["router"], "serverless-offline, python",
                    total.get("serverless-offline"), note="router + its environments vs serverless-offline's "
                    "node process + its python processes"),
                Row(s, "environments at 32 connections", "count", envs, "serverless-offline, python",
                    sls_envs, note=f"router: router_environments{{function=ok}} at the end of the run, "
                    f"{router_kids} processes under the router; {sls_note}"),
                Row(s, "processes at 32 connections", "count", 1 + router_kids, "serverless-offline, python",
                    1 + sls_kids if sls_pid else None,
                    note="the server process and every process under it, at the end of the run"),
            ]
        if ctx.wants("2"):
            ctx.say(f"2: 1 connection, {rounds} x {seconds:g}s per target")
            two = {k: targets[k] for k in ("router", "proxy", "direct")}
            m = await measure(ctx, two, 1, seconds, rounds, warm_s)
            client = m.load["router"][0].client
            p50, p99 = m.p50(), m.p99()
            added, proxy_added = p50["router"] - p50["direct"], p50["proxy"] - p50["direct"]
            s = "2 webhook sync, 1 conn"
            rows += [
                Row(s, "added p50 over direct call", "ms", added, "bare proxy hop", proxy_added,
                    target="<= 0.4 ms", ok=at_most(added, 0.4), note=m.errors_note()),
                Row(s, "latency p50", "ms", p50["router"], "bare function", p50["direct"]),
                Row(s, "latency p99", "ms", p99["router"], "bare function", p99["direct"]),
            ]
        if client and client != "wrk":
            ctx.notes.append("scenarios 1-2 used the aiohttp fallback client (wrk missing)")
    return rows
