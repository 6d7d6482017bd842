"""Scenario 9: SQS -> function throughput and CPU per message, on a moto_server started here.

Router side: ``router run`` with one ``type: sqs`` route (batch_size 10, max_concurrency 5) invoking the
trivial python handler, with ``provisioned: 5`` environments (one per poller, started before the route
polls, so no cold start falls inside a measurement) and no route but the bench's ``ok`` webhook beside
it. Baseline: bench/servers/bare_sqs.py, 5 aiobotocore loops of ReceiveMessage(10, long poll, every
attribute, as the router asks) + DeleteMessageBatch with the router's client settings, on another queue
of the same moto server, in the same run.

moto's SQS costs O(queue depth) per message sent and received (every SendMessage and every received
message recomputes the queue's attributes by scanning all its messages), so the rate depends on the
depth far more than on the consumer. Throughput: a keeper tops the queue up to ``DEPTH`` visible
messages every 0.1 s, and messages/s = messages deleted (sent - visible - in flight) per second over
the measuring window, after a warm-up. In practice moto's sends are so slow that a top-up round takes
~1 s and the consumers empty the queue in between (median visible: 0), so that rate is how fast moto
takes messages in, and receives come back part-full (~5 messages, ~0.4 API calls per message).

CPU per message is therefore also measured on a backlog (``drain``), whole, with exact counts:
``BACKLOG`` messages are sent and then hidden (received by this process with a long visibility
timeout) before the consumer starts; the consumer starts, drains a warm-up of ``WARMUP`` messages (its
first API calls, the function's first invocations) and settles; then the CPU counter is read, the whole
backlog is made visible at once (ChangeMessageVisibility 0), and the counter is read again when the
queue holds no message at all, visible or in flight: every one of the ``BACKLOG`` messages was
deleted. CPU per message = that CPU / ``BACKLOG``: router batch 10, router batch 100 + 1 s
``batch_window`` (what a throughput-minded user configures), and the bare loop.

An earlier version took the backlog CPU between two samples of moto's *approximate* counts (sent -
visible - in flight, two separate scans of the queue, off by up to ~10 messages while receives run) in
a short window after the first 100 deletions, with CPU in 10 ms clock ticks: with batches of 100 a
window could hold a few deletions and a few ticks, which is how one run printed 30,214 us a message
(3 ticks / 1 message). Nothing here divides by an approximate or small count any more.

Pairing: on a shared 2-vCPU VM the same consumer's CPU per message moves by a third between two
drains a minute apart (the eighteenth session's runs, bench/RESULTS.md: one side 345 then 475 us, the
ratio of adjacent router and loop drains 0.92x in one run and 1.69x in the next), far more than the
router's own share (one invocation per batch, ~50-80 us a message). So the sides are measured in
rounds, each round running every side once, back to back, in an order that rotates from round to
round; a ratio is taken within each round (router / the loop of the same round) and the row's ratio is
the median of those per-round ratios, every one printed in its note. ``BACKLOG_ROUNDS`` drains of each
kind, ``DEPTH_ROUNDS`` depth windows.

CPU = user + system CPU of the consumer process itself (the router's main process with all its
threads; not its function environments, which are child processes, nor moto, nor this process): for a
drain in nanoseconds from /proc/PID/task/*/schedstat (``CpuClock``), for the 10 s depth windows in the
10 ms clock ticks of /proc/PID/stat.

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
import os
import shutil
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

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
from bench.report import Row, at_least, at_most
from bench.router_proc import router_config

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": REGION}
DEPTH = 100  # visible messages kept on the queue while measuring (DESIGN §8 quotes moto at depth 100)
CONCURRENCY = 5  # router max_concurrency and bare loops
BIG_BATCH, BIG_WINDOW = 100, 1.0  # the throughput-minded configuration: batch_size 100, batch_window 1 s
BACKLOG = 300  # messages drained at once for CPU per message (moto: O(depth^2) to send)
BACKLOG_ROUNDS = 5  # paired rounds of backlog drains (each side once a round); --quick: 2
DEPTH_ROUNDS = 3  # paired rounds of depth windows; --quick: 1
WARMUP = 10 * CONCURRENCY  # messages a consumer drains before the backlog is released
SETTLE = 1.0  # seconds between the warm-up's last deletion and the release
HIDE_FOR = 900  # seconds the backlog stays hidden at most (longer than any scenario)
BACKLOG_VISIBILITY = 10  # the backlog queues' visibility timeout: see ``drain`` on moto's lost deletes


def cpu_ns(pids: list[int]) -> int:
    """User + system CPU of ``pids`` (all their threads) in nanoseconds, from /proc/PID/task/*/schedstat
    (exact to the nanosecond; /proc/PID/stat counts 10 ms ticks). A thread that ended is no longer
    counted, so a figure is trusted only while it is not below the tick count (``cpu_seconds``)."""
    total = 0
    for pid in pids:
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int(stat.read_text().split()[0])
    return total


class CpuClock:
    """CPU seconds of ``pids`` between ``start`` and ``stop``: the schedstat figure, or the tick figure
    when a thread ended meanwhile (schedstat then falls short of the ticks by more than their error)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self._ns0, self._ticks0 = cpu_ns(pids), cpu_seconds(pids)

    def seconds(self) -> float:
        ns, ticks = (cpu_ns(self.pids) - self._ns0) / 1e9, cpu_seconds(self.pids) - self._ticks0
        return ticks if ns < ticks - 0.03 else ns


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
async def running_aws_router(ctx: Ctx, name: str, endpoint: str, routes: list[dict[str, Any]],
                             provisioned: int = 0) -> AsyncIterator[tuple[ServerProcess, str]]:
    """``router run`` with bench/router_proc.py's config plus ``aws.endpoint_url`` and ``routes``, and
    ``provisioned`` warm environments of ``ok`` (started before the routes poll)."""
    work = ctx.tmp / name
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = router_config(port, work, routes)
    if provisioned:
        cfg["functions"]["ok"]["provisioned"] = provisioned
    # Only what an SQS user runs: the function and its route (no async webhook route, whose queue worker
    # polls the state store once a second and would be charged to the SQS messages).
    cfg["functions"].pop("sink", None)
    cfg["routes"] = [r for r in cfg["routes"] if r["name"] != "accept"]
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


async def queue_counts(client: Any, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) messages of the queue, from one GetQueueAttributes."""
    attrs = (await client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    ))["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


async def wait_counts(client: Any, queue_url: str, visible: int, in_flight: int, within: float,
                      what: str) -> None:
    """Poll until the queue holds exactly ``visible`` and ``in_flight`` messages; BenchError after
    ``within`` seconds. moto reads the two counts in two scans: once the backlog is released, messages
    only go from visible to in flight and then away, so (0, 0) can only mean all were deleted."""
    deadline = time.monotonic() + within
    got = (-1, -1)
    while time.monotonic() < deadline:
        got = await queue_counts(client, queue_url)
        if got == (visible, in_flight):
            return
        await asyncio.sleep(0.05)  # polling interval, not synchronisation
    raise BenchError(f"{what}: the queue still held {got[0]} visible and {got[1]} in-flight messages "
                     f"after {within:g}s (waiting for {visible} and {in_flight}); see the logs with --keep")


async def hide_backlog(client: Any, queue_url: str, n: int) -> dict[str, str]:
    """Send ``n`` messages, then receive them all with a long visibility timeout so that no consumer
    sees them until ``drain`` releases them; ``{message_id: receipt_handle}``."""
    await DepthKeeper(client, queue_url, 0).fill(n)
    hidden: dict[str, str] = {}
    for _ in range(3 * n // 10 + 10):  # bounded: n / 10 receives when moto answers full
        if len(hidden) >= n:
            break
        resp = await client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                            VisibilityTimeout=HIDE_FOR, WaitTimeSeconds=0)
        hidden.update((m["MessageId"], m["ReceiptHandle"]) for m in resp.get("Messages", []))
    if len(hidden) != n:
        raise BenchError(f"hiding the backlog: received {len(hidden)} of {n} messages")
    return hidden


async def release(client: Any, queue_url: str, hidden: dict[str, str]) -> None:
    """Make every hidden message visible (ChangeMessageVisibilityBatch 0, four calls at a time)."""
    items = list(hidden.values())

    async def chunk(handles: list[str]) -> None:
        resp = await client.change_message_visibility_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0} for i, h in enumerate(handles)])
        if resp.get("Failed"):
            raise BenchError(f"ChangeMessageVisibilityBatch failed: {resp['Failed'][:1]}")

    for start in range(0, len(items), 40):
        async with asyncio.TaskGroup() as tg:
            for first in range(start, min(len(items), start + 40), 10):
                tg.create_task(chunk(items[first:first + 10]))


async def drain(client: Any, queue_url: str, hidden: dict[str, str], pids: list[int], within: float,
                received: Callable[[], Awaitable[float]] | None = None) -> tuple[float, float, float | None]:
    """With a consumer (``pids``) running on the queue: warm it up with ``WARMUP`` messages, let it
    settle, release the hidden backlog and wait until the queue is empty; (CPU seconds of ``pids``,
    seconds, messages the consumer received meanwhile by its own count ``received()``, if given) from
    just before the release to the moment the queue was seen empty.

    moto_server serves each request in a thread and its DeleteMessage rebuilds the queue's message list
    from a copy without a lock, so of two deletes on one queue at the same instant one can be undone:
    the message stays in flight and comes back after the visibility timeout, and is received, run and
    deleted again (counted: ``redelivered``). The backlog queues have a short visibility timeout
    (``BACKLOG_VISIBILITY``) so that such a message comes back within the drain."""
    n = len(hidden)
    await DepthKeeper(client, queue_url, 0).fill(WARMUP)
    await wait_counts(client, queue_url, 0, n, within, "warm-up")
    await asyncio.sleep(SETTLE)  # the last warm-up batch's deletes and log lines; not synchronisation
    r0 = await received() if received else 0.0
    clock, t0 = CpuClock(pids), time.monotonic()
    await release(client, queue_url, hidden)
    await wait_counts(client, queue_url, 0, 0, within, f"draining {n} messages")
    cpu, seconds = clock.seconds(), time.monotonic() - t0
    return cpu, seconds, (await received() - r0) if received else None


async def idle_cpu(pid: int, seconds: float) -> float:
    """CPU milliseconds per second ``pid`` uses over ``seconds`` (its fixed cost, spread over messages)."""
    c0, t0 = cpu_seconds([pid]), time.monotonic()
    await asyncio.sleep(seconds)  # the measuring window itself
    return (cpu_seconds([pid]) - c0) / (time.monotonic() - t0) * 1e3


def rotated(keys: tuple[str, ...], by: int) -> tuple[str, ...]:
    """``keys`` starting at index ``by`` (mod its length): each side leads a round in turn."""
    k = by % len(keys)
    return keys[k:] + keys[:k]


def bare_counts(log_text: str) -> dict[str, float] | None:
    """The JSON line bare_sqs.py prints when it ends (also on SIGTERM), or None."""
    for line in reversed(log_text.splitlines()):
        with contextlib.suppress(ValueError):
            got = json.loads(line)
            if isinstance(got, dict) and "deletes" in got:
                return got
    return None


async def run(ctx: Ctx) -> list[Row]:
    rounds, warm, window = (1, 3.0, 6.0) if ctx.quick else (DEPTH_ROUNDS, 3.0, 10.0)
    backlog_rounds = 2 if ctx.quick else BACKLOG_ROUNDS
    backlog = BACKLOG * 2 // 3 if ctx.quick else BACKLOG
    ctx.say(f"9: SQS at depth {DEPTH}, {CONCURRENCY} pollers, {rounds} x {window:g}s a side; then "
            f"{backlog_rounds} rounds of a backlog of {backlog} for router batch 10, router batch "
            f"{BIG_BATCH} + {BIG_WINDOW:g}s window, bare loop (sides in turn; ratios within a round)")
    rates: dict[str, list[float]] = {"r10": [], "bare": []}
    cpu_us: dict[str, list[float]] = {k: [] for k in ("r10", "bare", "b:r10", "b:r100", "b:bare")}
    # Per round: the router's CPU per message over the loop's in the same round (see the module doc).
    paired: dict[str, list[float]] = {"r10": [], "b:r10": [], "b:r100": []}
    redelivered: dict[str, list[float]] = {k: [] for k in ("b:r10", "b:r100", "b:bare")}
    drain_s: dict[str, list[float]] = {k: [] for k in ("b:r10", "b:r100", "b:bare")}
    visible: list[int] = []
    idle_ms: list[float] = []
    bare_calls: dict[str, list[dict[str, float]]] = {"depth": [], "backlog": []}
    notes: list[str] = []
    sources: dict[str, dict[str, Any]] = {
        "r10": {"batch_size": 10},
        "r100": {"batch_size": BIG_BATCH, "batch_window": BIG_WINDOW},
    }
    within = warm + window + 60  # the longest any one wait may take

    async def new_queue(side: str, backlog: bool) -> str:
        visibility = BACKLOG_VISIBILITY if backlog else 60
        return str((await client.create_queue(QueueName=f"bench-{side}-{uuid.uuid4().hex[:8]}",
                                              Attributes={"VisibilityTimeout": str(visibility)}))["QueueUrl"])

    async def router_side(r: int, side: str, fill: int) -> tuple[float, int, float, float | None]:
        """The router on a new queue: at the kept depth (``fill`` 0), or draining a backlog of ``fill``;
        (msgs/s, messages, CPU seconds, messages received more than once)."""
        queue = await new_queue(side, bool(fill))
        source = {"type": "sqs", "queue_url": queue, "max_concurrency": CONCURRENCY, **sources[side]}
        route = {"name": "sqs", "function": "ok", "source": source}
        hidden = await hide_backlog(client, queue, fill) if fill else {}
        name = f"sqs{r}{side}{'b' if fill else ''}"
        async with (running_aws_router(ctx, name, endpoint, [route], provisioned=CONCURRENCY)
                    as (rproc, base), aiohttp.ClientSession() as http):
            if fill:
                async def received() -> float:
                    return await metric_sum(http, base, "router_source_events_total", route="sqs")

                cpu, seconds, got_n = await drain(client, queue, hidden, [rproc.pid], within, received)
                got = (fill / seconds, fill, cpu, None if got_n is None else got_n - fill)
            else:
                if r == 0:  # the router's fixed cost: empty queue, pollers long-polling
                    await asyncio.sleep(1.0)  # let start-up settle before measuring; not synchronisation
                    idle_ms.append(await idle_cpu(rproc.pid, 3.0))
                keeper = DepthKeeper(client, queue, DEPTH, [rproc.pid])
                await keeper.top_up()
                rate, n, cpu = await measure(keeper, warm, window)
                got = (rate, n, cpu, None)
                visible.extend(x[3] for x in keeper.samples)
        await client.delete_queue(QueueUrl=queue)
        return got

    async def bare_side(r: int, fill: int) -> tuple[float, int, float, float | None]:
        queue = await new_queue("bare", bool(fill))
        hidden = await hide_backlog(client, queue, fill) if fill else {}
        bare = ServerProcess("bare sqs", [
            PYTHON, str(BENCH_DIR / "servers" / "bare_sqs.py"), "--endpoint", endpoint,
            "--queue-url", queue, "--count", str(10**9), "--concurrency", str(CONCURRENCY),
            "--seconds", str(3 * within)], log_path=ctx.tmp / f"bare_sqs{r}{'b' if fill else ''}.log",
            env=CREDENTIALS)
        async with bare:
            if fill:
                cpu, seconds, _n = await drain(client, queue, hidden, [bare.pid], within)
                got: tuple[float, int, float, float | None] = (fill / seconds, fill, cpu, None)
            else:
                keeper = DepthKeeper(client, queue, DEPTH, [bare.pid])
                await keeper.top_up()
                rate, n, cpu = await measure(keeper, warm, window)
                got = (rate, n, cpu, None)
            assert bare.proc is not None
            if bare.proc.returncode not in (None, 0):
                raise BenchError(f"bare_sqs.py failed:\n{bare.tail()}")
        counts = bare_counts(bare.log_path.read_text(errors="replace"))  # printed on SIGTERM too
        if counts:
            bare_calls["backlog" if fill else "depth"].append(counts)
            if fill:  # its whole run: the warm-up, then the backlog
                got = (*got[:3], counts["received"] - WARMUP - fill)
        await client.delete_queue(QueueUrl=queue)
        return got

    async with running_moto(ctx) as endpoint, aws_client("sqs", endpoint) as client:
        plan = [(r, rotated(("r10", "bare"), r)) for r in range(rounds)]
        plan += [(r, rotated(("b:r10", "b:bare", "b:r100"), r)) for r in range(backlog_rounds)]
        for r, keys in plan:
            in_round: dict[str, float] = {}
            for key in keys:
                fill = backlog if key.startswith("b:") else 0
                side = key.removeprefix("b:")
                rate, n, cpu, again = await (bare_side(r, fill) if side == "bare"
                                             else router_side(r, side, fill))
                if key in rates:
                    rates[key].append(rate)
                if key in redelivered and rate:
                    drain_s[key].append(n / rate)
                if again is not None:
                    redelivered[key].append(again)
                if n:
                    cpu_us[key].append(cpu / n * 1e6)
                    in_round[key] = cpu / n * 1e6
                    ctx.say(f"9: round {r} {key}: {cpu / n * 1e6:,.0f} us CPU a message ({n} messages"
                            f"{'' if again is None else f', {again:.0f} received twice'}; load "
                            f"{os.getloadavg()[0]:.2f})")
            base_key = "b:bare" if keys[0].startswith("b:") else "bare"
            for key in paired:
                if key in in_round and in_round.get(base_key):
                    paired[key].append(in_round[key] / in_round[base_key])

    def med(xs: list[float]) -> float | None:
        return statistics.median(xs) if xs else None

    def calls_note(runs: list[dict[str, float]]) -> str:
        calls = sum(c["receives"] + c["deletes"] for c in runs)
        msgs = sum(c["received"] for c in runs)
        if not (msgs and calls):
            return ""
        cpu_s = sum(c["cpu_seconds"] for c in runs)
        return (f"the loop: {msgs / sum(c['receives'] for c in runs):.1f} msgs per receive, "
                f"{calls / msgs:.2f} API calls per message, {cpu_s / calls * 1e6:,.0f} us CPU per call "
                "(whole run, warm-up and idle long polls included)")

    def each(key: str) -> str:
        if not cpu_us[key]:
            return ""
        again = (f" ({', '.join(f'{x:.0f}' for x in redelivered[key])} messages received twice: moto's "
                 "lost deletes)") if redelivered[key] else ""
        fixed = ""
        if key != "b:bare" and idle_ms and drain_s[key]:  # the router's idle cost over the drain's length
            idle, lasted = statistics.median(idle_ms), statistics.median(drain_s[key])
            fixed = (f"; of which ~{idle * 1e3 * lasted / backlog:,.0f} us the router's idle cost "
                     f"({idle:.1f} ms/s) over the {lasted:.1f} s the drain lasted")
        return "runs: " + ", ".join(f"{x:,.0f}" for x in cpu_us[key]) + " us" + again + fixed

    r_rate, b_rate = med(rates["r10"]) or 0.0, med(rates["bare"]) or 0.0
    if not r_rate:
        notes.append("the router deleted no message in the window; see its log with --keep")
    ratio = r_rate / b_rate if b_rate else None
    s10 = "9 SQS -> function, batch 10"
    s100 = f"9 SQS -> function, batch {BIG_BATCH} + {BIG_WINDOW:g}s window"
    what = "router process only (not its function environments)"
    depth_note = (f"visible messages sampled: median {statistics.median(visible):.0f} (the keeper cannot "
                  f"hold {DEPTH}: receives come back part-full)" if visible else "")
    idle_note = f"router idle (empty queue, long polls): {med(idle_ms):.1f} ms CPU/s" if idle_ms else ""
    drain_what = (f"all {backlog} messages made visible at once after a warm-up, CPU from the release until "
                  "the queue was empty / messages")

    def cpu_row(scenario: str, measure: str, key: str, base_key: str, base_name: str, note: str) -> Row:
        """Medians of each side's CPU a message; the ratio is the median of the per-round ratios."""
        router, base = med(cpu_us[key]), med(cpu_us[base_key])
        ratio = med(paired[key])
        rounds_note = ("ratio: median of the rounds' router / loop ratios "
                       + ", ".join(f"{x:.2f}x" for x in paired[key])) if paired[key] else ""
        return Row(scenario, measure, "us", router, base_name, base, ratio=ratio, target="<= 1.2x the loop",
                   ok=at_most(ratio, 1.2), note="; ".join(x for x in (note, rounds_note) if x))

    return [
        Row(s10, f"msgs/s at depth {DEPTH}, {CONCURRENCY} pollers", "events/s", r_rate,
            "aiobotocore receive/delete loop", b_rate, target=">= 0.9 of the loop",
            ok=at_least(ratio, 0.9), note="; ".join(
                [*notes, "moto is the bottleneck on both sides (O(depth) per message)", depth_note])),
        cpu_row(s10, f"router CPU per message at depth {DEPTH}", "r10", "bare", "the loop's CPU", "; ".join(
            x for x in (what + ", deletions (moto's approximate counts) and CPU read at the same samples "
                        "over the whole window", calls_note(bare_calls["depth"]), idle_note) if x)),
        cpu_row(s10, f"router CPU per message, backlog {backlog}", "b:r10", "b:bare", "the loop's CPU",
                "; ".join(x for x in (
                    what, drain_what, each("b:r10"), f"the loop's {each('b:bare')}",
                    calls_note(bare_calls["backlog"]),
                    "floor: >= 0.2 SQS calls per message (10 per call at most) x the client's CPU per call",
                ) if x)),
        cpu_row(s100, f"router CPU per message, backlog {backlog}", "b:r100", "b:bare",
                "the loop's CPU (batch 10)", f"{what}; {drain_what}; {each('b:r100')}; one invocation per up "
                f"to {BIG_BATCH} messages, still >= 0.2 SQS calls a message"),
    ]
