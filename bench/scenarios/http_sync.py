"""Scenarios 1 and 2: a sync webhook to the trivial python handler, beside a bare aiohttp proxy in front of a
bare aiohttp function (the same two-process shape) and the bare function called directly.

Runs are interleaved (router, proxy, direct, router, ...) and each figure is the median over rounds, so
a slow moment of the machine hits all three alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from bench.harness import Ctx, cpu_seconds, descendants, metric_sum
from bench.load import LoadResult, run_load
from bench.report import Row, at_least, at_most
from bench.router_proc import running_bare, running_router

TARGETS = ("router", "proxy", "direct")


def _med(results: list[LoadResult], key: Callable[[LoadResult], float]) -> float:
    return statistics.median(key(r) for r in results)


def _errors_note(results: dict[str, list[LoadResult]]) -> str:
    parts = []
    for name, rs in results.items():
        errs, total = sum(r.errors for r in rs), sum(r.requests for r in rs)
        if errs:
            parts.append(f"{name}: {errs} of {total} responses were errors (non-2xx/3xx or socket errors)")
    return "; ".join(parts)


async def warm_router(ctx: Ctx, base: str, url: str, connections: int, window: float, within: float) -> None:
    """Drive ``url`` in ``window``-second runs until one run started no environment (the router's
    ``router_cold_starts_total`` did not move), so the measured runs see warm environments only."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as s:
        while True:
            before = await metric_sum(s, base, "router_cold_starts_total")
            await run_load(url, connections=connections, seconds=window)
            after = await metric_sum(s, base, "router_cold_starts_total")
            if after == before:
                return
            if time.monotonic() > deadline:
                ctx.notes.append(f"router still starting environments after {within:g}s of warm-up "
                                 f"at {connections} connections ({after:.0f} cold starts so far)")
                return


Pids = Callable[[], tuple[list[int], list[int]]]
"""The front process (router, proxy) and the back processes (environments, function) of a target."""


@dataclass
class Measured:
    load: dict[str, list[LoadResult]] = field(default_factory=dict)
    cpu: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # us/request: front, back


async def _measure(ctx: Ctx, router_base: str, urls: dict[str, str], pids: dict[str, Pids],
                   connections: int, seconds: float, rounds: int, warm: float) -> Measured:
    await warm_router(ctx, router_base, urls["router"], connections, warm, within=60.0)
    for name, url in urls.items():
        if name != "router":
            await run_load(url, connections=connections, seconds=warm)
    out = Measured({k: [] for k in urls}, {k: [] for k in urls})
    for _ in range(rounds):
        for name, url in urls.items():
            front, back = pids[name]()
            f0, b0 = cpu_seconds(front), cpu_seconds(back)
            res = await run_load(url, connections=connections, seconds=seconds)
            f1, b1 = cpu_seconds(front), cpu_seconds(back)
            out.load[name].append(res)
            n = max(res.requests, 1)
            out.cpu[name].append(((f1 - f0) / n * 1e6, (b1 - b0) / n * 1e6))
    return out


async def run(ctx: Ctx) -> list[Row]:
    rounds, seconds, warm = (1, 3.0, 2.0) if ctx.quick else (3, 8.0, 3.0)
    rows: list[Row] = []
    async with (
        running_bare(ctx, "bare function", "bare_function.py") as (fn_proc, fn_url),
        running_bare(ctx, "bare proxy", "bare_proxy.py", "--upstream", fn_url) as (px_proc, proxy_url),
        running_router(ctx, "http") as (router_proc, router_url),
    ):
        urls = {"router": router_url + "/ok", "proxy": proxy_url + "/ok", "direct": fn_url + "/ok"}
        pids: dict[str, Pids] = {
            "router": lambda: ([router_proc.pid], descendants(router_proc.pid)),
            "proxy": lambda: ([px_proc.pid], [fn_proc.pid]),
            "direct": lambda: ([fn_proc.pid], []),
        }
        client = ""
        if ctx.wants("1"):
            ctx.say(f"1: 32 connections, {rounds} x {seconds:g}s per target")
            m = await _measure(ctx, router_url, urls, pids, 32, seconds, rounds, warm)
            res = m.load
            client = res["router"][0].client
            front = {k: statistics.median(c[0] for c in v) for k, v in m.cpu.items()}
            back = {k: statistics.median(c[1] for c in v) for k, v in m.cpu.items()}
            rps = {k: _med(v, lambda r: r.ok_rps) for k, v in res.items()}
            p50 = {k: _med(v, lambda r: r.p50_ms) for k, v in res.items()}
            p99 = {k: _med(v, lambda r: r.p99_ms) for k, v in res.items()}
            s = "1 webhook sync, 32 conn"
            ratio = rps["router"] / rps["proxy"] if rps["proxy"] else None
            rows += [
                Row(s, "throughput (2xx/s)", "req/s", rps["router"], "bare proxy", rps["proxy"],
                    target=">= 0.8x proxy", ok=at_least(ratio, 0.8), note=_errors_note(res)),
                Row(s, "throughput vs function alone", "req/s", rps["router"], "bare function",
                    rps["direct"]),
                Row(s, "latency p50", "ms", p50["router"], "bare proxy", p50["proxy"]),
                Row(s, "latency p99", "ms", p99["router"], "bare proxy", p99["proxy"]),
                Row(s, "CPU per request, front process", "us", front["router"], "bare proxy", front["proxy"],
                    note="router process vs proxy process, user+system CPU / responses"),
                Row(s, "CPU per request, function side", "us", back["router"], "bare function",
                    back["proxy"], note="all environments of the router vs the one bare function process"),
            ]
        if ctx.wants("2"):
            ctx.say(f"2: 1 connection, {rounds} x {seconds:g}s per target")
            res = (await _measure(ctx, router_url, urls, pids, 1, seconds, rounds, warm)).load
            client = res["router"][0].client
            p50 = {k: _med(v, lambda r: r.p50_ms) for k, v in res.items()}
            p99 = {k: _med(v, lambda r: r.p99_ms) for k, v in res.items()}
            added, proxy_added = p50["router"] - p50["direct"], p50["proxy"] - p50["direct"]
            s = "2 webhook sync, 1 conn"
            rows += [
                Row(s, "added p50 over direct call", "ms", added, "bare proxy hop", proxy_added,
                    target="<= 0.6 ms", ok=at_most(added, 0.6), note=_errors_note(res)),
                Row(s, "latency p50", "ms", p50["router"], "bare function", p50["direct"]),
                Row(s, "latency p99", "ms", p99["router"], "bare function", p99["direct"]),
            ]
        if client and client != "wrk":
            ctx.notes.append("scenarios 1-2 used the aiohttp fallback client (wrk missing)")
    return rows
