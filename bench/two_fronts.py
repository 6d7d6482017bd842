"""What a second front process could give scenario 1 on this machine: the sync webhook (trivial Python
handler, 32 connections) through one router, through two routers side by side (each with its own port,
state, environments and 16 of the 32 connections: two front processes with nothing shared, the upper
bound of any design that splits the front in two), and through the bare proxy in front of the bare
function, driven by wrk alternately, with the machine's busy share read from /proc/stat over each run.

Usage: ``.venv/bin/python -m bench.two_fronts [--rounds N] [--seconds S]`` (needs wrk)

A bound, not a scenario: the two routers coordinate nothing (a function's concurrency, the account limit,
the memory budget, metrics, the replay guard are each per process), so a real two-process front would
spend more, not less. Only 127.0.0.1 is used; every server runs on a free port and is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import statistics
import sys
import tempfile
from pathlib import Path

from bench.harness import Ctx, cpu_seconds, descendants
from bench.load import LoadResult, run_load, wrk_path
from bench.router_proc import running_bare, running_router

CONNECTIONS = 32
BARE = "bare proxy -> bare function"


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs so far, from /proc/stat (idle and iowait are not busy)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - fields[3] - fields[4], total


def tree_cpu(pid: int) -> float:
    return cpu_seconds([pid, *descendants(pid)])


def reaped_cpu() -> float:
    """CPU seconds of this process's children that have ended (each wrk run ends; the servers do not)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def drive(urls: list[str], seconds: float) -> tuple[float, float, float]:
    """wrk on every URL at once, the connections split evenly; (2xx per second in all, machine busy share,
    wrk's CPU seconds)."""
    busy0, total0 = machine_ticks()
    wrk0 = reaped_cpu()
    got: list[LoadResult] = await asyncio.gather(
        *(run_load(url, connections=CONNECTIONS // len(urls), seconds=seconds) for url in urls))
    busy1, total1 = machine_ticks()
    return sum(g.ok_rps for g in got), (busy1 - busy0) / max(total1 - total0, 1), reaped_cpu() - wrk0


async def measure(rounds: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="two-fronts-") as tmp:
        ctx = Ctx(quick=False, tmp=Path(tmp), selected=set())
        async with contextlib.AsyncExitStack() as stack:
            _, fn_url = await stack.enter_async_context(
                running_bare(ctx, "bare function", "bare_function.py"))
            _, proxy = await stack.enter_async_context(
                running_bare(ctx, "bare proxy", "bare_proxy.py", "--upstream", fn_url))
            first, base_a = await stack.enter_async_context(running_router(ctx, "router-a"))
            second, base_b = await stack.enter_async_context(running_router(ctx, "router-b"))
            url_a, url_b = base_a + "/ok", base_b + "/ok"
            sides = {BARE: [proxy + "/ok"], "one router": [url_a],
                     "two routers (16 + 16 connections)": [url_a, url_b]}
            for urls in sides.values():  # warm-up: environments started, code paths hot
                await drive(urls, 2.0)
            runs: dict[str, list[tuple[float, float, float, float]]] = {side: [] for side in sides}
            for _ in range(rounds):
                for side, urls in sides.items():
                    cpu0 = tree_cpu(first.pid) + tree_cpu(second.pid)
                    rate, busy, wrk_cpu = await drive(urls, seconds)
                    cpu = tree_cpu(first.pid) + tree_cpu(second.pid) - cpu0
                    done = max(rate * seconds, 1)
                    runs[side].append((rate, busy, cpu / done * 1e6, wrk_cpu / done * 1e6))
            proxy_rate = statistics.median(r[0] for r in runs[BARE])
            for side, values in runs.items():
                rate = statistics.median(v[0] for v in values)
                busy = statistics.median(v[1] for v in values)
                routers = "" if side == BARE else (
                    f"  routers + environments {statistics.median(v[2] for v in values):5.0f} us a request")
                each = ", ".join(f"{v[0]:,.0f}" for v in values)
                wrk = statistics.median(v[3] for v in values)
                print(f"{side:36s} {rate:8,.0f} 2xx/s  {rate / proxy_rate:4.2f}x the bare proxy  "
                      f"machine busy {busy:4.0%}  wrk {wrk:3.0f} us a request{routers}  (runs: {each})")
        if ctx.leaked:
            print(f"left behind and killed: {', '.join(ctx.leaked)}", file=sys.stderr)


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args()
    if not wrk_path():
        sys.exit("two_fronts needs wrk (apt-get install -y wrk)")
    asyncio.run(measure(args.rounds, args.seconds))


if __name__ == "__main__":
    main()
