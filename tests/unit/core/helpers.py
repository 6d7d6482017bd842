"""Helpers of the engine tests: scripted invokers, a real aiohttp server, config building, waiting."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from router.config.models import RouterConfig
from router.invocation import ErrorType, Invocation, Outcome, Result


def ok(value: Any = None) -> Result:
    return Result(payload=json.dumps(value).encode())


def fail(message: str = "boom", **kw: Any) -> Result:
    return Result.error("ValueError", message, stack=["  File \"app.py\", line 1"], **kw)


def throttled() -> Result:
    return Result.error("HttpError", "POST http://t/ returned 429: slow down", outcome=Outcome.THROTTLED,
                        error_type=ErrorType.THROTTLED, throttle=True)


class ScriptedInvoker:
    """Returns the scripted results in order, then ``then`` forever; records every invocation.

    With ``gate`` set, each invocation waits for the gate first (to hold slots).
    """

    def __init__(self, script: list[Result] | None = None, then: Result | None = None,
                 gate: asyncio.Event | None = None) -> None:
        self.script = list(script or [])
        self.then = then if then is not None else ok({"ok": True})
        self.gate = gate
        self.calls: list[Invocation] = []
        self.running = 0
        self.max_running = 0
        self.changed = asyncio.Event()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def invoke(self, invocation: Invocation) -> Result:
        self.calls.append(invocation)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        self.changed.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
            return self.script.pop(0) if self.script else self.then
        finally:
            self.running -= 1
            self.changed.set()


class RaisingInvoker(ScriptedInvoker):
    async def invoke(self, invocation: Invocation) -> Result:
        self.calls.append(invocation)
        raise RuntimeError("invoker bug")


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Run ``app`` on a free 127.0.0.1 port; yields its base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def make_config(functions: dict[str, dict[str, Any]], config_dir: Path | None = None,
                **root: Any) -> RouterConfig:
    """A RouterConfig of http-target functions (the target is never called: tests inject invokers)."""
    fns = {name: {"http": {"url": "http://127.0.0.1:9/unused"}, **fn} for name, fn in functions.items()}
    cfg = RouterConfig.model_validate({"functions": fns, **root})
    if config_dir is not None:
        cfg._config_dir = config_dir
    return cfg


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
