"""The one injectable clock: wall time for event ages, monotonic time for durations, and sleeping."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Where the engine gets time from, so backoff and ages are testable without real waits."""

    def time(self) -> float:
        """Wall-clock epoch seconds (event ages, due times in the state store)."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds (durations)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
