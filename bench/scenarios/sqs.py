"""Scenario 9: SQS -> function throughput and CPU per message, on a moto_server started here.

Router side: ``router run`` with one ``type: sqs`` route (batch_size 10, max_concurrency 5) invoking the
trivial python handler. Baseline: bench/servers/bare_sqs.py, 5 aiobotocore loops of ReceiveMessage(10,
long poll) + DeleteMessageBatch, on another queue of the same moto server, in the same run.

moto's SQS costs O(queue depth) per message sent and received (every SendMessage and every received
message recomputes the queue's attributes by scanning all its messages), so the rate depends on the
depth far more than on the consumer. Throughput: a keeper tops the queue up to ``DEPTH`` visible
messages every 0.1 s, and messages/s = messages deleted (sent - visible - in flight) per second over
the measuring window, after a warm-up. In practice moto's sends are so slow that a top-up round takes
~1 s and the consumers empty the queue in between (median visible: 0), so that rate is how fast moto
takes messages in, and receives come back part-full (~5 messages, ~0.4 API calls per message).

CPU per message is therefore also measured on a backlog: ``BACKLOG`` messages queued before the
consumer starts, counted from the first samples after the first deletions (start-up and the function's
cold start excluded) while every receive can still come back full (10 messages, 0.2 calls a message):
router batch 10, router batch 100 + 1 s ``batch_window`` (what a throughput-minded user configures),
and the bare loop.

CPU = user + system CPU of the consumer process itself (the router's main process with all its
threads; not its function environments, which are child processes, nor moto, nor this process) between
two keeper samples / messages deleted between those same two samples: count and CPU are read at the
same instants, so the keeper's sampling interval cannot skew the ratio.

Where that CPU goes (py-spy, cProfile): mostly the AWS client's per-call cost, paid the same by the bare
loop: each ReceiveMessage / DeleteMessageBatch through aiobotocore costs ~3 ms of CPU on the 2-vCPU
bench machine (about 1 ms of it aiohttp opening a new TCP connection, as moto_server answers
``Connection: close``; the rest botocore serialising, signing, building the user agent twice, parsing),
and SQS caps both calls at 10 messages, so any consumer makes >= 0.2 calls per message whatever its
batch size. The router adds one invocation (Runtime API round trip, START/END/REPORT log lines) per
batch, which a ``batch_window`` spreads over up to ``batch_size`` messages.
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
BIG_BATCH, BIG_WINDOW = 100, 1.0  # the throughput-minded configuration: batch_size 100, batch_window 1 s
BACKLOG = 300  # messages queued before a consumer starts, for CPU at full batches (moto: O(depth^2) to fill)


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
    """Keeps ``depth`` visible messages on a queue and records samples of (time, messages deleted so far,
    CPU seconds used so far by ``pids``, visible messages), the count and the CPU read together. With
    ``depth`` 0 it only samples a backlog put there by ``fill``."""

    def __init__(self, client: Any, queue_url: str, depth: int, pids: list[int] | None = None) -> None:
        self.client, self.queue_url, self.depth = client, queue_url, depth
        self.pids = pids or []
        self.sent = 0
        self.samples: list[tuple[float, int, float, int]] = []

    async def fill(self, n: int) -> None:
        """Send ``n`` messages (a backlog), four SendMessageBatch calls at a time."""
        async def send(first: int, count: int) -> None:
            resp = await self.client.send_message_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(i), "MessageBody": json.dumps({"n": first + i})} for i in range(count)])
            if resp.get("Failed"):
                raise BenchError(f"SendMessageBatch failed: {resp['Failed'][:1]}")

        for start in range(0, n, 40):
            async with asyncio.TaskGroup() as tg:
                for first in range(start, min(n, start + 40), 10):
                    tg.create_task(send(self.sent + first, min(10, n - first)))
        self.sent += n

    async def top_up(self) -> None:
        attrs = (await self.client.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        ))["Attributes"]
        cpu = cpu_seconds(self.pids)  # right after the count: the same instant, give or take one call
        visible = int(attrs["ApproximateNumberOfMessages"])
        in_flight = int(attrs["ApproximateNumberOfMessagesNotVisible"])
        self.samples.append((time.monotonic(), self.sent - visible - in_flight, cpu, visible))
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

    def window(self, t0: float, t1: float, min_visible: int = 0) -> tuple[float, int, float]:
        """(messages deleted per second, messages, CPU seconds of ``pids``) between the first sample
        after ``t0`` and the last before ``t1`` that still saw ``min_visible`` messages (a backlog that
        runs out ends the window early)."""
        window = [s for s in self.samples if t0 <= s[0] <= t1]
        while window and window[-1][3] < min_visible:
            window.pop()
        if len(window) < 2:
            return 0.0, 0, 0.0
        (ta, ca, cpua, _va), (tb, cb, cpub, _vb) = window[0], window[-1]
        return (cb - ca) / (tb - ta), cb - ca, cpub - cpua


async def measure(keeper: DepthKeeper, warm: float, window: float, min_visible: int = 0
                  ) -> tuple[float, int, float]:
    """Keep the depth for ``warm + window`` seconds; (msgs/s, messages, CPU seconds of the keeper's
    ``pids``) over the window."""
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(keeper.keep(stop))
        await asyncio.sleep(warm)  # warm-up of fixed length before the window, not synchronisation
        t0 = time.monotonic()
        await asyncio.sleep(window)  # the measuring window itself
        t1 = time.monotonic()
        stop.set()
    return keeper.window(t0, t1, min_visible)


async def measure_backlog(keeper: DepthKeeper, within: float, skip: int = BIG_BATCH,
                          min_visible: int = 10 * CONCURRENCY) -> tuple[float, int, float]:
    """Sample a consumer draining the backlog ``keeper.fill`` put there (started after the fill) until
    fewer than ``min_visible`` messages are visible or ``within`` seconds passed; (msgs/s, messages, CPU
    seconds of the keeper's ``pids``) from the first sample after ``skip`` deletions (start-up, the cold
    start of the function) to the last that still saw ``min_visible`` visible (every receive full)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        await keeper.top_up()  # depth 0: only samples
        if keeper.samples[-1][3] < min_visible:
            break
        await asyncio.sleep(0.1)  # sampling interval, not synchronisation
    window = [x for x in keeper.samples if x[1] >= skip and x[3] >= min_visible]
    if len(window) < 2:
        return 0.0, 0, 0.0
    return keeper.window(window[0][0], window[-1][0], min_visible)


async def idle_cpu(pid: int, seconds: float) -> float:
    """CPU milliseconds per second ``pid`` uses over ``seconds`` (its fixed cost, spread over messages)."""
    c0, t0 = cpu_seconds([pid]), time.monotonic()
    await asyncio.sleep(seconds)  # the measuring window itself
    return (cpu_seconds([pid]) - c0) / (time.monotonic() - t0) * 1e3


def bare_counts(log_text: str) -> dict[str, float] | None:
    """The JSON line bare_sqs.py prints when it ends (also on SIGTERM), or None."""
    for line in reversed(log_text.splitlines()):
        with contextlib.suppress(ValueError):
            got = json.loads(line)
            if isinstance(got, dict) and "deletes" in got:
                return got
    return None


async def run(ctx: Ctx) -> list[Row]:
    rounds, warm, window = (1, 3.0, 6.0) if ctx.quick else (2, 3.0, 10.0)
    backlog = BACKLOG * 2 // 3 if ctx.quick else BACKLOG
    ctx.say(f"9: SQS at depth {DEPTH}, {CONCURRENCY} pollers, {rounds} x {window:g}s a side; then a backlog "
            f"of {backlog} for router batch 10, router batch {BIG_BATCH} + {BIG_WINDOW:g}s window, bare loop")
    rates: dict[str, list[float]] = {"r10": [], "bare": []}
    cpu_us: dict[str, list[float]] = {k: [] for k in ("r10", "bare", "b:r10", "b:r100", "b:bare")}
    visible: list[int] = []
    idle_ms: list[float] = []
    bare_calls: dict[str, list[dict[str, float]]] = {"depth": [], "backlog": []}
    notes: list[str] = []
    sources: dict[str, dict[str, Any]] = {
        "r10": {"batch_size": 10},
        "r100": {"batch_size": BIG_BATCH, "batch_window": BIG_WINDOW},
    }

    async def new_queue(side: str) -> str:
        return str((await client.create_queue(QueueName=f"bench-{side}-{uuid.uuid4().hex[:8]}",
                                              Attributes={"VisibilityTimeout": "60"}))["QueueUrl"])

    async def router_side(r: int, side: str, fill: int) -> tuple[float, int, float]:
        """The router on a new queue: at the kept depth (``fill`` 0), or draining a backlog of ``fill``."""
        queue = await new_queue(side)
        source = {"type": "sqs", "queue_url": queue, "max_concurrency": CONCURRENCY, **sources[side]}
        route = {"name": "sqs", "function": "ok", "source": source}
        keeper = DepthKeeper(client, queue, 0 if fill else DEPTH)
        await keeper.fill(fill)
        name = f"sqs{r}{side}{'b' if fill else ''}"
        async with running_aws_router(ctx, name, endpoint, [route]) as (rproc, _base):
            keeper.pids = [rproc.pid]
            if fill:  # batch_window pollers hold up to batch_size each: count until the backlog is nearly out
                got = await measure_backlog(keeper, warm + window + 20,
                                            min_visible=10 if "batch_window" in source else 10 * CONCURRENCY)
            else:
                if r == 0:  # the router's fixed cost: empty queue, pollers long-polling
                    await asyncio.sleep(1.0)  # let start-up settle before measuring; not synchronisation
                    idle_ms.append(await idle_cpu(rproc.pid, 3.0))
                await keeper.top_up()
                got = await measure(keeper, warm, window)
                visible.extend(x[3] for x in keeper.samples)
        await client.delete_queue(QueueUrl=queue)
        return got

    async def bare_side(r: int, fill: int) -> tuple[float, int, float]:
        queue = await new_queue("bare")
        keeper = DepthKeeper(client, queue, 0 if fill else DEPTH)
        await keeper.fill(fill)
        bare = ServerProcess("bare sqs", [
            PYTHON, str(BENCH_DIR / "servers" / "bare_sqs.py"), "--endpoint", endpoint,
            "--queue-url", queue, "--count", str(10**9), "--concurrency", str(CONCURRENCY),
            "--seconds", str(warm + window + 60)], log_path=ctx.tmp / f"bare_sqs{r}{'b' if fill else ''}.log",
            env=CREDENTIALS)
        async with bare:
            keeper.pids = [bare.pid]
            if fill:
                got = await measure_backlog(keeper, warm + window + 20, skip=2 * 10 * CONCURRENCY)
            else:
                await keeper.top_up()
                got = await measure(keeper, warm, window)
            assert bare.proc is not None
            if bare.proc.returncode not in (None, 0):
                raise BenchError(f"bare_sqs.py failed:\n{bare.tail()}")
        counts = bare_counts(bare.log_path.read_text(errors="replace"))  # printed on SIGTERM too
        if counts:
            bare_calls["backlog" if fill else "depth"].append(counts)
        await client.delete_queue(QueueUrl=queue)
        return got

    async with running_moto(ctx) as endpoint, aws_client("sqs", endpoint) as client:
        for r in range(rounds):
            for key in ("r10", "bare", "b:r10", "b:r100", "b:bare"):
                fill = backlog if key.startswith("b:") else 0
                side = key.removeprefix("b:")
                rate, n, cpu = await (bare_side(r, fill) if side == "bare" else router_side(r, side, fill))
                if key in rates:
                    rates[key].append(rate)
                if n:
                    cpu_us[key].append(cpu / n * 1e6)
                elif key.startswith("b:"):
                    notes.append(f"{key[2:]}: the backlog of {backlog} left no window (see --keep logs)")

    def med(xs: list[float]) -> float | None:
        return statistics.median(xs) if xs else None

    def calls_note(runs: list[dict[str, float]]) -> str:
        calls = sum(c["receives"] + c["deletes"] for c in runs)
        msgs = sum(c["received"] for c in runs)
        if not (msgs and calls):
            return ""
        cpu_s = sum(c["cpu_seconds"] for c in runs)
        return (f"the loop: {msgs / sum(c['receives'] for c in runs):.1f} msgs per receive, "
                f"{calls / msgs:.2f} API calls per message, {cpu_s / calls * 1e6:,.0f} us CPU per call")

    r_rate, b_rate = med(rates["r10"]) or 0.0, med(rates["bare"]) or 0.0
    if not r_rate:
        notes.append("the router deleted no message in the window; see its log with --keep")
    ratio = r_rate / b_rate if b_rate else None
    s10 = "9 SQS -> function, batch 10"
    s100 = f"9 SQS -> function, batch {BIG_BATCH} + {BIG_WINDOW:g}s window"
    what = "router process only (not its function environments), deletions and CPU read at the same samples"
    depth_note = (f"visible messages sampled: median {statistics.median(visible):.0f} (the keeper cannot "
                  f"hold {DEPTH}: receives come back part-full)" if visible else "")
    idle_note = f"router idle (empty queue, long polls): {med(idle_ms):.1f} ms CPU/s" if idle_ms else ""
    cpu10, bare10 = med(cpu_us["b:r10"]), med(cpu_us["b:bare"])
    return [
        Row(s10, f"msgs/s at depth {DEPTH}, {CONCURRENCY} pollers", "events/s", r_rate,
            "aiobotocore receive/delete loop", b_rate, target=">= 0.9 of the loop",
            ok=at_least(ratio, 0.9), note="; ".join(
                [*notes, "moto is the bottleneck on both sides (O(depth) per message)", depth_note])),
        Row(s10, f"router CPU per message at depth {DEPTH}", "us", med(cpu_us["r10"]), "the loop's CPU",
            med(cpu_us["bare"]), note="; ".join(x for x in (
                what, calls_note(bare_calls["depth"]), idle_note) if x)),
        Row(s10, f"router CPU per message, backlog {backlog}", "us", cpu10, "the loop's CPU", bare10,
            target="<= 300 us", ok=at_most(cpu10, 300), note="; ".join(x for x in (
                what, "full receives only", calls_note(bare_calls["backlog"]),
                "floor: >= 0.2 SQS calls per message (10 per call at most) x the client's CPU per call",
            ) if x)),
        Row(s100, f"router CPU per message, backlog {backlog}", "us", med(cpu_us["b:r100"]),
            "the loop's CPU (batch 10)", bare10, target="<= 300 us", ok=at_most(med(cpu_us["b:r100"]), 300),
            note=f"{what}; one invocation per up to {BIG_BATCH} messages, still >= 0.2 SQS calls a message"),
    ]
