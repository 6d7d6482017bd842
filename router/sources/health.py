"""What every polling source does when its service fails: back off, and log the same error at most once
a minute (it is always counted in ``router_source_errors_total`` by the caller)."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

LOG_INTERVAL = 60.0
"""The same error line is logged at most once in this many seconds."""


def backoff_delay(failures: int, first: float, cap: float, *, jitter: bool = True) -> float:
    """Exponential backoff after ``failures`` consecutive faults (>= 1): ``first``, doubling, at most
    ``cap``; with ``jitter`` a random 50-100 % of it, so routes failing together do not retry together."""
    delay = min(cap, first * 2 ** min(max(failures, 1) - 1, 30))
    return float(delay * random.uniform(0.5, 1.0) if jitter else delay)


class RateLimitedLog:
    """Logs an error line unless the very same line was logged less than ``interval`` seconds ago."""

    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL) -> None:
        self._logger = logger
        self._interval = interval
        self._last: tuple[str, float] = ("", 0.0)

    def error(self, text: str, *, extra: dict[str, Any], exc_info: BaseException | None = None) -> bool:
        """Log ``text`` unless it repeats the last line within the interval; True when it was logged."""
        now = time.monotonic()
        if text == self._last[0] and now - self._last[1] < self._interval:
            return False
        self._last = (text, now)
        self._logger.error(text, exc_info=exc_info, extra=extra)
        return True
