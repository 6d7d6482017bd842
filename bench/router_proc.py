"""Start a real ``router run`` process on a free port with a generated config (the bench functions)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

from bench.harness import BENCH_DIR, HOST, PYTHON, REPO_DIR, Ctx, ServerProcess, free_port

OK_CODE = BENCH_DIR / "functions" / "ok"
HISTORY_ENV = "BENCH_HISTORY"
"""``on`` (the router's default) or ``off``: whether the bench functions record their invocation history
(``bench/run.py --history off`` sets it), to measure what recording costs scenarios 1 and 5."""
LOG_LEVEL = "info"  # what config/example.yaml uses; the router writes Lambda's START/END/REPORT lines


def router_config(port: int, state_dir: Path, extra_routes: list[dict[str, Any]] | None = None,
                  extra_functions: dict[str, dict[str, Any]] | None = None,
                  history: str | None = None) -> dict[str, Any]:
    """Two functions with the trivial handler: ``ok`` behind a sync webhook, ``sink`` behind an async one.

    ``ok`` has no concurrency cap (Lambda's default: every concurrent request may get an environment).
    ``sink`` is capped at 2 so that the async scenario measures accepting, not spawning environments.
    ``extra_functions`` (name -> config) and ``extra_routes`` are added beside them. ``history`` (on,
    off): theirs, whatever ``BENCH_HISTORY`` says.
    """
    fn: dict[str, Any] = {"runtime": "python3.11", "handler": "app.handler", "code": str(OK_CODE),
                          "timeout": "10s", "memory": 256}
    history = history or os.environ.get(HISTORY_ENV, "on")
    if history not in ("on", "off"):
        raise ValueError(f"{HISTORY_ENV}: on or off, got {history!r}")
    if history == "off":
        fn["history"] = {"enabled": False}
    return {
        "version": 1,
        "server": {"host": HOST, "port": port, "shutdown_timeout": "5s"},
        "state": f"sqlite:///{state_dir / 'state.db'}",
        "logging": {"level": LOG_LEVEL, "format": "json"},
        "functions": {
            "ok": dict(fn),
            "sink": dict(fn, concurrency=2, **{"async": {"retries": 0}}),
            **(extra_functions or {}),
        },
        "routes": [
            {"name": "ok", "source": {"type": "webhook", "path": "/ok", "methods": ["GET", "POST"]},
             "function": "ok"},
            {"name": "accept", "source": {"type": "webhook", "path": "/accept", "methods": ["POST"]},
             "function": "sink", "invocation": "async"},
            *(extra_routes or []),
        ],
    }


@contextlib.asynccontextmanager
async def running_router(ctx: Ctx, name: str, extra_routes: list[dict[str, Any]] | None = None,
                         extra_functions: dict[str, dict[str, Any]] | None = None, history: str | None = None
                         ) -> AsyncIterator[tuple[ServerProcess, str]]:
    """A router serving ``router_config``; yields the process and its base URL; always stopped (SIGTERM)."""
    work = ctx.tmp / name
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = work / "router.yaml"
    config = router_config(port, work, extra_routes, extra_functions, history)
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = ServerProcess(f"router ({name})", [PYTHON, "-m", "router", "run", "--config", str(cfg)],
                         log_path=work / "router.log")
    base = f"http://{HOST}:{port}"
    try:
        async with proc:
            await proc.wait_http(base + "/readyz")
            yield proc, base
    finally:
        ctx.leaked.extend(proc.leaked)


@contextlib.asynccontextmanager
async def running_bare(ctx: Ctx, name: str, script: str, *args: str,
                       ready_path: str = "/") -> AsyncIterator[tuple[ServerProcess, str]]:
    """One of bench/servers/*.py on a free port; yields the process and its base URL."""
    port = free_port()
    proc = ServerProcess(name, [PYTHON, str(BENCH_DIR / "servers" / script), "--port", str(port), *args],
                         log_path=ctx.tmp / f"{name.replace(' ', '_')}.log")
    base = f"http://{HOST}:{port}"
    try:
        async with proc:
            await proc.wait_http(base + ready_path)
            yield proc, base
    finally:
        ctx.leaked.extend(proc.leaked)


def function(code: Path, runtime: str = "python3.11", **extra: Any) -> dict[str, Any]:
    """A function entry for ``extra_functions``, set as ``ok`` is (handler app.handler, 10 s, 256 MB)."""
    return {"runtime": runtime, "handler": "app.handler", "code": str(code), "timeout": "10s", "memory": 256,
            **extra}


def webhook(name: str, path: str, fn: str) -> dict[str, Any]:
    """A sync GET webhook route to function ``fn``, for ``extra_routes``."""
    return {"name": name, "source": {"type": "webhook", "path": path, "methods": ["GET"]}, "function": fn}


async def router_refuses(ctx: Ctx, functions: dict[str, dict[str, Any]]) -> str | None:
    """Why ``router validate`` refuses a config with ``functions`` (one webhook each), or None if it
    accepts it: how a scenario finds out whether the router has a runtime (e.g. nodejs20.x) yet."""
    work = ctx.tmp / "validate"
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / f"check-{len(list(work.iterdir()))}.yaml"
    routes = [webhook(n, f"/{n}", n) for n in functions]
    cfg.write_text(yaml.safe_dump({"version": 1, "functions": functions, "routes": routes}, sort_keys=False))
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "router", "validate", str(cfg), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=str(REPO_DIR))
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if proc.returncode == 0:
        return None
    lines = [ln.replace(str(cfg), cfg.name) for ln in out.decode(errors="replace").splitlines() if ln.strip()]
    return "; ".join(lines[-3:])[:300] or f"router validate exited with {proc.returncode}"
