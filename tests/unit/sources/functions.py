"""Scripted functions for the source tests: an in-process invoker behind the real Dispatcher that records
every event it is given, and the results a handler returns."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from router.invocation import Invocation, Result

Handler = Callable[[dict[str, Any]], Awaitable[Result]]


def ok(value: Any = None) -> Result:
    return Result(payload=json.dumps(value).encode())


def fail(message: str = "boom") -> Result:
    return Result.error("ValueError", message)


class FunctionInvoker:
    """An in-process function: ``handler(event) -> Result``; records every event it was given."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.handler = handler
        self.events: list[dict[str, Any]] = []
        self.running = 0
        self.max_running = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def invoke(self, invocation: Invocation) -> Result:
        event = json.loads(invocation.payload)
        self.events.append(event)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            return await self.handler(event) if self.handler is not None else ok({"ok": True})
        finally:
            self.running -= 1

    def bodies(self) -> list[str]:
        return [r["body"] for e in self.events for r in e["Records"]]
