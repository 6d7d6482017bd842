"""The async worker of one function over one queue transport: takes deliveries, invokes, retries, sends
destination records, and settles each delivery once its fate is known.

Loop: wait until a delivery may be there (holding no slot, so an idle worker never throttles the
function's sync callers), take a concurrency slot (and up to the transport's batch more), take that many
deliveries, run each as a task owned by this worker. Per delivery, see ``_process``; one attempt is
``core/attempt.py``, the policy itself is pure (``core/retry.py``). The same over the state store and
RabbitMQ (``core/async_queue.py``).

Each delivery is settled by exactly one of: a retry (the queue delivers it again after the backoff), the
end (the destination record is sent, or the drop counted, then it is completed), or a hand-back (release)
when the router cannot do either (queue or store away, shutdown before it ran).

A destination record that cannot be delivered is not lost: it is kept in the state store's queue as a
*delivery event* (``source="destination"``) and the original event is completed, so the function is not
invoked again; the worker of that queue retries the delivery with backoff until it succeeds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from router.clock import Clock
from router.config.models import AsyncConfig, FunctionConfig
from router.core.async_queue import AsyncEvent, AsyncQueue, Delivery
from router.core.attempt import (
    DELIVERY_SOURCE,
    Execute,
    deliver_record,
    delivery_payload,
    event_extra,
    run_attempt,
)
from router.core.destination_record import build_record
from router.core.failures import FailedEvents
from router.core.history import HistoryRecorder
from router.core.limits import DEFAULT_ASYNC_PARALLELISM, FunctionLimit
from router.core.retry import EVENT_AGE_EXCEEDED, SUCCESS, Action, Uniform, backoff_delay
from router.destinations.factory import FunctionDestinations
from router.errors import Unavailable
from router.invocation import Result
from router.metrics import Metrics

log = logging.getLogger("router.async")

LEASE_MARGIN = 60.0
"""A delivery's lease is the function timeout plus this, time for the destination and bookkeeping."""


class _Settling:
    """One delivery being processed; ``settled`` once its fate was handed to the queue."""

    __slots__ = ("delivery", "settled")

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.settled = False


class AsyncWorker:
    """Runs the async events of function ``name`` taken from ``queue``; undelivered destination records
    are kept in ``keep`` (the state store's queue: the same as ``queue`` unless that is RabbitMQ)."""

    def __init__(
        self,
        *,
        name: str,
        config: FunctionConfig,
        arn: str,
        queue: AsyncQueue,
        keep: AsyncQueue,
        limit: FunctionLimit,
        execute: Execute,
        destinations: FunctionDestinations,
        metrics: Metrics,
        clock: Clock,
        uniform: Uniform = random.uniform,
        failures: FailedEvents | None = None,
        settings: Callable[[], AsyncConfig] | None = None,
        history: HistoryRecorder | None = None,
    ) -> None:
        self.name = name
        # ``settings``: the function's ``async`` settings now (retries and event age changed at run time
        # through PutFunctionEventInvokeConfig: ``router.core.controls``); default the config's.
        self._settings = settings or (lambda: config.async_)
        self._lease = config.timeout + LEASE_MARGIN
        self._arn = arn
        self.queue = queue
        self._keep = keep
        self._limit = limit
        self._prefetch = limit.cap or DEFAULT_ASYNC_PARALLELISM  # most deliveries held at once
        self._execute = execute
        self._dests = destinations
        self._metrics = metrics
        self._clock = clock
        self._uniform = uniform
        self._failures = failures
        self._history = history
        self.inflight: set[asyncio.Task[None]] = set()

    # --- taking -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled. Cancelling stops taking (what arrived but was not taken goes back to the
        queue); in-flight events keep running."""
        deliveries = await self.queue.deliveries(self.name, prefetch=self._prefetch, lease=self._lease)
        limit = self._limit
        try:
            while True:
                await deliveries.wait()
                await limit.acquire()
                held = 1  # slots taken before taking deliveries (STYLE: capacity before work)
                try:
                    while held < deliveries.batch and limit.try_acquire():
                        held += 1
                    for delivery in await deliveries.take(held):
                        task = asyncio.create_task(self._run(delivery), name=f"async:{self.name}")
                        self.inflight.add(task)
                        task.add_done_callback(self.inflight.discard)
                        held -= 1  # the task owns its slot now
                finally:
                    for _ in range(held):
                        limit.release()
        finally:
            await asyncio.shield(deliveries.close())

    # --- one event --------------------------------------------------------------------------------------

    async def _run(self, delivery: Delivery) -> None:
        """Owns one slot and one delivery: settles it, or hands it back when cancelled or failing."""
        work = _Settling(delivery)
        try:
            await self._process(work)
        except asyncio.CancelledError:
            if not work.settled:
                await asyncio.shield(self._release(delivery))
            raise
        except Exception:
            ev = delivery.event
            log.exception("async worker: unexpected error; the event goes back to the queue",
                          extra=self._extra(ev, ev.attempts + 1))
            if not work.settled:
                await self._release(delivery)
        finally:
            self._limit.release()

    async def _release(self, delivery: Delivery) -> None:
        try:
            await delivery.release()
        except Exception as exc:
            # The lease runs out on its own; the event is delivered again then.
            ev = delivery.event
            log.error("async worker: cannot hand back event: %s: %s", type(exc).__name__, exc,
                      extra=self._extra(ev, ev.attempts))

    async def _settle(self, work: _Settling, action: Awaitable[None]) -> None:
        work.settled = True
        await asyncio.shield(action)

    async def _retry(self, work: _Settling, delay: float, attempts: int, result: Result | None) -> None:
        """Hand the event to the queue for another attempt; back to the queue as it was if it cannot."""
        try:
            await self._settle(work, work.delivery.retry_later(delay, attempts))
        except Unavailable as exc:
            ev = work.delivery.event
            log.error("cannot schedule the retry, the event goes back to the queue: %s", exc,
                      extra=self._extra(ev, ev.attempts + 1, result))
            await asyncio.shield(self._release(work.delivery))

    async def _process(self, work: _Settling) -> None:
        ev = work.delivery.event
        if ev.source == DELIVERY_SOURCE:
            await self._redeliver(work)
            return
        if self._history is not None and self.queue.kind != "sql" and await self._history.is_cancelled(
                ev.request_id):  # cancelled while in RabbitMQ: completed without invoking
            await self._settle(work, work.delivery.complete())
            return
        done = await run_attempt(ev, name=self.name, cfg=self._settings(), clock=self._clock,
                                 execute=self._execute, uniform=self._uniform, metrics=self._metrics)
        d = done.decision
        if d is None:
            await self._finish(work, EVENT_AGE_EXCEEDED, ev.attempts, None, done.trace)
        elif d.action is Action.RETRY:
            if self._history is not None:
                self._history.retrying(self.name, ev.request_id)
            await self._retry(work, d.delay, d.attempts, done.result)
        else:
            await self._finish(work, d.condition, d.attempts, done.result, done.trace)

    async def _finish(self, work: _Settling, condition: str, attempts: int, result: Result | None,
                      trace: str | None) -> None:
        """Send the destination record of a finished event (or count the drop), then complete it.
        ``trace``: the header of its last invocation, which the record carries (recursive loops)."""
        delivery = work.delivery
        ev = delivery.event
        which = "on_success" if condition == SUCCESS else "on_failure"
        if which == "on_failure" and self._failures is not None:  # kept for `router failures`
            await self._failures.keep(
                function=self.name, route=ev.route, source=ev.source, request_id=ev.request_id,
                condition=condition, attempts=attempts, payload=ev.payload, result=result,
                qualifier=ev.qualifier,
                record=build_record(request_id=ev.request_id, function_arn=self._arn, condition=condition,
                                    approximate_invoke_count=attempts, payload=ev.payload, result=result,
                                    now=self._clock.time()))
        if self._history is not None:
            self._history.finished(self.name, ev.request_id, "succeeded" if condition == SUCCESS
                                   else "dropped" if result is None else "failed",
                                   route=ev.route, source=ev.source, enqueued_at=ev.enqueued_at,
                                   payload=ev.payload)
        dead_lettered = which == "on_failure" and await self._dead_letter(ev, attempts, result, trace)
        dest = self._dests.get(which)
        if dest is None:
            if which == "on_failure" and not dead_lettered:
                self._metrics.async_events_dropped.labels(self.name, condition).inc()
                log.warning("async event dropped (%s): no on_failure destination", condition,
                            extra=self._extra(ev, attempts, result))
            await self._settle(work, delivery.complete())
            return
        record = build_record(
            request_id=ev.request_id, function_arn=self._arn, condition=condition,
            approximate_invoke_count=attempts, payload=ev.payload, result=result, now=self._clock.time(),
        )
        extra = self._extra(ev, attempts, result)
        if not await deliver_record(dest, record, metrics=self._metrics, extra=extra, trace=trace):
            try:
                await asyncio.shield(self._keep.publish(
                    self.name, request_id=ev.request_id, payload=delivery_payload(which, record),
                    source=DELIVERY_SOURCE, route=ev.route, now=self._clock.time(), trace=trace,
                ))
            except Exception as exc:
                log.error("cannot keep the undelivered record in the state store (%s: %s); the event goes "
                          "back to the queue and will be invoked again", type(exc).__name__, exc,
                          extra=extra)
                await self._settle(work, self._release(delivery))
                return
        await self._settle(work, delivery.complete())

    async def _dead_letter(self, ev: AsyncEvent, attempts: int, result: Result | None,
                           trace: str | None) -> bool:
        """Send a failed event to the function's dead-letter queue, if it has one; whether it went there.
        A queue that refuses it is counted and logged (Lambda's ``DeadLetterErrors``); the event is among
        the failed events all the same. Not shielded: a stop meanwhile leaves the event unsettled, so it
        runs again later (at least once, as every async event)."""
        dlq = self._dests.dead_letter
        if dlq is None:
            return False
        try:
            await dlq.send(request_id=ev.request_id, payload=ev.payload, result=result, trace=trace)
        except Exception as exc:
            self._metrics.dead_letter_errors.labels(self.name).inc()
            log.error("async event not dead-lettered: %s", exc, extra=self._extra(ev, attempts, result))
            return False
        return True

    async def _redeliver(self, work: _Settling) -> None:
        """A kept destination record: send it again, retried with backoff until it is delivered."""
        delivery = work.delivery
        ev = delivery.event
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
            await self._settle(work, delivery.complete())
            return
        if await deliver_record(dest, record, metrics=self._metrics, extra=self._extra(ev, ev.attempts),
                                trace=ev.trace):
            await self._settle(work, delivery.complete())
            return
        backoff = self._settings().backoff
        delay = backoff_delay(ev.attempts + 1, backoff.initial, backoff.max, self._uniform)
        await self._retry(work, delay, ev.attempts + 1, None)

    def _extra(self, ev: AsyncEvent, attempt: int, result: Result | None = None) -> dict[str, Any]:
        return event_extra(self.name, ev, attempt, result)
