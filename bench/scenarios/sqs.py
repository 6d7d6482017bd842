"""Scenario 9: SQS -> function throughput, at a fixed queue depth, on a moto_server started here.

Router side: ``router run`` with one ``type: sqs`` route (batch_size 10, max_concurrency 5) invoking the
trivial python handler. Baseline: bench/servers/bare_sqs.py, 5 aiobotocore loops of ReceiveMessage(10,
long poll) + DeleteMessageBatch, on another queue of the same moto server, in the same run.

moto's SQS costs O(queue depth) per message sent and received (every SendMessage and every received
message recomputes the queue's attributes by scanning all its messages), so the rate depends on the
depth far more than on the consumer. Both sides are therefore measured at the same fixed depth: a
keeper tops the queue up to ``DEPTH`` visible messages every 0.1 s, and messages/s = messages deleted
(sent - visible - in flight) per second over the measuring window, after a warm-up. Router CPU per
message = CPU of the router process (not its function environments) over the window / messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from bench.harness import BENCH_DIR, HOST, PYTHON, BenchError, Ctx, ServerProcess, cpu_seconds, free_port
from bench.report import Row, at_least, at_most
from bench.router_proc import router_config

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": REGION}
DEPTH = 100  # visible messages kept on the queue while measuring (DESIGN §8 quotes moto at depth 100)
CONCURRENCY = 5  # router max_concurrency and bare loops


@contextlib.asynccontextmanager
async def running_moto(ctx: Ctx) -> AsyncIterator[str]:
    """A moto_server on a free loopback port for this scenario; yields its URL; stopped at the end."""
    exe = Path(PYTHON).with_name("moto_server")
    command = str(exe) if exe.exists() else shutil.which("moto_server")
    if command is None:
        raise BenchError("moto_server not found; pip install 'moto[server]' into the venv")
    port = free_port()
    proc = ServerProcess("moto_server", [command, "-H", HOST, "-p", str(port)],
                         log_path=ctx.tmp / f"moto_{port}.log")
    url = f"http://{HOST}:{port}"
    try:
        async with proc:
            await proc.wait_http(url + "/moto-api/")
            yield url
    finally:
        ctx.leaked.extend(proc.leaked)


def aws_client(service: str, endpoint: str, pool: int = 10) -> Any:
    """An aiobotocore client context for the bench's own calls (dummy credentials, no retries hidden)."""
    return get_session().create_client(
        service, region_name=REGION, endpoint_url=endpoint, aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=AioConfig(max_pool_connections=pool, retries={"max_attempts": 3, "mode": "standard"}))


@contextlib.asynccontextmanager
async def running_aws_router(ctx: Ctx, name: str, endpoint: str, routes: list[dict[str, Any]]
                             ) -> AsyncIterator[tuple[ServerProcess, str]]:
    """``router run`` with bench/router_proc.py's config plus ``aws.endpoint_url`` and ``routes``."""
    work = ctx.tmp / name
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = router_config(port, work, routes)
    cfg["aws"] = {"region": REGION, "endpoint_url": endpoint}
    path = work / "router.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = ServerProcess(f"router ({name})", [PYTHON, "-m", "router", "run", "--config", str(path)],
                         log_path=work / "router.log", env=CREDENTIALS)
    base = f"http://{HOST}:{port}"
    try:
        async with proc:
            await proc.wait_http(base + "/readyz")
            yield proc, base
    finally:
        ctx.leaked.extend(proc.leaked)


class DepthKeeper:
    """Keeps ``depth`` visible messages on a queue and records (time, messages deleted so far)."""

    def __init__(self, client: Any, queue_url: str, depth: int) -> None:
        self.client, self.queue_url, self.depth = client, queue_url, depth
        self.sent = 0
        self.samples: list[tuple[float, int]] = []

    async def top_up(self) -> None:
        attrs = (await self.client.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        ))["Attributes"]
        visible = int(attrs["ApproximateNumberOfMessages"])
        in_flight = int(attrs["ApproximateNumberOfMessagesNotVisible"])
        self.samples.append((time.monotonic(), self.sent - visible - in_flight))
        missing = self.depth - visible
        while missing > 0:
            n = min(10, missing)
            resp = await self.client.send_message_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(i), "MessageBody": json.dumps({"n": self.sent + i})} for i in range(n)])
            if resp.get("Failed"):
                raise BenchError(f"SendMessageBatch failed: {resp['Failed'][:1]}")
            self.sent += n
            missing -= n

    async def keep(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.top_up()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)  # top-up interval

    def rate(self, t0: float, t1: float) -> tuple[float, int]:
        """Messages deleted per second between the samples nearest after ``t0`` and before ``t1``."""
        window = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(window) < 2:
            return 0.0, 0
        (ta, ca), (tb, cb) = window[0], window[-1]
        return (cb - ca) / (tb - ta), cb - ca


async def measure(keeper: DepthKeeper, warm: float, window: float, pids: list[int] | None = None
                  ) -> tuple[float, int, float]:
    """Keep the depth for ``warm + window`` seconds; (msgs/s, messages, CPU seconds of ``pids``) over
    the window."""
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(keeper.keep(stop))
        await asyncio.sleep(warm)  # warm-up of fixed length before the window, not synchronisation
        t0 = time.monotonic()
        c0 = cpu_seconds(pids or [])
        await asyncio.sleep(window)  # the measuring window itself
        c1 = cpu_seconds(pids or [])
        t1 = time.monotonic()
        stop.set()
    rate, n = keeper.rate(t0, t1)
    return rate, n, c1 - c0


async def run(ctx: Ctx) -> list[Row]:
    rounds, warm, window = (1, 3.0, 6.0) if ctx.quick else (2, 3.0, 10.0)
    ctx.say(f"9: SQS at depth {DEPTH}, {CONCURRENCY} pollers, {rounds} x {window:g}s a side")
    router_rates: list[float] = []
    bare_rates: list[float] = []
    cpu_us: list[float] = []
    bare_cpu_us: list[float] = []
    notes: list[str] = []
    async with running_moto(ctx) as endpoint, aws_client("sqs", endpoint) as client:
        for r in range(rounds):
            tag = uuid.uuid4().hex[:8]
            q_router = (await client.create_queue(QueueName=f"bench-router-{tag}",
                                                  Attributes={"VisibilityTimeout": "60"}))["QueueUrl"]
            q_bare = (await client.create_queue(QueueName=f"bench-bare-{tag}",
                                                Attributes={"VisibilityTimeout": "60"}))["QueueUrl"]
            keeper = DepthKeeper(client, q_router, DEPTH)
            await keeper.top_up()
            route = {"name": "sqs", "function": "ok",
                     "source": {"type": "sqs", "queue_url": q_router, "batch_size": 10,
                                "max_concurrency": CONCURRENCY}}
            async with running_aws_router(ctx, f"sqs{r}", endpoint, [route]) as (rproc, _base):
                rate, n, cpu = await measure(keeper, warm, window, [rproc.pid])
            router_rates.append(rate)
            if n:
                cpu_us.append(cpu / n * 1e6)

            keeper = DepthKeeper(client, q_bare, DEPTH)
            await keeper.top_up()
            bare = ServerProcess("bare sqs", [
                PYTHON, str(BENCH_DIR / "servers" / "bare_sqs.py"), "--endpoint", endpoint,
                "--queue-url", q_bare, "--count", str(10**9), "--concurrency", str(CONCURRENCY),
                "--seconds", str(warm + window + 2)], log_path=ctx.tmp / f"bare_sqs{r}.log", env=CREDENTIALS)
            async with bare:
                rate, n, cpu = await measure(keeper, warm, window, [bare.pid])
                assert bare.proc is not None
                if bare.proc.returncode not in (None, 0):
                    raise BenchError(f"bare_sqs.py failed:\n{bare.tail()}")
            bare_rates.append(rate)
            if n:
                bare_cpu_us.append(cpu / n * 1e6)
            for q in (q_router, q_bare):
                await client.delete_queue(QueueUrl=q)
    r_rate = statistics.median(router_rates)
    b_rate = statistics.median(bare_rates)
    if not r_rate:
        notes.append("the router deleted no message in the window; see its log with --keep")
    s = "9 SQS -> function, batch 10"
    ratio = r_rate / b_rate if b_rate else None
    cpu = statistics.median(cpu_us) if cpu_us else None
    bare_cpu = statistics.median(bare_cpu_us) if bare_cpu_us else None
    return [
        Row(s, f"msgs/s at depth {DEPTH}, {CONCURRENCY} pollers", "events/s", r_rate,
            "aiobotocore receive/delete loop", b_rate, target=">= 0.9 of the loop",
            ok=at_least(ratio, 0.9), note="; ".join(
                [*notes, "moto is the bottleneck on both sides (O(depth) per message)"])),
        Row(s, "router CPU per message", "us", cpu, "the loop's CPU", bare_cpu, target="<= 300 us",
            ok=at_most(cpu, 300), note="router process only (not its function environments), over the "
            "window, messages counted as deleted; at moto's rate the pollers' fixed costs weigh in"),
    ]
