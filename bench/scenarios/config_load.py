"""Scenario 7: load + validate a config of 1,000 routes (800 webhooks, 200 schedules, 20 functions) with
``router.config.loader.load_config``, in the bench process (median of several runs), and ``router
validate FILE`` as a user runs it (a fresh process). Baseline: PyYAML's C safe loader + pydantic
``RouterConfig.model_validate`` of the same file, without line numbers, interpolation or cross-checks.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import yaml

from bench.harness import PYTHON, Ctx
from bench.report import Row, at_most
from bench.router_proc import OK_CODE

N_ROUTES, N_FUNCTIONS = 1000, 20


def big_config() -> dict[str, Any]:
    functions = {
        f"fn{i:02d}": {"runtime": "python3.11", "handler": "app.handler", "code": str(OK_CODE),
                       "timeout": "30s", "memory": 256, "environment": {"STAGE": "${STAGE:-bench}"},
                       "async": {"retries": 1, "max_event_age": "1h",
                                 "backoff": {"initial": "1s", "max": "5m"}}}
        for i in range(N_FUNCTIONS)
    }
    routes: list[dict[str, Any]] = []
    for i in range(N_ROUTES):
        fn = f"fn{i % N_FUNCTIONS:02d}"
        if i % 5 == 4:
            src: dict[str, Any] = (
                {"type": "schedule", "cron": f"{i % 60} */2 * * *", "timezone": "Europe/Berlin"}
                if i % 2 else {"type": "schedule", "rate": "5m"})
            routes.append({"name": f"tick-{i}", "source": src, "function": fn, "invocation": "async",
                           "input": {"task": "cleanup", "n": i}})
        else:
            src = {"type": "webhook", "path": f"/hooks/{i}/{{id}}", "methods": ["POST", "PUT"]}
            if i % 3 == 0:
                src["auth"] = {"type": "hmac", "secret": "${BENCH_SECRET:-not-a-secret}"}
            routes.append({"name": f"hook-{i}", "source": src, "function": fn,
                           "invocation": "async" if i % 2 else "sync"})
    return {"version": 1, "server": {"host": "127.0.0.1", "port": 8080}, "state": "sqlite:///tmp/bench.db",
            "functions": functions, "routes": routes}


def _baseline(path: Path) -> None:
    from router.config.models import RouterConfig

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the fastest plain parse PyYAML has
    RouterConfig.model_validate(yaml.load(path.read_text(), Loader=loader))


async def _cli(path: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "router", "validate", str(path), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return time.perf_counter() - t0, f"exit {proc.returncode}: {out.decode(errors='replace')[-300:]}" \
        if proc.returncode else ""


async def _python_start() -> float:
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(PYTHON, "-c", "import router.config.loader",
                                                stdin=asyncio.subprocess.DEVNULL)
    await asyncio.wait_for(proc.wait(), 60)
    return time.perf_counter() - t0


def _timed(fn: Any, path: Path, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(path)
        out.append(time.perf_counter() - t0)
    return out


async def run(ctx: Ctx) -> list[Row]:
    runs = 3 if ctx.quick else 7
    ctx.say(f"7: {N_ROUTES} routes, {runs} loads")
    path = ctx.tmp / "routes1000.yaml"
    path.write_text(yaml.safe_dump(big_config(), sort_keys=False))
    notes = []
    load_config: Any = None
    try:
        from router.config.loader import load_config
    except ImportError as exc:
        ctx.notes.append(f"scenario 7: router.config.loader not importable: {exc}")
    # Blocking, CPU-bound work on purpose: this scenario measures exactly that, with nothing else running.
    router_s = await asyncio.to_thread(_timed, load_config, path, runs) if load_config else None
    base_s = await asyncio.to_thread(_timed, _baseline, path, runs)
    cli_runs = [await _cli(path) for _ in range(1 if ctx.quick else 3)]
    cli_s = statistics.median(t for t, _e in cli_runs)
    err = next((e for _t, e in cli_runs if e), "")
    if err:
        notes.append(f"router validate failed: {err}")
    start_s = statistics.median([await _python_start() for _ in range(1 if ctx.quick else 3)])
    s = "7 config, 1,000 routes"
    r = statistics.median(router_s) if router_s else None
    return [
        Row(s, "load + validate (in process)", "s", r, "PyYAML CSafeLoader + pydantic",
            statistics.median(base_s),
            target="<= 1 s", ok=at_most(r, 1.0), note="; ".join(notes)),
        Row(s, "`router validate FILE` wall time", "s", None if err else cli_s,
            "python -c 'import router.config.loader'", start_s),
    ]
