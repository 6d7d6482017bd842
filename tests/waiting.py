"""The one way tests wait: poll a condition until it holds, with a deadline (STYLE: no bare sleeps, no
timing assertions). Polling, because what tests wait on here (files, metrics, queue depths, counters,
processes) has no event to wait on.

``until`` (async) and ``until_sync`` (threads and e2e tests) return the condition's first truthy value
and fail with ``what`` and the last value seen when the deadline passes; an async ``check`` is awaited.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

DEADLINE = 10.0
"""Seconds a condition gets unless a test says otherwise: generous, so a loaded CI machine does not flake."""


async def until(check: Callable[[], Any | Awaitable[Any]], what: str = "condition", *,
                deadline: float = DEADLINE, interval: float = 0.01) -> Any:
    """Poll ``check`` (sync or async) until it returns a truthy value; fail after ``deadline`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    last: Any = None
    while True:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if loop.time() > end:
            raise AssertionError(f"timed out after {deadline}s waiting for {what}; last value: {last!r}")
        await asyncio.sleep(interval)


def until_sync(check: Callable[[], Any], what: str = "condition", *, deadline: float = DEADLINE,
               interval: float = 0.05) -> Any:
    """``until`` for code without an event loop (e2e tests driving a router process)."""
    end = time.monotonic() + deadline
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline}s waiting for {what}; last value: {last!r}")
        time.sleep(interval)


def process_gone(pid: int) -> bool:
    """Whether process ``pid`` has ended: no longer exists, or is a zombie waiting for its reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat[stat.rindex(")") + 2:].startswith("Z")
