"""Scenarios 1 and 2: a sync webhook to the trivial python handler, beside a bare aiohttp proxy in front of a
bare aiohttp function (the same two-process shape) and the bare function called directly.

Runs are interleaved (router, proxy, direct, router, ...) and each figure is the median over rounds, so
a slow moment of the machine hits all three alike.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from bench.harness import Ctx
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


async def _measure(urls: dict[str, str], connections: int, seconds: float, rounds: int,
                   warm: float) -> dict[str, list[LoadResult]]:
    for url in urls.values():
        await run_load(url, connections=connections, seconds=warm)
    out: dict[str, list[LoadResult]] = {k: [] for k in urls}
    for _ in range(rounds):
        for name, url in urls.items():
            out[name].append(await run_load(url, connections=connections, seconds=seconds))
    return out


async def run(ctx: Ctx) -> list[Row]:
    rounds, seconds, warm = (1, 3.0, 1.0) if ctx.quick else (3, 8.0, 3.0)
    rows: list[Row] = []
    async with (
        running_bare(ctx, "bare function", "bare_function.py") as (_f, fn_url),
        running_bare(ctx, "bare proxy", "bare_proxy.py", "--upstream", fn_url) as (_p, proxy_url),
        running_router(ctx, "http") as (_r, router_url),
    ):
        urls = {"router": router_url + "/ok", "proxy": proxy_url + "/ok", "direct": fn_url + "/ok"}
        client = ""
        if ctx.wants("1"):
            ctx.say(f"1: 32 connections, {rounds} x {seconds:g}s per target")
            res = await _measure(urls, 32, seconds, rounds, warm)
            client = res["router"][0].client
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
            ]
        if ctx.wants("2"):
            ctx.say(f"2: 1 connection, {rounds} x {seconds:g}s per target")
            res = await _measure(urls, 1, seconds, rounds, warm)
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
