"""The SQL state store as the transport of async invocations: events are rows, taken by claiming them with a
lease (``StateStore.enqueue / claim / complete / retry_later / release / next_available_at``).

A function's deliveries are claimed when one is due: woken at once by a publish or a retry of this
replica, else when the store says the next one is due, else every ``poll_interval`` (events of other
replicas). A claim's lease runs out by itself when a router dies with it: the event is claimed again then.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from router.clock import Clock, SystemClock

if TYPE_CHECKING:
    from router.state.store import QueuedEvent, StateStore

log = logging.getLogger("router.async")

CLAIM_BATCH = 10
"""Most events claimed in one round trip."""


class SqlQueue:
    """Async events in the state store, one wake-up per function for what this replica publishes."""

    kind = "sql"

    def __init__(self, store: StateStore, *, clock: Clock | None = None, poll_interval: float = 1.0) -> None:
        self.store = store
        self._clock: Clock = clock or SystemClock()
        self._poll = poll_interval
        self._wakes: dict[str, asyncio.Event] = {}

    def _wake(self, function: str) -> asyncio.Event:
        wake = self._wakes.get(function)
        if wake is None:
            wake = self._wakes[function] = asyncio.Event()
        return wake

    async def publish(
        self, function: str, *, request_id: str, payload: bytes, source: str, route: str | None, now: float,
        trace: str | None = None,
        qualifier: str | None = None,
    ) -> None:
        """Persist a new event (committed when this returns) and wake the function's worker. Raises
        ``StateStoreError`` (``StateStoreUnavailable``: not accepted)."""
        await self.store.enqueue(function=function, request_id=request_id, payload=payload, source=source,
                                 route=route, now=now, trace=trace, qualifier=qualifier)
        self._wake(function).set()

    async def deliveries(self, function: str, *, prefetch: int, lease: float) -> SqlDeliveries:
        return SqlDeliveries(self, function, lease)

    async def depth(self) -> dict[str, int]:
        return await self.store.depth()

    async def ping(self) -> bool:
        return await self.store.ping()

    async def run(self) -> None:
        """Nothing to connect: the store is opened by its owner."""

    async def close(self) -> None:
        """Nothing to close: the store is closed by its owner."""


class SqlDeliveries:
    """Claims of one function's due events."""

    batch = CLAIM_BATCH

    def __init__(self, queue: SqlQueue, function: str, lease: float) -> None:
        self._queue = queue
        self._store = queue.store
        self._clock = queue._clock
        self._poll = queue._poll
        self._function = function
        self._lease = lease
        self._wake = queue._wake(function)
        self._due = False  # the last claim was a full batch: more may be waiting
        self._started = False

    async def wait(self) -> None:
        """Until an event is due: at once after a full batch; events may be left from an earlier run."""
        if self._due:
            return
        if self._started:
            await self._idle()
        self._started = True
        while not await self._is_due():
            await self._idle()

    async def _is_due(self) -> bool:
        """Whether an event can be claimed now, without holding a slot."""
        if self._wake.is_set():
            return True
        try:
            at = await self._store.next_available_at(self._function)
        except Exception as exc:
            log.error("async worker: cannot read the queue: %s: %s", type(exc).__name__, exc,
                      extra={"function": self._function})
            return False
        return at is not None and at <= self._clock.time()

    async def _idle(self) -> None:
        """Sleep until woken, the next due retry, or the poll interval."""
        delay = self._poll
        try:
            due = await self._store.next_available_at(self._function)
        except Exception:
            due = None
        if due is not None:
            delay = min(delay, max(0.0, due - self._clock.time()))
        if delay <= 0 or self._wake.is_set():
            return
        sleeper = asyncio.ensure_future(self._clock.sleep(delay))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)

    async def take(self, n: int) -> list[SqlDelivery]:
        """Claim up to ``n`` due events; [] after logging when the store fails. Cancel-safe: a claim that
        completes after cancellation is handed back."""
        self._wake.clear()
        events = await self._claim(n)
        self._due = len(events) == n
        return [SqlDelivery(self, ev) for ev in events]

    async def _claim(self, n: int) -> list[QueuedEvent]:
        store = self._store
        fut = asyncio.ensure_future(
            store.claim(self._function, n, now=self._clock.time(), lease=self._lease)
        )
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            await asyncio.wait({fut})
            if not fut.cancelled() and fut.exception() is None:
                for ev in fut.result():
                    await store.release(ev.id)
            raise
        except Exception as exc:
            log.error("async worker: cannot claim events: %s: %s", type(exc).__name__, exc,
                      extra={"function": self._function})
            await self._clock.sleep(self._poll)
            return []

    async def close(self) -> None:
        """Nothing arrives unclaimed: claimed events are their tasks' to settle."""


class SqlDelivery:
    """One claimed event (leased to this replica until settled)."""

    __slots__ = ("_of", "event")

    def __init__(self, of: SqlDeliveries, event: QueuedEvent) -> None:
        self._of = of
        self.event = event

    async def complete(self) -> None:
        await self._of._store.complete(self.event.id)

    async def retry_later(self, delay: float, attempts: int) -> None:
        of = self._of
        await of._store.retry_later(self.event.id, available_at=of._clock.time() + delay, attempts=attempts)
        of._wake.set()

    async def release(self) -> None:
        await self._of._store.release(self.event.id)
