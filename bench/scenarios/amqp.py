"""Scenario 11: AMQP -> function throughput, on the machine's RabbitMQ.

Each round fills a new queue (unique name, durable, classic; publisher confirms; deleted at the end) with
``N`` small messages, then starts one consumer on it. Router side: ``router run`` with one ``type: amqp``
route (prefetch 50, batch_size 10, batch_window 0.1 s, ``declare: false``) invoking the trivial python
handler. Baseline: bench/servers/bare_amqp.py, an aio-pika consumer with the same prefetch acking each
message, same broker. The sides alternate router, bare, bare, router, router, bare (3 rounds a side; 1
with ``--quick``), so a busy moment of the shared machine hits both alike; the figure is the median a
side, and the note lists the ratio of each adjacent pair.

Both sides are measured the same way, from outside and at no cost to the consumer: this process reads
the queue's ready count (a passive ``queue.declare`` on its own connection) every 50 ms. With prefetch
50 the broker hands out a message only as one is acked, so the ready count falls at the ack rate. The
rate is taken from the first sample at or below 90 % of ``N`` ready (start-up, connection, the first
deliveries and the function's cold starts excluded) to the first sample with none ready. The CPU per
message of each consumer process (the router's main process with its threads, not its function
environments; the bare consumer) is read at the same two samples. Every message must then be acked
(the router's ``router_amqp_messages_total{outcome="acked"}``, read once at the end; the bare consumer's
own count) or the round fails.

An earlier version sampled the router's ``/metrics`` every 50 ms to see its progress: rendering the
whole registry 20 times a second cost the router ~5-10 % of a core and blocked its loop for milliseconds
at a time, on the side being measured only; with one round a side in a fixed order (router first), one
busy moment of the shared machine could halve the ratio (0.52x in one run, 0.94x in another).

The broker: ``ROUTER_TEST_AMQP_URL`` (default amqp://guest:guest@127.0.0.1:5672/); the scenario is
skipped with a note when it does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiohttp

from bench.harness import BENCH_DIR, PYTHON, BenchError, Ctx, ServerProcess, metric_sum
from bench.report import Row, at_least
from bench.router_proc import running_router
from bench.scenarios.sqs import CpuClock

AMQP_URL = os.environ.get("ROUTER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PREFETCH = 50
BATCH = 10
DEADLINE = 90.0  # seconds either side may take at most
SKIP = 0.1  # the first 10 % of the messages are not measured (start-up, cold starts)
SAMPLE = 0.05  # seconds between two reads of the queue's ready count


async def connect() -> Any:
    try:
        return await aio_pika.connect(AMQP_URL, timeout=5)
    except Exception as exc:  # aiormq raises several unrelated types for refused / auth / timeout
        raise BenchError(f"RabbitMQ not reachable ({type(exc).__name__}: {exc}); "
                         "set ROUTER_TEST_AMQP_URL") from exc


@contextlib.asynccontextmanager
async def filled_queue(channel: Any, n_messages: int) -> AsyncIterator[str]:
    """A new durable queue holding ``n_messages`` (publisher confirms); always deleted."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        await channel.declare_queue(name, durable=True)
        for i in range(0, n_messages, 1000):
            await asyncio.gather(*(
                channel.default_exchange.publish(
                    aio_pika.Message(json.dumps({"n": i + j}).encode(), content_type="application/json"),
                    routing_key=name)
                for j in range(min(1000, n_messages - i))))
        yield name
    finally:
        with contextlib.suppress(Exception):  # best effort: a queue left behind is named bench-*
            await channel.queue_delete(name)


async def watch(channel: Any, queue: str, n: int, pids: list[int], proc: ServerProcess
                ) -> tuple[float, float, int]:
    """Read the ready count of ``queue`` until it is 0; (msgs/s, CPU seconds of ``pids``, messages)
    between the first sample at or below ``(1 - SKIP) * n`` ready and the first with none ready."""
    passive = await channel.get_queue(queue, ensure=True)
    start: tuple[float, int] | None = None
    clock: CpuClock | None = None
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if proc.proc is None or proc.proc.returncode is not None:
            raise BenchError(f"{proc.name} exited before the queue was drained:\n{proc.tail()}")
        ready = int((await passive.declare()).message_count or 0)
        now = time.monotonic()
        if start is None and ready <= (1 - SKIP) * n:
            start, clock = (now, ready), CpuClock(pids)
        if ready == 0 and start is not None and clock is not None:
            cpu = clock.seconds()
            if now <= start[0]:
                raise BenchError(f"{proc.name}: the queue emptied between two samples; use more messages")
            return start[1] / (now - start[0]), cpu, start[1]
        await asyncio.sleep(SAMPLE)  # sampling interval, not synchronisation
    raise BenchError(f"{proc.name}: {queue} still had messages ready after {DEADLINE:g}s:\n{proc.tail()}")


async def router_round(ctx: Ctx, channel: Any, n: int, r: int) -> tuple[float, float]:
    """The router on a filled queue; (msgs/s, CPU seconds a message)."""
    async with filled_queue(channel, n) as queue:
        route = {"name": "mq", "function": "ok",
                 "source": {"type": "amqp", "url": AMQP_URL, "queue": queue, "prefetch": PREFETCH,
                            "batch_size": BATCH, "batch_window": 0.1, "declare": False}}
        async with running_router(ctx, f"amqp{r}", [route]) as (rproc, base), \
                aiohttp.ClientSession() as http:
            rate, cpu, msgs = await watch(channel, queue, n, [rproc.pid], rproc)
            acked = 0.0
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # the last prefetch-full of messages is being acked
                acked = await metric_sum(http, base, "router_amqp_messages_total", route="mq",
                                         outcome="acked")
                if acked >= n:
                    break
                await asyncio.sleep(0.2)  # polling interval, not synchronisation
            if acked < n:
                raise BenchError(f"the router acked {acked:.0f} of {n} messages; see --keep logs")
    return rate, cpu / msgs


async def bare_round(ctx: Ctx, channel: Any, n: int, r: int) -> tuple[float, float]:
    """The bare consumer on a filled queue; (msgs/s, CPU seconds a message)."""
    async with filled_queue(channel, n) as queue:
        bare = ServerProcess("bare amqp", [
            PYTHON, str(BENCH_DIR / "servers" / "bare_amqp.py"), "--url", AMQP_URL, "--queue", queue,
            "--count", str(n), "--prefetch", str(PREFETCH), "--seconds", str(DEADLINE)],
            log_path=ctx.tmp / f"bare_amqp{r}.log")
        async with bare:
            assert bare.proc is not None
            rate, cpu, msgs = await watch(channel, queue, n, [bare.pid], bare)
            # It prints its count once every message is acked, then stays until stopped (so its CPU
            # could be read after the drain, like the router's).
            deadline = time.monotonic() + DEADLINE
            while '"acked"' not in bare.tail(1):
                if bare.proc.returncode is not None or time.monotonic() > deadline:
                    raise BenchError(f"bare_amqp.py did not report its count:\n{bare.tail()}")
                await asyncio.sleep(0.05)  # polling interval, not synchronisation
            result = json.loads(bare.tail(1))
        if result["acked"] < n:
            raise BenchError(f"the bare consumer acked {result['acked']} of {n} messages")
    return rate, cpu / msgs


async def run(ctx: Ctx) -> list[Row]:
    n, rounds = (5_000, 1) if ctx.quick else (30_000, 3)
    ctx.say(f"11: AMQP, {n} messages a round, prefetch {PREFETCH}, batch {BATCH}, {rounds} rounds a side "
            "(router, bare, bare, router, ...)")
    rates: dict[str, list[float]] = {"router": [], "bare": []}
    cpus: dict[str, list[float]] = {"router": [], "bare": []}
    loads: list[float] = []
    connection = await connect()
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        order = [(side, r) for r in range(rounds)
                 for side in (("router", "bare") if r % 2 == 0 else ("bare", "router"))]
        for side, r in order:
            loads.append(os.getloadavg()[0])
            rate, cpu = await (router_round(ctx, channel, n, r) if side == "router"
                               else bare_round(ctx, channel, n, r))
            rates[side].append(rate)
            cpus[side].append(cpu)
            ctx.say(f"11: round {r} {side}: {rate:,.0f} msgs/s, {cpu * 1e6:,.0f} us CPU a message "
                    f"(load {loads[-1]:.2f})")
    r_rate, b_rate = statistics.median(rates["router"]), statistics.median(rates["bare"])
    ratio = r_rate / b_rate if b_rate else None
    each = ", ".join(f"{a / b:.2f}x" for a, b in zip(rates["router"], rates["bare"], strict=True))
    s = f"11 AMQP -> function, batch {BATCH}"
    how = (f"rate and CPU from {SKIP:.0%} of the queue consumed until none ready, read from the broker "
           "(passive declare every 50 ms) for both sides")
    return [
        Row(s, f"msgs/s, prefetch {PREFETCH} ({n:,} messages)", "events/s", r_rate,
            "aio-pika consumer acking each", b_rate, target=">= 0.8 of the consumer",
            ok=at_least(ratio, 0.8),
            note=f"{how}; median of {rounds} rounds a side, router / bare in each adjacent pair: {each}; "
                 f"load average at each round: {', '.join(f'{x:.2f}' for x in loads)}"),
        Row(s, "CPU per message", "us", statistics.median(cpus["router"]) * 1e6,
            "the consumer's CPU", statistics.median(cpus["bare"]) * 1e6,
            note="router process only (not its function environments), same window as the rate"),
    ]
