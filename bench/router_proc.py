"""Start a real ``router run`` process on a free port with a generated config (the bench functions)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

from bench.harness import BENCH_DIR, HOST, PYTHON, Ctx, ServerProcess, free_port

OK_CODE = BENCH_DIR / "functions" / "ok"
LOG_LEVEL = "info"  # what config/example.yaml uses; the router writes Lambda's START/END/REPORT lines


def router_config(port: int, state_dir: Path, extra_routes: list[dict[str, Any]] | None = None
                  ) -> dict[str, Any]:
    """Two functions with the trivial handler: ``ok`` behind a sync webhook, ``sink`` behind an async one.

    ``ok`` has no concurrency cap (Lambda's default: every concurrent request may get an environment).
    ``sink`` is capped at 2 so that the async scenario measures accepting, not spawning environments.
    """
    fn = {"runtime": "python3.11", "handler": "app.handler", "code": str(OK_CODE), "timeout": "10s",
          "memory": 256}
    return {
        "version": 1,
        "server": {"host": HOST, "port": port, "shutdown_timeout": "5s"},
        "state": f"sqlite:///{state_dir / 'state.db'}",
        "logging": {"level": LOG_LEVEL, "format": "json"},
        "functions": {
            "ok": dict(fn),
            "sink": dict(fn, concurrency=2, **{"async": {"retries": 0}}),
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
async def running_router(ctx: Ctx, name: str, extra_routes: list[dict[str, Any]] | None = None
                         ) -> AsyncIterator[tuple[ServerProcess, str]]:
    """A router serving ``router_config``; yields the process and its base URL; always stopped (SIGTERM)."""
    work = ctx.tmp / name
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = work / "router.yaml"
    cfg.write_text(yaml.safe_dump(router_config(port, work, extra_routes), sort_keys=False))
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
