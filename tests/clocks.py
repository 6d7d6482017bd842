"""Clocks for tests: the system clock with a wall time the test sets (record ages, schedule ticks)."""

from __future__ import annotations

from collections.abc import Callable

from router.clock import SystemClock


class WallClock(SystemClock):
    """``router.clock.Clock`` whose ``time()`` is ``now()``; durations and sleeps stay real."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def time(self) -> float:
        return self._now()
