"""Scenario 11: AMQP -> function throughput, on the machine's RabbitMQ.

Two queues (unique names, durable, classic; deleted at the end) each get ``N`` small messages before
their consumer starts. Router side: ``router run`` with one ``type: amqp`` route (prefetch 50,
batch_size 10, ``declare: false``) invoking the trivial python handler; progress is its
``router_amqp_messages_total{outcome="acked"}`` sampled every 50 ms. Baseline: bench/servers/bare_amqp.py,
an aio-pika consumer with the same prefetch acking each message, same broker, same run. Both rates are
messages acked after the first sample (first ack) / time from there to the last ack.

The broker: ``ROUTER_TEST_AMQP_URL`` (default amqp://guest:guest@127.0.0.1:5672/); the scenario is
skipped with a note when it does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator

import aio_pika
import aiohttp

from bench.harness import BENCH_DIR, PYTHON, BenchError, Ctx, ServerProcess, cpu_seconds, metric_sum
from bench.report import Row, at_least
from bench.router_proc import running_router

AMQP_URL = os.environ.get("ROUTER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PREFETCH = 50
BATCH = 10
DEADLINE = 90.0  # seconds either side may take at most


@contextlib.asynccontextmanager
async def queues(n_queues: int, n_messages: int) -> AsyncIterator[list[str]]:
    """``n_queues`` new durable queues holding ``n_messages`` each (publisher confirms); always deleted."""
    try:
        connection = await aio_pika.connect(AMQP_URL, timeout=5)
    except Exception as exc:  # aiormq raises several unrelated types for refused / auth / timeout
        raise BenchError(f"RabbitMQ not reachable ({type(exc).__name__}: {exc}); "
                         "set ROUTER_TEST_AMQP_URL") from exc
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        names = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(n_queues)]
        try:
            for name in names:
                await channel.declare_queue(name, durable=True)
                for i in range(0, n_messages, 1000):
                    await asyncio.gather(*(
                        channel.default_exchange.publish(
                            aio_pika.Message(json.dumps({"n": i + j}).encode(),
                                             content_type="application/json"), routing_key=name)
                        for j in range(min(1000, n_messages - i))))
            yield names
        finally:
            for name in names:
                with contextlib.suppress(Exception):  # best effort: a queue left behind is named bench-*
                    await channel.queue_delete(name)


async def router_side(base: str, n: int) -> tuple[float | None, float]:
    """Sample the router's acked count until ``n``; (msgs/s, acked)."""
    samples: list[tuple[float, float]] = []
    deadline = time.monotonic() + DEADLINE
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            acked = await metric_sum(s, base, "router_amqp_messages_total", route="mq", outcome="acked")
            samples.append((time.monotonic(), acked))
            if acked >= n:
                break
            await asyncio.sleep(0.05)  # sampling interval
    first = next(((t, a) for t, a in samples if a > 0), None)
    if first is None or samples[-1][1] < n or samples[-1][0] <= first[0]:
        return None, samples[-1][1] if samples else 0.0
    return (samples[-1][1] - first[1]) / (samples[-1][0] - first[0]), samples[-1][1]


async def run(ctx: Ctx) -> list[Row]:
    n = 5_000 if ctx.quick else 30_000
    ctx.say(f"11: AMQP, {n} messages a side, prefetch {PREFETCH}, batch {BATCH}")
    notes: list[str] = []
    t0 = time.monotonic()
    async with queues(2, n) as (q_router, q_bare):
        ctx.say(f"11: queues filled in {time.monotonic() - t0:.1f}s")
        route = {"name": "mq", "function": "ok",
                 "source": {"type": "amqp", "url": AMQP_URL, "queue": q_router, "prefetch": PREFETCH,
                            "batch_size": BATCH, "batch_window": 0.1, "declare": False}}
        async with running_router(ctx, "amqp", [route]) as (rproc, base):
            c0 = cpu_seconds([rproc.pid])
            r_rate, r_acked = await router_side(base, n)
            cpu = cpu_seconds([rproc.pid]) - c0
        if r_rate is None:
            notes.append(f"the router acked {r_acked:.0f} of {n} messages within {DEADLINE:g}s")

        bare = ServerProcess("bare amqp", [
            PYTHON, str(BENCH_DIR / "servers" / "bare_amqp.py"), "--url", AMQP_URL, "--queue", q_bare,
            "--count", str(n), "--prefetch", str(PREFETCH), "--seconds", str(DEADLINE)],
            log_path=ctx.tmp / "bare_amqp.log")
        async with bare:
            assert bare.proc is not None
            code = await asyncio.wait_for(bare.proc.wait(), DEADLINE + 30)
            if code != 0:
                raise BenchError(f"bare_amqp.py failed with status {code}:\n{bare.tail()}")
            result = json.loads(bare.tail(1))
        if result["acked"] < n:
            notes.append(f"the bare consumer acked {result['acked']} of {n} messages within {DEADLINE:g}s")
    b_rate = float(result["rate"]) or None
    ratio = r_rate / b_rate if r_rate is not None and b_rate else None
    s = f"11 AMQP -> function, batch {BATCH}"
    return [
        Row(s, f"msgs/s, prefetch {PREFETCH} ({n:,} messages)", "events/s", r_rate,
            "aio-pika consumer acking each", b_rate, target=">= 0.7 of the consumer",
            ok=at_least(ratio, 0.7), note="; ".join(notes)),
        Row(s, "router CPU per message", "us", cpu / n * 1e6 if r_rate is not None else None,
            note="router process only, from readiness to the last ack"),
    ]
