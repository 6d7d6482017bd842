"""The async worker of one function: claims persisted events, invokes, retries, sends destination records.

Loop: take a concurrency slot, claim up to ``min(free slots, 10)`` due events, run each as a task owned by
this worker, then sleep until ``wake()`` (a new event), the next retry's due time, or the poll interval
(events of other replicas). Per event, see ``_process``; the policy itself is pure (``core/retry.py``).

A destination record that cannot be delivered is not lost: it is stored back in the state store as a
*delivery event* (``source="destination"``) and the original event is completed, so the function is not
invoked again; the worker retries the delivery with backoff until it succeeds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from router.clock import Clock
from router.config.models import AsyncConfig, FunctionConfig
from router.core.destination_record import build_record
from router.core.limits import FunctionLimit
from router.core.retry import (
    EVENT_AGE_EXCEEDED,
    SUCCESS,
    Action,
    Decision,
    Uniform,
    backoff_delay,
    decide,
    is_too_old,
)
from router.destinations.base import Destination
from router.destinations.factory import FunctionDestinations
from router.invocation import Invocation, Result
from router.metrics import Metrics

if TYPE_CHECKING:
    from router.state.store import QueuedEvent, StateStore

log = logging.getLogger("router.async")

CLAIM_BATCH = 10
"""Most events claimed in one round trip."""
LEASE_MARGIN = 60.0
"""A claim's lease is the function timeout plus this, time for the destination and bookkeeping."""
DELIVERY_SOURCE = "destination"
"""``source`` of delivery events: a destination record waiting for its delivery, not an invocation."""

Execute = Callable[[Invocation], Awaitable[Result]]


@dataclass(slots=True)
class _Claim:
    """One claimed event; ``settled`` once its fate was handed to the store (complete, retry_later)."""

    event: QueuedEvent
    settled: bool = False


class AsyncWorker:
    def __init__(
        self,
        *,
        name: str,
        config: FunctionConfig,
        arn: str,
        store: StateStore,
        limit: FunctionLimit,
        execute: Execute,
        destinations: FunctionDestinations,
        metrics: Metrics,
        clock: Clock,
        uniform: Uniform = random.uniform,
        poll_interval: float = 1.0,
    ) -> None:
        self.name = name
        self._async = config.async_
        self._lease = config.timeout + LEASE_MARGIN
        self._arn = arn
        self._store = store
        self._limit = limit
        self._execute = execute
        self._dests = destinations
        self._metrics = metrics
        self._clock = clock
        self._uniform = uniform
        self._poll = poll_interval
        self._wake = asyncio.Event()
        self.inflight: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """Claim now: a new event was submitted or a retry was scheduled."""
        self._wake.set()

    # --- claiming ---------------------------------------------------------------------------------------

    async def claim_loop(self) -> None:
        """Run until cancelled. Cancelling stops claiming only; in-flight events keep running.

        Slots are taken only when an event is due (woken by ``submit``, or the store says one is
        claimable now): an idle worker holds none, so it never throttles the function's sync callers.
        """
        due = await self._is_due()  # events may be left from an earlier run
        while True:
            if not due:
                await self._idle()
                due = await self._is_due()
                continue
            await self._limit.acquire()
            held = 1  # slots taken before claiming (STYLE: capacity before work)
            events: list[QueuedEvent] = []
            try:
                while held < CLAIM_BATCH and self._limit.try_acquire():
                    held += 1
                asked = held
                self._wake.clear()
                events = await self._claim(asked)
                for ev in events:
                    task = asyncio.create_task(self._run_event(ev), name=f"async:{self.name}:{ev.id}")
                    self.inflight.add(task)
                    task.add_done_callback(self.inflight.discard)
                    held -= 1  # the task owns its slot now
            finally:
                for _ in range(held):
                    self._limit.release()
            due = len(events) == asked  # a full batch: more may be waiting

    async def _is_due(self) -> bool:
        """Whether an event can be claimed now, without holding a slot."""
        if self._wake.is_set():
            return True
        try:
            at = await self._store.next_available_at(self.name)
        except Exception as exc:
            log.error("async worker: cannot read the queue: %s: %s", type(exc).__name__, exc,
                      extra={"function": self.name})
            return False
        return at is not None and at <= self._clock.time()

    async def _claim(self, n: int) -> list[QueuedEvent]:
        """Claim up to ``n`` due events; [] after logging when the store fails. Cancel-safe: a claim that
        completes after cancellation is handed back."""
        fut = asyncio.ensure_future(
            self._store.claim(self.name, n, now=self._clock.time(), lease=self._lease)
        )
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            await asyncio.wait({fut})
            if not fut.cancelled() and fut.exception() is None:
                for ev in fut.result():
                    await self._store.release(ev.id)
            raise
        except Exception as exc:
            log.error("async worker: cannot claim events: %s: %s", type(exc).__name__, exc,
                      extra={"function": self.name})
            await self._clock.sleep(self._poll)
            return []

    async def _idle(self) -> None:
        """Sleep until woken, the next due retry, or the poll interval."""
        delay = self._poll
        try:
            due = await self._store.next_available_at(self.name)
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

    # --- one event --------------------------------------------------------------------------------------

    async def _run_event(self, ev: QueuedEvent) -> None:
        """Owns one slot and one claim: settles the event, or hands it back when cancelled or failing."""
        claim = _Claim(ev)
        try:
            await self._process(claim)
        except asyncio.CancelledError:
            if not claim.settled:
                await asyncio.shield(self._release(ev))
            raise
        except Exception:
            log.exception("async worker: unexpected error; the event goes back to the queue",
                          extra=self._extra(ev, ev.attempts + 1))
            if not claim.settled:
                await self._release(ev)
        finally:
            self._limit.release()

    async def _release(self, ev: QueuedEvent) -> None:
        try:
            await self._store.release(ev.id)
        except Exception as exc:
            # The lease runs out on its own; the event is delivered again then.
            log.error("async worker: cannot hand back event: %s: %s", type(exc).__name__, exc,
                      extra=self._extra(ev, ev.attempts))

    async def _settle(self, claim: _Claim, action: Awaitable[None]) -> None:
        claim.settled = True
        await asyncio.shield(action)

    async def _process(self, claim: _Claim) -> None:
        ev = claim.event
        if ev.source == DELIVERY_SOURCE:
            await self._redeliver(claim)
            return
        done = await run_attempt(ev, name=self.name, cfg=self._async, clock=self._clock,
                                 execute=self._execute, uniform=self._uniform, metrics=self._metrics)
        d = done.decision
        if d is None:
            await self._finish(claim, EVENT_AGE_EXCEEDED, ev.attempts, None)
        elif d.action is Action.RETRY:
            await self._settle(claim, self._store.retry_later(
                ev.id, available_at=done.at + d.delay, attempts=d.attempts))
            self.wake()
        else:
            await self._finish(claim, d.condition, d.attempts, done.result)

    async def _finish(self, claim: _Claim, condition: str, attempts: int, result: Result | None) -> None:
        """Send the destination record of a finished event (or count the drop), then complete it."""
        ev = claim.event
        which = "on_success" if condition == SUCCESS else "on_failure"
        dest = self._dests.get(which)
        if dest is None:
            if which == "on_failure":
                self._metrics.async_events_dropped.labels(self.name, condition).inc()
                log.warning("async event dropped (%s): no on_failure destination", condition,
                            extra=self._extra(ev, attempts, result))
            await self._settle(claim, self._store.complete(ev.id))
            return
        record = build_record(
            request_id=ev.request_id, function_arn=self._arn, condition=condition,
            approximate_invoke_count=attempts, payload=ev.payload, result=result, now=self._clock.time(),
        )
        if await self._deliver(dest, record, ev, attempts):
            await self._settle(claim, self._store.complete(ev.id))
        else:
            await self._settle(claim, self._park(ev, which, record))

    async def _park(self, ev: QueuedEvent, which: str, record: dict[str, Any]) -> None:
        """Keep an undelivered record as a delivery event, then complete the invocation's event."""
        await self._store.enqueue(
            function=self.name, request_id=ev.request_id, payload=delivery_payload(which, record),
            source=DELIVERY_SOURCE, route=ev.route, now=self._clock.time(),
        )
        await self._store.complete(ev.id)

    async def _redeliver(self, claim: _Claim) -> None:
        ev = claim.event
        try:
            envelope = json.loads(ev.payload)
            which, record = envelope["destination"], envelope["record"]
        except (ValueError, KeyError, TypeError):
            which, record = "", None
        dest = self._dests.get(which) if record is not None else None
        if dest is None:
            self._metrics.async_events_dropped.labels(self.name, "DestinationRemoved").inc()
            log.warning("destination record dropped: the function has no %s destination any more",
                        which or "such", extra=self._extra(ev, ev.attempts))
            await self._settle(claim, self._store.complete(ev.id))
            return
        assert record is not None
        if await self._deliver(dest, record, ev, ev.attempts):
            await self._settle(claim, self._store.complete(ev.id))
            return
        delay = backoff_delay(ev.attempts + 1, self._async.backoff.initial, self._async.backoff.max,
                              self._uniform)
        await self._settle(claim, self._store.retry_later(
            ev.id, available_at=self._clock.time() + delay, attempts=ev.attempts + 1))
        self.wake()

    async def _deliver(
        self, dest: Destination, record: dict[str, Any], ev: QueuedEvent, attempt: int
    ) -> bool:
        return await deliver_record(dest, record, metrics=self._metrics, extra=self._extra(ev, attempt))

    def _extra(self, ev: QueuedEvent, attempt: int, result: Result | None = None) -> dict[str, Any]:
        return event_extra(self.name, ev, attempt, result)


class AsyncEvent(Protocol):
    """What an attempt needs of a queued async event (state store or RabbitMQ)."""

    @property
    def payload(self) -> bytes: ...
    @property
    def source(self) -> str: ...
    @property
    def route(self) -> str | None: ...
    @property
    def request_id(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def enqueued_at(self) -> float: ...


@dataclass(slots=True)
class Attempted:
    """What one attempt of an async event came to. ``decision`` is None when the event was older than
    ``max_event_age`` and not invoked; ``at`` is the clock time of the decision (retries count from it)."""

    result: Result | None
    decision: Decision | None
    at: float


async def run_attempt(ev: AsyncEvent, *, name: str, cfg: AsyncConfig, clock: Clock, execute: Execute,
                      uniform: Uniform, metrics: Metrics) -> Attempted:
    """One attempt of an async event, the same for every transport: the age check, the invocation, and
    the retry policy's decision (``core/retry.py``), logged and counted. Settling it is the caller's."""
    now = clock.time()
    if is_too_old(now, ev.enqueued_at, cfg.max_event_age):
        log.warning("async event is older than max_event_age (%gs): not invoked", cfg.max_event_age,
                    extra=event_extra(name, ev, ev.attempts))
        return Attempted(None, None, now)
    metrics.async_event_age.labels(name).observe(max(0.0, now - ev.enqueued_at))
    inv = Invocation(
        function=name, payload=ev.payload, source=ev.source, route=ev.route, request_id=ev.request_id,
        invocation_type="async", attempt=ev.attempts + 1, enqueued_at=ev.enqueued_at,
    )
    result = await execute(inv)
    now = clock.time()
    d = decide(
        result, attempts=ev.attempts, retries=cfg.retries, now=now, enqueued_at=ev.enqueued_at,
        max_event_age=cfg.max_event_age, initial=cfg.backoff.initial, maximum=cfg.backoff.max,
        uniform=uniform,
    )
    if d.action is Action.RETRY:
        if not d.throttled:
            metrics.retries.labels(name).inc()
        log.info(
            "async attempt %d failed (%s); %s in %.3fs", inv.attempt, result.error_summary(),
            "retrying (throttled, no retry used)" if d.throttled else "retrying", d.delay,
            extra=event_extra(name, ev, inv.attempt, result),
        )
    elif d.action is Action.FAIL:
        log.warning("async event failed for good (%s) after %d attempts: %s", d.condition, d.attempts,
                    result.error_summary(), extra=event_extra(name, ev, inv.attempt, result))
    return Attempted(result, d, now)


def event_extra(function: str, ev: AsyncEvent, attempt: int, result: Result | None = None) -> dict[str, Any]:
    """The log fields of an async event's attempt."""
    extra: dict[str, Any] = {
        "function": function, "route": ev.route, "request_id": ev.request_id, "attempt": attempt,
    }
    if result is not None and result.error_type is not None:
        extra["error_type"] = result.error_type.value
    return extra


def delivery_payload(which: str, record: dict[str, Any]) -> bytes:
    """The payload of a delivery event: the record and the destination (on_success / on_failure)."""
    return json.dumps({"destination": which, "record": record}, separators=(",", ":")).encode()


async def deliver_record(
    dest: Destination, record: dict[str, Any], *, metrics: Metrics, extra: dict[str, Any]
) -> bool:
    """Send ``record``; count and log the outcome. False when it failed (the caller keeps the record)."""
    function = str(extra["function"])
    try:
        await dest.send(record)
    except Exception as exc:
        metrics.destination_deliveries.labels(function, dest.kind, "error").inc()
        log.warning("%s destination failed, the record is kept and retried: %s", dest.kind, exc,
                    extra=extra)
        return False
    metrics.destination_deliveries.labels(function, dest.kind, "success").inc()
    return True
