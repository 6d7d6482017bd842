"""Scenario 15: several replicas on one PostgreSQL: Kinesis records/s and async events/s with 1, 2, 3.

For each replica count k, a fresh PostgreSQL database (created here, dropped at the end) and k ``router
run`` processes with the same config, each on its own port:

- **Kinesis**: one stream of ``SHARDS`` shards, a ``type: kinesis`` route (TRIM_HORIZON, batch 100)
  invoking the trivial python handler. The replicas share the shards through their leases in the state
  store; once the leases are spread (the ``router_shard_leases`` gauges), ``N`` records are written, and
  the rate counts from the first write to the last batch run (so it cannot exceed how fast moto_server
  takes the writes: the note says how long they took). Progress is the sum over the replicas' metrics,
  sampled every 0.1 s. ``records read per record`` says whether a record was read more than once (1.00:
  each shard read by one replica).
- **async events**: ``EVENTS`` POSTs to an async webhook route, spread round-robin over the replicas
  by 32 connections, delivered to ``sink`` (concurrency 4 per replica) by whichever replica claims them;
  events/s is from the first POST to the last delivery (accept and delivery both inside).

Beside each rate: the CPU the replicas used per record/event, and how busy the machine's CPUs were
(from /proc/stat) during the window: on a 2-core machine, replicas share the same two cores with
PostgreSQL, moto_server and the load generator, so scaling flattens once they are saturated.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yaml

from bench.harness import HOST, PYTHON, BenchError, Ctx, ServerProcess, cpu_seconds, free_port, metric_sum
from bench.report import Row
from bench.router_proc import router_config
from bench.scenarios.kinesis import new_stream, write_records
from bench.scenarios.sqs import CREDENTIALS, REGION, aws_client, running_moto

SHARDS = 8
BATCH = 100
REPLICAS = (1, 2, 3)
DEADLINE = 180.0  # seconds one measurement may take at most
DSNS = ("postgresql://postgres@127.0.0.1:5432/postgres", "postgresql://root@127.0.0.1:5432/postgres")


async def admin_dsn() -> str | None:
    """A DSN of the machine's PostgreSQL that may create databases, or None when there is none."""
    for dsn in DSNS:
        with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
            conn = await asyncpg.connect(dsn, timeout=3)
            await conn.close()
            return dsn
    return None


@contextlib.asynccontextmanager
async def fresh_database(admin: str) -> AsyncIterator[str]:
    """A new empty database; yields its URL; dropped at the end (its connections ended first)."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine so far (/proc/stat's first line)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    busy, total = after[0] - before[0], after[1] - before[1]
    return busy / total if total else None


@contextlib.asynccontextmanager
async def replicas(ctx: Ctx, name: str, k: int, state: str, routes: list[dict[str, Any]],
                   functions: dict[str, dict[str, Any]] | None = None, endpoint: str | None = None
                   ) -> AsyncIterator[list[tuple[ServerProcess, str]]]:
    """``k`` routers with one config (bench/router_proc.py's plus ``routes``) on the ``state`` database;
    yields (process, base URL) of each once all answer /livez; all stopped (SIGTERM) at the end."""
    async with contextlib.AsyncExitStack() as stack:
        started: list[tuple[ServerProcess, str]] = []
        for i in range(k):
            work = ctx.tmp / f"{name}-{k}" / f"r{i}"
            work.mkdir(parents=True, exist_ok=True)
            port = free_port()
            cfg = router_config(port, work, routes)
            cfg["state"] = state
            cfg["functions"].update(functions or {})
            if endpoint is not None:
                cfg["aws"] = {"region": REGION, "endpoint_url": endpoint}
            path = work / "router.yaml"
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            proc = ServerProcess(f"router {name} {i + 1}/{k}",
                                 [PYTHON, "-m", "router", "run", "--config", str(path)],
                                 log_path=work / "router.log", env=CREDENTIALS)
            stack.callback(ctx.leaked.extend, proc.leaked)  # the list, filled when the process stops
            await stack.enter_async_context(proc)
            started.append((proc, f"http://{HOST}:{port}"))
        for proc, base in started:
            await proc.wait_http(base + "/livez", within=60.0)
        yield started


async def sum_metric(session: aiohttp.ClientSession, bases: list[str], name: str, **labels: str) -> float:
    values = await asyncio.gather(*(metric_sum(session, b, name, **labels) for b in bases))
    return sum(values)


async def timed(write: Awaitable[None]) -> float:
    """Await ``write``; the monotonic time it ended."""
    await write
    return time.monotonic()


async def balanced(session: aiohttp.ClientSession, bases: list[str]) -> bool:
    """Whether the replicas hold every shard's lease between them, spread within one."""
    held = await asyncio.gather(*(metric_sum(session, b, "router_shard_leases", route="kin") for b in bases))
    return sum(held) == SHARDS and max(held) - min(held) <= 1


async def kinesis_rate(ctx: Ctx, k: int, admin: str, endpoint: str, client: Any, n: int
                       ) -> tuple[float | None, float | None, float | None, float, str]:
    """(records/s, router CPU us per record, machine busy share, records read / n, note) for k replicas.

    The replicas start on an empty stream and the records are written once their leases are spread
    (the first replica up would otherwise take every shard and read the whole stream alone before the
    others had their share handed over); the rate counts from the first record written."""
    arn = await new_stream(client, SHARDS)
    route = {"name": "kin", "function": "ok",
             "source": {"type": "kinesis", "stream_arn": arn, "starting_position": "TRIM_HORIZON",
                        "batch_size": BATCH}}
    async with (fresh_database(admin) as state,
                replicas(ctx, "kinesis", k, state, [route], endpoint=endpoint) as procs,
                aiohttp.ClientSession() as s):
        bases = [b for _, b in procs]
        pids = [p.pid for p, _ in procs]
        deadline = time.monotonic() + DEADLINE
        while not await balanced(s, bases):
            if time.monotonic() > deadline:
                raise BenchError(f"15: {k} replicas did not spread the {SHARDS} shard leases "
                                 f"within {DEADLINE:g}s")
            await asyncio.sleep(0.2)
        samples: list[tuple[float, float, float]] = []
        c0, j0, t_w0 = cpu_seconds(pids), busy_jiffies(), time.monotonic()
        writer = asyncio.create_task(timed(write_records(client, arn, n)))
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            read = await sum_metric(s, bases, "router_source_events_total", route="kin")
            runs = await sum_metric(s, bases, "router_invocations_total", function="ok")
            samples.append((time.monotonic(), read, runs))
            if read >= n and len(samples) > 10 and all(x[2] == runs for x in samples[-10:]):
                break  # every record read, no new batch for 1 s
            await asyncio.sleep(0.1)  # sampling interval
        cpu, busy = cpu_seconds(pids) - c0, busy_share(j0, busy_jiffies())
        if not writer.done():
            writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        t_w1 = writer.result() if not writer.cancelled() else time.monotonic()
    read_total = samples[-1][1] if samples else 0.0
    if read_total < n:
        note = f"{k} replicas read {read_total:.0f} of {n} within {DEADLINE:g}s"
        return None, None, busy, read_total / n, note
    last_runs = samples[-1][2]
    t_end = next(t for t, _, runs in samples if runs >= last_runs)
    rate = n / (t_end - t_w0) if t_end > t_w0 else None
    return rate, cpu / n * 1e6, busy, read_total / n, f"records written in {t_w1 - t_w0:.1f}s"


async def async_rate(ctx: Ctx, k: int, admin: str, n: int
                     ) -> tuple[float | None, float | None, float | None, str]:
    """(events/s POST to delivered, router CPU us per event, machine busy share, note) for k replicas."""
    functions = {"sink": {**router_config(0, ctx.tmp)["functions"]["sink"], "concurrency": 4}}
    async with (fresh_database(admin) as state,
                replicas(ctx, "async", k, state, [], functions=functions) as procs,
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as s):
        bases = [b for _, b in procs]
        pids = [p.pid for p, _ in procs]
        urls = itertools.cycle([b + "/accept" for b in bases])
        todo = iter(range(n))
        errors = 0

        async def post() -> None:
            nonlocal errors
            for i in todo:
                async with s.post(next(urls), data=json.dumps({"n": i}).encode()) as r:
                    await r.read()
                    errors += r.status != 202

        c0, j0, t0 = cpu_seconds(pids), busy_jiffies(), time.monotonic()
        async with asyncio.timeout(DEADLINE):
            async with asyncio.TaskGroup() as tg:
                for _ in range(32):
                    tg.create_task(post())
        done = 0.0
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            done = await sum_metric(s, bases, "router_invocations_total", function="sink")
            if done >= n - errors:
                break
            await asyncio.sleep(0.05)
        t_end = time.monotonic()
        cpu, busy = cpu_seconds(pids) - c0, busy_share(j0, busy_jiffies())
    note = f"{errors} POSTs not answered 202" if errors else ""
    if done < n - errors:
        return None, None, busy, f"{k} replicas delivered {done:.0f} of {n - errors} within {DEADLINE:g}s"
    return (n - errors) / (t_end - t0), cpu / n * 1e6, busy, note


def _pct(x: float | None) -> str:
    return f"{x * 100:.0f} %" if x is not None else "n/a"


async def run(ctx: Ctx) -> list[Row]:
    n_records, n_events = (5_000, 1_000) if ctx.quick else (20_000, 5_000)
    admin = await admin_dsn()
    s_kin = f"15 replicas: Kinesis -> function, {SHARDS} shards, batch {BATCH}"
    s_async = "15 replicas: async webhook -> function, 32 conn"
    if admin is None:
        ctx.notes.append("15: no PostgreSQL at 127.0.0.1:5432 (roles postgres, root): replica rows n/a")
        return [Row(s_kin, "records/s, 1 replica", "events/s", None, note="no PostgreSQL"),
                Row(s_async, "events/s, 1 replica", "events/s", None, note="no PostgreSQL")]
    rows: list[Row] = []
    kin: dict[int, float | None] = {}
    ctx.say(f"15: {n_records} records in {SHARDS} shards and {n_events} async events, replicas {REPLICAS}")
    async with running_moto(ctx) as endpoint, aws_client("kinesis", endpoint) as client:
        for k in REPLICAS:
            rate, cpu, busy, dup, note = await kinesis_rate(ctx, k, admin, endpoint, client, n_records)
            kin[k] = rate
            ctx.say(f"15: kinesis, {k} replicas: {rate or 0:.0f} records/s, read x{dup:.2f}, "
                    f"CPUs {_pct(busy)}, router CPU {cpu or 0:.0f} us a record; {note}")
            base = kin[1]
            rows.append(Row(s_kin, f"records/s, {k} replica{'s' if k > 1 else ''} ({n_records:,} records)",
                            "events/s", rate, "1 replica" if k > 1 else "", base if k > 1 else None,
                            note="; ".join(x for x in (
                                note, f"records read per record {dup:.2f}",
                                f"router CPU {cpu:.0f} us a record" if cpu is not None else "",
                                f"machine CPUs busy {_pct(busy)}") if x)))
    ev: dict[int, float | None] = {}
    for k in REPLICAS:
        rate, cpu, busy, note = await async_rate(ctx, k, admin, n_events)
        ev[k] = rate
        ctx.say(f"15: async, {k} replicas: {rate or 0:.0f} events/s, CPUs {_pct(busy)}, "
                f"router CPU {cpu or 0:.0f} us an event {note}")
        rows.append(Row(s_async, f"events/s POST to delivered, {k} replica{'s' if k > 1 else ''} "
                        f"({n_events:,} events)", "events/s", rate, "1 replica" if k > 1 else "",
                        ev[1] if k > 1 else None,
                        note="; ".join(x for x in (
                            note, f"router CPU {cpu:.0f} us an event" if cpu is not None else "",
                            f"machine CPUs busy {_pct(busy)}") if x)))
    return rows
