"""Scenario 8: schedule fire lag. Ten ``rate: 1s`` schedule routes (all due at the same instants, like
cron jobs at :00) invoking ``sink`` asynchronously; lag = actual fire time - nominal fire time, read from
the router's ``router_schedule_lag_seconds`` histogram (so p99 is known to a bucket: "<= bound").

Baseline: ten asyncio timers in the bench process sleeping until the same whole seconds, lag measured
the same way (what the event loop alone gives).
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.harness import Ctx
from bench.report import Row, at_most
from bench.router_proc import running_router

ROUTES = 10


async def lag_histogram(base: str) -> tuple[list[tuple[float, float]], float, float]:
    """Cumulative buckets (le, count) summed over routes, total count and sum, from /metrics."""
    buckets: dict[float, float] = {}
    count = total = 0.0
    async with aiohttp.ClientSession() as s, s.get(base + "/metrics") as r:
        text = await r.text()
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            if smp.name == "router_schedule_lag_seconds_bucket":
                le = float(smp.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + smp.value
            elif smp.name == "router_schedule_lag_seconds_count":
                count += smp.value
            elif smp.name == "router_schedule_lag_seconds_sum":
                total += smp.value
    return sorted(buckets.items()), count, total


def bucket_quantile(buckets: list[tuple[float, float]], count: float, q: float) -> float | None:
    """Upper bound of the bucket holding quantile ``q``."""
    for le, c in buckets:
        if count and c >= q * count:
            return le
    return None


async def _bare_lags(seconds: float) -> list[float]:
    lags: list[float] = []

    async def timer() -> None:
        end = time.time() + seconds
        while True:
            nominal = math.floor(time.time()) + 1
            if nominal > end:
                return
            await asyncio.sleep(nominal - time.time())
            lags.append(max(0.0, time.time() - nominal))

    async with asyncio.TaskGroup() as tg:
        for _ in range(ROUTES):
            tg.create_task(timer())
    return lags


async def run(ctx: Ctx) -> list[Row]:
    seconds = 5.0 if ctx.quick else 20.0
    ctx.say(f"8: {ROUTES} schedules at rate 1s for {seconds:g}s")
    routes = [{"name": f"tick{i}", "source": {"type": "schedule", "rate": "1s"}, "function": "sink",
               "invocation": "async"} for i in range(ROUTES)]
    async with running_router(ctx, "schedule", routes) as (_r, base):
        bare = await _bare_lags(seconds)  # the router's schedules fire meanwhile
        buckets, count, total = await lag_histogram(base)
    p99 = bucket_quantile(buckets, count, 0.99)
    p50 = bucket_quantile(buckets, count, 0.50)
    bare_p99 = statistics.quantiles(bare, n=100, method="inclusive")[98] if len(bare) > 1 else None
    s = "8 schedule, 10 x rate 1s"
    note = (f"{count:.0f} fires; mean {total / count * 1000:.2f} ms; p50 <= {p50 * 1000:g} ms (bucket)"
            if count and p50 is not None else "no fire recorded")
    return [
        Row(s, "fire lag p99 (histogram bucket bound)", "ms", None if p99 is None else p99 * 1000,
            "asyncio timers", None if bare_p99 is None else bare_p99 * 1000, target="<= 50 ms",
            ok=at_most(None if p99 is None else p99 * 1000, 50), note=note),
    ]
