"""Scenario 10: Kinesis -> function records/s, on a moto_server started here.

One stream of ``SHARDS`` shards holding ``N`` records (written before either side reads). Router side:
``router run`` with one ``type: kinesis`` route (TRIM_HORIZON, batch_size 100, parallelization 1)
invoking the trivial python handler, with ``provisioned: SHARDS`` environments (one per shard, warm
before the route starts reading: the loop has no function, so cold starts would be a cost only one side
pays; scenario 4 measures them); progress is read from its metrics every 50 ms: records read
(``router_source_events_total``) and batches run (``router_invocations_total``); the run ends at the
last new invocation after every record was read. Baseline: bench/servers/bare_kinesis.py, one
GetRecords loop per shard over the same stream, same run, nothing done with the records.

Both sides keep Kinesis' read quota (5 GetRecords calls a second per shard) and read up to 500 records a
call (what the router asks for a batch size of 100). Start-up is left out of both rates: the router's
counts from its first sample that shows records read, the loop's from the moment every shard returned its
first page (bench/servers/bare_kinesis.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.harness import (
    BENCH_DIR,
    HOST,
    PYTHON,
    BenchError,
    Ctx,
    ServerProcess,
    cpu_seconds,
    free_port,
    metric_sum,
)
from bench.report import Row, at_least
from bench.router_proc import router_config
from bench.scenarios.sqs import CREDENTIALS, REGION, aws_client, running_moto

SHARDS = 4
BATCH = 100
READ_LIMIT = 500  # the router's GetRecords Limit for batch_size 100 (router/sources/stream/shard.py)
DEADLINE = 90.0  # seconds either side may take at most


async def new_stream(client: Any, shards: int = SHARDS) -> str:
    """A new empty stream of ``shards`` shards; returns its ARN."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    await client.create_stream(StreamName=name, ShardCount=shards)
    summary = await client.describe_stream_summary(StreamName=name)
    arn: str = summary["StreamDescriptionSummary"]["StreamARN"]
    return arn


async def load(client: Any, n: int) -> str:
    """A new stream of SHARDS shards holding ``n`` small JSON records; returns its ARN."""
    arn = await new_stream(client)
    await write_records(client, arn, n)
    return arn


async def write_records(client: Any, arn: str, n: int) -> None:
    """``n`` small JSON records (``{"n": i}``, partition key ``k<i>``) into the stream, 500 a call."""
    for i in range(0, n, 500):
        resp = await client.put_records(StreamARN=arn, Records=[
            {"Data": json.dumps({"n": i + j}).encode(), "PartitionKey": f"k{i + j}"}
            for j in range(min(500, n - i))])
        if resp["FailedRecordCount"]:
            raise BenchError(f"PutRecords failed for {resp['FailedRecordCount']} records")


@contextlib.asynccontextmanager
async def running_router(ctx: Ctx, endpoint: str, route: dict[str, Any]
                         ) -> AsyncIterator[tuple[ServerProcess, str]]:
    """``router run`` with bench/router_proc.py's config, ``aws.endpoint_url``, ``route``, and SHARDS
    provisioned environments of ``ok`` (started before the route reads); stopped at the end."""
    work = ctx.tmp / "kinesis"
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = router_config(port, work, [route])
    cfg["functions"]["ok"]["provisioned"] = SHARDS
    cfg["aws"] = {"region": REGION, "endpoint_url": endpoint}
    path = work / "router.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = ServerProcess("router (kinesis)", [PYTHON, "-m", "router", "run", "--config", str(path)],
                         log_path=work / "router.log", env=CREDENTIALS)
    base = f"http://{HOST}:{port}"
    try:
        async with proc:
            await proc.wait_http(base + "/readyz")
            yield proc, base
    finally:
        ctx.leaked.extend(proc.leaked)


async def progress(session: aiohttp.ClientSession, base: str) -> tuple[float, float]:
    """(records read, invocations of ``ok``) from one scrape of the router's /metrics (the sampling is
    the router's cost only, the loop has none: one scrape a sample, not one per counter)."""
    async with session.get(base + "/metrics") as r:
        text = await r.text()
    read = runs = 0.0
    for fam in text_string_to_metric_families(text):
        for m in fam.samples:
            if m.name == "router_source_events_total" and m.labels.get("route") == "kin":
                read += m.value
            elif m.name == "router_invocations_total" and m.labels.get("function") == "ok":
                runs += m.value
    return read, runs


async def router_side(base: str, n: int) -> tuple[float | None, float, float]:
    """Sample the router's counters until it ran the last batch; (records/s, records, t_end)."""
    samples: list[tuple[float, float, float]] = []  # (time, records read, invocations)
    deadline = time.monotonic() + DEADLINE
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            read, runs = await progress(s, base)
            samples.append((time.monotonic(), read, runs))
            if read >= n and len(samples) > 6 and all(x[2] == runs for x in samples[-6:]):
                break  # every record read, no new batch for 0.3 s
            await asyncio.sleep(0.05)  # sampling interval
    first = next(((t, r) for t, r, _ in samples if r > 0), None)
    if first is None or samples[-1][1] < n:
        return None, samples[-1][1] if samples else 0.0, time.monotonic()
    last_run = samples[-1][2]
    t_end = next(t for t, _, runs in samples if runs >= last_run)
    if t_end <= first[0]:
        return None, n, t_end
    return (n - first[1]) / (t_end - first[0]), n, t_end


async def run(ctx: Ctx) -> list[Row]:
    n = 10_000 if ctx.quick else 20_000
    ctx.say(f"10: Kinesis, {n} records in {SHARDS} shards, batch {BATCH}")
    notes: list[str] = []
    async with running_moto(ctx) as endpoint, aws_client("kinesis", endpoint) as client:
        t0 = time.monotonic()
        arn = await load(client, n)
        ctx.say(f"10: stream written in {time.monotonic() - t0:.1f}s")
        route = {"name": "kin", "function": "ok",
                 "source": {"type": "kinesis", "stream_arn": arn, "starting_position": "TRIM_HORIZON",
                            "batch_size": BATCH}}
        async with running_router(ctx, endpoint, route) as (rproc, base):
            c0 = cpu_seconds([rproc.pid])
            r_rate, r_read, _ = await router_side(base, n)
            cpu = cpu_seconds([rproc.pid]) - c0
            async with aiohttp.ClientSession() as session:
                errors = await metric_sum(session, base, "router_invocations_total", function="ok",
                                          outcome="error")
        if r_rate is None:
            notes.append(f"the router read {r_read:.0f} of {n} records within {DEADLINE:g}s")
        if errors:
            notes.append(f"{errors:.0f} router batches failed")

        bare = ServerProcess("bare kinesis", [
            PYTHON, str(BENCH_DIR / "servers" / "bare_kinesis.py"), "--endpoint", endpoint,
            "--stream-arn", arn, "--count", str(n), "--limit", str(READ_LIMIT),
            "--seconds", str(DEADLINE)], log_path=ctx.tmp / "bare_kinesis.log", env=CREDENTIALS)
        async with bare:
            assert bare.proc is not None
            code = await asyncio.wait_for(bare.proc.wait(), DEADLINE + 30)
            if code != 0:
                raise BenchError(f"bare_kinesis.py failed with status {code}:\n{bare.tail()}")
            result = json.loads(bare.tail(1))
        if result["records"] < n:
            notes.append(f"the bare loop read {result['records']} of {n} records within {DEADLINE:g}s")
    b_rate = float(result["rate"]) or None
    ratio = r_rate / b_rate if r_rate is not None and b_rate else None
    s = f"10 Kinesis -> function, {SHARDS} shards, batch {BATCH}"
    return [
        Row(s, f"records/s ({n:,} records)", "events/s", r_rate, "aiobotocore GetRecords loop", b_rate,
            target=">= 0.8 of the loop", ok=at_least(ratio, 0.8),
            note="; ".join([*notes, "both at Kinesis' 5 reads/s per shard, 500 records a read"])),
        Row(s, "router CPU per record", "us", cpu / n * 1e6 if r_rate is not None else None,
            note="router process only, from readiness to the last batch; the function's environments "
            "(one per shard) are provisioned, warm before the route reads"),
    ]
