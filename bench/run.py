"""Run the benchmarks of DESIGN §8: every router scenario beside its raw baseline, in one run.

    .venv/bin/python bench/run.py                 # all scenarios, full length (a few minutes)
    .venv/bin/python bench/run.py --quick 1 2     # only scenarios 1 and 2, short runs
    .venv/bin/python bench/run.py --write         # ... and record the table in bench/RESULTS.md
    .venv/bin/python bench/run.py --quick --history off 1 5   # the same with invocation history off

Only 127.0.0.1 is used; every server is started here on a free port and stopped with SIGTERM at the end.
serverless-offline (the peer of scenarios 1, 12, 13) is installed from npm into bench/.peers/ on first use.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import BenchError, Ctx, machine_info
from bench.load import WRK_MISSING, wrk_path
from bench.report import Row, results_block, text_table, write_results
from bench.router_proc import HISTORY_ENV
from bench.scenarios import (
    accept,
    alias,
    amqp,
    config_load,
    history,
    http_node_io,
    http_sync,
    invoke,
    kinesis,
    memory,
    replicas,
    schedule,
    sqs,
)

SCENARIOS: dict[str, tuple[str, ModuleType]] = {
    "1": ("webhook -> python handler, sync, 32 connections", http_sync),
    "2": ("webhook -> python handler, sync, 1 connection", http_sync),
    "3": ("warm invoke overhead through an environment", invoke),
    "4": ("cold start of a python environment", invoke),
    "5": ("async accept: webhook events persisted in SQLite", accept),
    "6": ("memory: idle router, warm environment", memory),
    "7": ("config: 1,000 routes load + validate", config_load),
    "8": ("schedule: fire lag", schedule),
    "9": ("SQS -> function throughput (moto_server)", sqs),
    "10": ("Kinesis -> function records/s (moto_server)", kinesis),
    "11": ("AMQP -> function throughput (RabbitMQ)", amqp),
    "12": ("webhook -> node handler, sync, 32 connections", http_node_io),
    "13": ("webhook -> handlers awaiting 50 ms of I/O, 32 connections", http_node_io),
    "14": ("cold start of a node environment", invoke),
    "15": ("replicas on one PostgreSQL: Kinesis and async throughput with 1, 2, 3", replicas),
    "16": ("webhook -> python handler through a weighted alias, 32 connections", alias),
    "17": ("invocation history on and off: one router, alternating runs at 32 and 1 connections", history),
}


def select(filters: list[str]) -> set[str]:
    """Scenario ids matching any filter: an id (``3``) or a word of the title (``cold``)."""
    if not filters:
        return set(SCENARIOS)
    chosen = {sid for sid, (title, _m) in SCENARIOS.items()
              for f in filters if f == sid or (not f.isdigit() and f.lower() in title.lower())}
    if not chosen:
        known = ", ".join(f"{k} ({t})" for k, (t, _m) in SCENARIOS.items())
        raise SystemExit(f"bench/run.py: no scenario matches {' '.join(filters)!r}; known: {known}")
    return chosen


async def run_all(ctx: Ctx) -> list[Row]:
    # SIGTERM stops the run like Ctrl-C does: the current scenario is cancelled and its servers stopped.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    rows: list[Row] = []
    done: set[int] = set()
    for sid in sorted(ctx.selected, key=int):
        module = SCENARIOS[sid][1]
        if id(module) in done:
            continue
        done.add(id(module))
        runner: Callable[[Ctx], Awaitable[list[Row]]] = module.run
        ids = ", ".join(sorted(s for s in ctx.selected if SCENARIOS[s][1] is module))
        print(f"== {module.__name__.rsplit('.', 1)[1]} ({ids})", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            got = await runner(ctx)
        except BenchError as exc:
            ctx.notes.append(f"{module.__name__}: {exc}")
            print(f"  !! {exc}", file=sys.stderr, flush=True)
            continue
        except Exception as exc:  # one broken scenario must not lose the others' figures
            msg = f"{module.__name__}: failed: {type(exc).__name__}: {exc}"
            ctx.notes.append(msg)
            print(f"  !! {msg}", file=sys.stderr, flush=True)
            continue
        rows += got
        print(text_table(got), file=sys.stderr, flush=True)
        print(f"  ({time.monotonic() - t0:.0f}s)", file=sys.stderr, flush=True)
    rows.sort(key=lambda r: int(r.scenario.split(" ", 1)[0]))  # "10" after "9"
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenarios", nargs="*", help="ids or title words to run (default: all)")
    p.add_argument("--quick", action="store_true", help="short runs (about a minute): a smoke test")
    p.add_argument("--write", action="store_true", help="write the table into bench/RESULTS.md")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--keep", action="store_true", help="keep the scratch dir (configs, server logs)")
    p.add_argument("--history", choices=("on", "off"), default=None,
                   help="the bench functions' invocation history (default: on, the router's default; "
                   "compare scenarios 1 and 5 with on and off)")
    args = p.parse_args(argv)
    if args.list:
        for sid, (title, _m) in SCENARIOS.items():
            print(f"{sid}  {title}")
        return 0
    selected = select(args.scenarios)
    if args.history is not None:
        os.environ[HISTORY_ENV] = args.history
    machine = machine_info()
    machine["load client"] = "wrk (-t1)" if wrk_path() else "aiohttp (wrk missing)"
    if not wrk_path():
        print(f"bench/run.py: {WRK_MISSING}", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix="router-bench-"))
    ctx = Ctx(quick=args.quick, tmp=tmp, selected=selected)
    if not wrk_path():
        ctx.notes.append(WRK_MISSING)
    try:
        rows = asyncio.run(run_all(ctx))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench/run.py: interrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"scratch dir kept: {tmp}", file=sys.stderr)
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    ctx.notes.append(f"invocation history: {os.environ.get(HISTORY_ENV, 'on')} ({HISTORY_ENV})")
    if ctx.leaked:
        ctx.notes.append("processes left behind after SIGTERM (killed by the harness): "
                         + "; ".join(ctx.leaked))
    print()
    print(text_table(rows))
    for row in rows:
        if row.note:
            print(f"note: {row.scenario} {row.measure}: {row.note}")
    for note in ctx.notes:
        print(f"note: {note}")
    misses = [f"{r.scenario}: {r.measure}" for r in rows if r.ok is False]
    print("missed targets: " + ("; ".join(misses) if misses else "none"))
    if args.write:
        command = "bench/run.py " + shlex.join(a for a in (argv if argv is not None else sys.argv[1:]))
        write_results(results_block(rows, machine, ctx.notes, command.strip()))
        print(f"wrote {os.path.relpath(Path(__file__).parent / 'RESULTS.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
