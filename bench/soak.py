"""Soak: a router under a fixed, modest load for a long time, watched for leaks.

Runs ``router run`` (a real subprocess) with a sync webhook, an async webhook and an SQS route (on a
moto_server of its own), all bound to the trivial ``bench/functions/ok`` handler, and drives each at a
fixed rate (default 20 req/s sync, 20 req/s async, 10 msgs/s SQS) for ``--minutes`` (default 30). Every
``--interval`` seconds (default 60) it samples the router's RSS, its open file descriptors, its asyncio
task count (from ``/metrics`` when the router exports one, else left out), its environment count
(``router_environments`` on ``/metrics``) and the processes under it. At the end it prints the least-squares
slope of each series per minute (the first sample, taken after a warm-up minute, is the baseline), the
load's outcome counts, and a Markdown block to paste into bench/RESULTS.md. Flat within noise is the
target: RSS slope well under 1 MB/min, fds and tasks 0/min.

    .venv/bin/python bench/soak.py --minutes 3 --interval 20

Everything runs on 127.0.0.1; load is bounded by rate and duration; the router and moto are stopped at the
end (SIGTERM, then SIGKILL), also on error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

HOST = "127.0.0.1"
BENCH = Path(__file__).resolve().parent
OK_CODE = BENCH / "functions" / "ok"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# --- measurements -----------------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (environments, templates), from /proc's children lists."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(k) for k in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


def tree_rss_mb(pid: int) -> float:
    total = 0.0
    for p in [pid, *descendants(pid)]:
        try:
            total += rss_mb(p)
        except OSError:
            continue
    return total


def parse_metrics(text: str) -> dict[str, float]:
    """Sum of samples per metric name (labels dropped)."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            sums[name] = sums.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return sums


TASK_METRICS = ("router_asyncio_tasks", "router_event_loop_tasks", "router_tasks", "asyncio_tasks")


@dataclass
class Sample:
    minute: float
    rss_mb: float
    tree_rss_mb: float
    fds: int
    processes: int
    environments: float | None
    tasks: float | None


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 with fewer than two points)."""
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


# --- the processes ----------------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def start(name: str, argv: list[str], work: Path, env: dict[str, str] | None = None) -> Proc:
    log = work / f"{name}.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=work, env=env)
    return Proc(name, proc, log)


async def wait_http(session: aiohttp.ClientSession, url: str, proc: Proc, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise SystemExit(f"{proc.name} exited: {proc.log.read_text(errors='replace')[-2000:]}")
        try:
            async with session.get(url) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit(f"{proc.name} did not answer {url} within {within}s")


# --- load -------------------------------------------------------------------------------------------------


@dataclass
class Counts:
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def paced(rate: float, until: float, one: object, counts: Counts, limit: int = 64) -> None:
    """Call ``one()`` ``rate`` times a second until ``until`` (monotonic), at most ``limit`` at once."""
    sem = asyncio.Semaphore(limit)
    tasks: set[asyncio.Task[None]] = set()
    n = 0
    begin = time.monotonic()

    async def run() -> None:
        try:
            await one()  # type: ignore[operator]
            counts.ok += 1
        except Exception as exc:  # counted, never fatal: a soak reports errors, it does not stop on them
            counts.error(type(exc).__name__)
        finally:
            sem.release()

    try:
        while (now := time.monotonic()) < until:
            due = begin + n / rate
            if due > now:
                await asyncio.sleep(due - now)
                continue
            if sem.locked():
                counts.error("client backlog full (skipped)")
                n += 1
                continue
            await sem.acquire()
            task = asyncio.create_task(run())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def soak(args: argparse.Namespace) -> int:
    import aiobotocore.session

    work = Path(tempfile.mkdtemp(prefix="router-soak-"))
    moto_exe = Path(sys.executable).with_name("moto_server")
    moto_cmd = str(moto_exe) if moto_exe.exists() else shutil.which("moto_server")
    if moto_cmd is None:
        raise SystemExit("moto_server not found: pip install 'moto[server]' (the SQS route needs it)")
    moto_port, port = free_port(), free_port()
    moto_url = f"http://{HOST}:{moto_port}"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    env = {k: v for k, v in env.items() if not k.startswith("ROUTER_")}
    procs: list[Proc] = []
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        try:
            moto = start("moto", [moto_cmd, "-H", HOST, "-p", str(moto_port)], work, env)
            procs.append(moto)
            await wait_http(http, moto_url + "/moto-api/", moto)
            session = aiobotocore.session.get_session()
            async with session.create_client("sqs", region_name=REGION, endpoint_url=moto_url,
                                             aws_access_key_id="testing",
                                             aws_secret_access_key="testing") as sqs:
                queue_url = (await sqs.create_queue(QueueName="soak"))["QueueUrl"]
                config = work / "router.yaml"
                config.write_text(f"""
version: 1
server: {{host: {HOST}, port: {port}, shutdown_timeout: 5s}}
state: sqlite:///{work / 'state.db'}
aws: {{region: {REGION}, endpoint_url: "{moto_url}"}}
logging: {{level: warning, format: json}}
functions:
  sync: {{runtime: python3.11, handler: app.handler, code: {OK_CODE}, timeout: 10s}}
  background: {{runtime: python3.11, handler: app.handler, code: {OK_CODE}, timeout: 10s,
               async: {{retries: 0}}}}
  queue: {{runtime: python3.11, handler: app.handler, code: {OK_CODE}, timeout: 10s}}
routes:
  - {{name: sync, source: {{type: webhook, path: /sync}}, function: sync}}
  - {{name: async, source: {{type: webhook, path: /async}}, function: background, invocation: async}}
  - {{name: jobs, source: {{type: sqs, queue_url: "{queue_url}", batch_size: 10}}, function: queue}}
""")
                router = start("router", [sys.executable, "-m", "router", "run", "--config", str(config)],
                               work, env)
                procs.append(router)
                base = f"http://{HOST}:{port}"
                await wait_http(http, base + "/readyz", router)
                pid = router.proc.pid

                counts = {"sync": Counts(), "async": Counts(), "sqs": Counts()}

                async def post(path: str, expect: int) -> None:
                    async with http.post(base + path, data=b'{"soak": true}') as resp:
                        await resp.read()
                        if resp.status != expect:
                            raise RuntimeError(f"HTTP {resp.status}")

                n_sqs = 0

                async def send_sqs() -> None:
                    nonlocal n_sqs
                    n_sqs += 1
                    await sqs.send_message(QueueUrl=queue_url, MessageBody=f"m{n_sqs}")

                warmup = min(60.0, args.interval)
                total = args.minutes * 60 + warmup
                t0 = time.monotonic()
                until = t0 + total
                load = [
                    asyncio.create_task(paced(args.sync_rate, until, lambda: post("/sync", 200),
                                              counts["sync"])),
                    asyncio.create_task(paced(args.async_rate, until, lambda: post("/async", 202),
                                              counts["async"])),
                    asyncio.create_task(paced(args.sqs_rate, until, send_sqs, counts["sqs"])),
                ]
                samples: list[Sample] = []
                try:
                    next_at = t0 + warmup
                    print(f"soak: {args.minutes} min after {warmup:.0f}s warm-up; sync {args.sync_rate}/s, "
                          f"async {args.async_rate}/s, sqs {args.sqs_rate}/s; router pid {pid}; work {work}",
                          flush=True)
                    while time.monotonic() < until + 0.5:
                        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                        if router.proc.poll() is not None:
                            tail = router.log.read_text(errors="replace")[-2000:]
                            raise SystemExit(f"router exited: {tail}")
                        async with http.get(base + "/metrics") as resp:
                            metrics = parse_metrics(await resp.text())
                        tasks = next((metrics[m] for m in TASK_METRICS if m in metrics), None)
                        s = Sample(minute=(time.monotonic() - t0 - warmup) / 60, rss_mb=rss_mb(pid),
                                   tree_rss_mb=tree_rss_mb(pid), fds=open_fds(pid),
                                   processes=len(descendants(pid)),
                                   environments=metrics.get("router_environments"), tasks=tasks)
                        samples.append(s)
                        print(f"  t={s.minute:5.1f} min  rss {s.rss_mb:7.1f} MB  "
                              f"tree rss {s.tree_rss_mb:7.1f} MB  "
                              f"fds {s.fds:4d}  processes {s.processes:3d}  environments "
                              f"{'-' if s.environments is None else int(s.environments)}  tasks "
                              f"{'-' if s.tasks is None else int(s.tasks)}", flush=True)
                        next_at += args.interval
                        if next_at > until + 0.5:
                            break
                finally:
                    for task in load:
                        task.cancel()
                    await asyncio.gather(*load, return_exceptions=True)
                depth = (await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"]))[
                    "Attributes"]
        finally:
            codes = [p.stop() for p in reversed(procs)]
    report(args, samples, counts, depth, codes, work)
    return 0


def report(args: argparse.Namespace, samples: list[Sample], counts: dict[str, Counts],
           depth: dict[str, str], codes: list[int | None], work: Path) -> None:
    xs = [s.minute for s in samples]
    series: list[tuple[str, list[float], str]] = [
        ("router RSS", [s.rss_mb for s in samples], "MB/min"),
        ("router + environments RSS", [s.tree_rss_mb for s in samples], "MB/min"),
        ("open fds", [float(s.fds) for s in samples], "fds/min"),
        ("processes under the router", [float(s.processes) for s in samples], "/min"),
    ]
    if all(s.environments is not None for s in samples):
        series.append(("environments", [float(s.environments or 0) for s in samples], "/min"))
    if all(s.tasks is not None for s in samples):
        series.append(("asyncio tasks", [float(s.tasks or 0) for s in samples], "tasks/min"))
    lines = [
        f"### Soak ({args.minutes} min, sampled every {args.interval:.0f} s after a warm-up; "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}, {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()})",
        "",
        f"Load: sync webhook {args.sync_rate}/s, async webhook {args.async_rate}/s, "
        f"SQS {args.sqs_rate} msgs/s "
        "(moto), trivial handler.",
        "",
        "| series | first | last | min | max | slope |",
        "|---|---|---|---|---|---|",
    ]
    for name, ys, unit in series:
        if not ys:
            continue
        lines.append(f"| {name} | {ys[0]:.1f} | {ys[-1]:.1f} | {min(ys):.1f} | {max(ys):.1f} | "
                     f"{slope(xs, ys):+.3f} {unit} |")
    if not any(name == "asyncio tasks" for name, _, _ in series):
        lines.append("| asyncio tasks | n/a: the router exports no task count on /metrics | | | | |")
    outcome = "; ".join(
        f"{name}: {c.ok} ok" + (f", errors {c.errors}" if c.errors else "") for name, c in counts.items())
    lines += ["", f"Outcomes: {outcome}. SQS left on the queue: {depth.get('ApproximateNumberOfMessages')} "
              f"visible, {depth.get('ApproximateNumberOfMessagesNotVisible')} in flight. Exit codes (router, "
              f"moto): {codes}."]
    text = "\n".join(lines)
    print("\n" + text)
    if args.write:
        Path(args.write).write_text(text + "\n")
        print(f"\nwritten to {args.write}")
    print(f"(logs in {work})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=30.0, help="measured duration (default 30)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between samples (default 60)")
    parser.add_argument("--sync-rate", type=float, default=20.0, help="sync webhook requests/s (default 20)")
    parser.add_argument("--async-rate", type=float, default=20.0,
                        help="async webhook requests/s (default 20)")
    parser.add_argument("--sqs-rate", type=float, default=10.0, help="SQS messages/s (default 10)")
    parser.add_argument("--write", metavar="FILE", help="also write the Markdown block to FILE")
    args = parser.parse_args()
    return asyncio.run(soak(args))


if __name__ == "__main__":
    sys.exit(main())
