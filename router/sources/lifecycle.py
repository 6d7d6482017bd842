"""One route's lifecycle, written once for the polling sources: its health and its stop.

``RouteHealth`` is what a route's faults do: mark it not ready in ``/readyz``, count
``router_source_errors_total``, log the same error line at most once a minute, back off (exponential,
jittered, cut short by stop) and, once the service answers again, say so and mark the route ready.
``StopGate`` is the stop skeleton of ``router.sources.base.Poller``: ``run`` runs inside
``gate.running()``; ``stop(timeout)`` raises the stopping flag, cancels what is safe to cancel, gives the
rest ``timeout`` to finish, then cancels everything and waits until ``run`` has ended.
Time comes from the injectable clock (``router.clock``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from router.clock import Clock, SystemClock
from router.config.models import RouteConfig
from router.metrics import Metrics
from router.readiness import Readiness

T = TypeVar("T")

LOG_INTERVAL = 60.0
"""The same error line is logged at most once in this many seconds."""
BACKOFF = (0.5, 30.0)
"""The first and the largest pause after a fault, in seconds."""


def backoff_delay(failures: int, first: float, cap: float, *, jitter: bool = True) -> float:
    """Exponential backoff after ``failures`` consecutive faults (>= 1): ``first``, doubling, at most
    ``cap``; with ``jitter`` a random 50-100 % of it, so routes failing together do not retry together."""
    delay = min(cap, first * 2 ** min(max(failures, 1) - 1, 30))
    return float(delay * random.uniform(0.5, 1.0) if jitter else delay)


async def until_set(event: asyncio.Event, aw: Awaitable[T]) -> asyncio.Future[T]:
    """Wait for ``aw`` unless ``event`` is set first ("wait for stop or X"). Returns ``aw``'s future:
    done with its outcome, or cancelled when the event came first (``aw`` is then cancelled and awaited)."""
    task = asyncio.ensure_future(aw)
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(waiter, task, return_exceptions=True)
    return task


async def pause_unless(event: asyncio.Event, delay: float, clock: Clock) -> bool:
    """Sleep ``delay`` seconds on ``clock`` unless ``event`` is set first; False when it is set."""
    if event.is_set():
        return False
    await until_set(event, clock.sleep(delay))
    return not event.is_set()


class RateLimitedLog:
    """Logs an error line unless the very same line was logged less than ``interval`` seconds ago."""

    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL, *,
                 clock: Clock | None = None) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock or SystemClock()
        self._last: tuple[str, float] = ("", 0.0)

    def error(self, text: str, *, extra: dict[str, Any], exc_info: BaseException | None = None) -> bool:
        """Log ``text`` unless it repeats the last line within the interval; True when it was logged."""
        now = self._clock.monotonic()
        if text == self._last[0] and now - self._last[1] < self._interval:
            return False
        self._last = (text, now)
        self._logger.error(text, exc_info=exc_info, extra=extra)
        return True


class StopGate:
    """The stop skeleton of one poller: the stopping flag and event, whether ``run`` is running or has
    ended, and ``stop(timeout)``. ``pause`` sleeps unless the route stops first."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self.stopping = False
        self.stopped = asyncio.Event()
        self.running = False
        self._ended = asyncio.Event()

    @contextlib.contextmanager
    def run(self) -> Iterator[None]:
        """Wraps the body of ``Poller.run``: ``stop`` waits until it has left this block."""
        self.running = True
        try:
            yield
        finally:
            self._ended.set()

    async def stop(self, timeout: float | None, *,  # noqa: ASYNC109
                   cancel_idle: Callable[[], None] | None = None,
                   cancel_all: Callable[[], None] = lambda: None,
                   timed_out: Callable[[], None] = lambda: None) -> None:
        """Stop: no new work, ``cancel_idle()`` at once (what is safe to cancel), the rest gets ``timeout``
        seconds (None: ``run`` bounds its own end); past it ``timed_out()`` (its log line) and
        ``cancel_all()``. Returns once ``run`` has ended."""
        self.stopping = True
        self.stopped.set()
        if not self.running:
            return
        if cancel_idle is not None:
            cancel_idle()
        try:
            async with asyncio.timeout(timeout):
                await self._ended.wait()
        except TimeoutError:
            timed_out()
            cancel_all()
            await self._ended.wait()

    async def pause(self, delay: float) -> bool:
        """Sleep ``delay`` seconds unless the route stops first; False when it stops."""
        return await pause_unless(self.stopped, delay, self.clock)


class RouteHealth:
    """One route's health, as ``/readyz``, ``router_source_errors_total`` and the logs see it.

    Not ready (``connecting``) from the start until ``healthy()``; ``fault(message, error_type)`` counts,
    marks the route not ready with ``message`` and logs it (the same line at most once a minute);
    ``healthy()`` after faults logs that the ``service`` answers again. ``backoff_pause()`` waits the
    backoff of the consecutive faults so far, cut short by the gate's stop.
    """

    def __init__(self, route: RouteConfig, source_type: str, *, service: str, connecting: str,
                 metrics: Metrics, readiness: Readiness, logger: logging.Logger, gate: StopGate,
                 backoff: tuple[float, float] = BACKOFF) -> None:
        self.route = route.name
        self.extra: dict[str, Any] = {"route": route.name, "function": route.function}
        self.failures = 0  # consecutive faults
        self.ok = False
        self._service = service
        self._readiness = readiness
        self._logger = logger
        self._gate = gate
        self._backoff = backoff
        self._flag = f"route {route.name}"
        self.errors = metrics.source_errors.labels(route=route.name, type=source_type)
        self._limited = RateLimitedLog(logger, clock=gate.clock)
        readiness.set_flag(self._flag, False, connecting)

    def healthy(self) -> None:
        """The service answers: the route is ready (logged once after faults)."""
        if self.ok:
            return
        if self.failures:
            self._logger.info("route '%s': the %s answers again", self.route, self._service, extra=self.extra)
        self.failures = 0
        self.ok = True
        self._readiness.set_flag(self._flag, True)

    def fault(self, message: str, error_type: str, *, exc_info: BaseException | None = None,
              logged: bool = True, extra: dict[str, Any] | None = None) -> None:
        """A fault of the service: counted, the route not ready with ``message``, logged once a minute
        (``logged=False``: the caller logs it) with ``extra`` fields."""
        self.failures += 1
        self.not_ready(message)
        self.errors.inc()
        if logged:
            self.log_limited(f"route '{self.route}': {message}", error_type, exc_info=exc_info, extra=extra)

    def not_ready(self, reason: str) -> None:
        self.ok = False
        self._readiness.set_flag(self._flag, False, reason)

    def error(self, text: str, error_type: str, *, exc_info: BaseException | None = None) -> None:
        """An error that leaves the route ready (a checkpoint not saved, a throttled function): counted,
        logged once a minute."""
        self.errors.inc()
        self.log_limited(text, error_type, exc_info=exc_info)

    def log_limited(self, text: str, error_type: str, *, exc_info: BaseException | None = None,
                    extra: dict[str, Any] | None = None) -> None:
        """Log ``text`` as an error unless the same line was logged within the last minute."""
        fields = {**self.extra, "error_type": error_type}
        if extra:
            fields.update(extra)
        self._limited.error(text, exc_info=exc_info, extra=fields)

    def backoff(self, failures: int | None = None) -> float:
        """The pause after ``failures`` (default: the route's consecutive faults) faults, jittered."""
        return backoff_delay(self.failures if failures is None else failures, *self._backoff)

    async def backoff_pause(self, failures: int | None = None) -> bool:
        """Wait ``backoff(failures)`` unless the route stops first; False when it stops."""
        return await self._gate.pause(self.backoff(failures))
