"""The async worker of one function over RabbitMQ (``async_queue``): consumes ``router.async.<function>``,
invokes, retries, sends destination records; acks only once the event's fate is settled.

The same policy as the state-store worker (``core/async_worker.py``, ``core/retry.py``): retries with
exponential backoff and full jitter, throttles and infrastructure errors retry without using up a retry
until ``max_event_age``, then ``on_success`` / ``on_failure`` records (or a counted drop).

Per message: the consumer's prefetch (the function's async parallelism) bounds what the broker hands
over; each message then waits for a concurrency slot of the function (shared with its sync callers), runs
as a task owned by this worker, and is settled by exactly one of:

- a retry: the event, with its attempts, is published (confirmed) to the delay queue of its backoff, then
  the message is acked;
- the end: the destination record is sent (or, if that fails, kept in the state store as a delivery event
  that the state-store worker retries), then the message is acked;
- a nack with requeue when the router cannot do either (broker or store away, shutdown before start).

A router that dies before the ack leaves the message unacked: the broker delivers it again (at least once;
the request id stays the same across deliveries, an idempotency key for the function).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from router.clock import Clock
from router.config.models import FunctionConfig
from router.core.amqp_async import (
    AmqpAsyncQueue,
    AmqpEvent,
    AsyncQueueError,
    Consumer,
    from_message,
    queue_name,
)
from router.core.async_worker import (
    DELIVERY_SOURCE,
    Execute,
    deliver_record,
    delivery_payload,
    event_extra,
    run_attempt,
)
from router.core.destination_record import build_record
from router.core.limits import FunctionLimit
from router.core.retry import EVENT_AGE_EXCEEDED, SUCCESS, Action, Uniform
from router.destinations.factory import FunctionDestinations
from router.invocation import Result
from router.metrics import Metrics

if TYPE_CHECKING:
    from router.state.store import StateStore

log = logging.getLogger("router.async.amqp")


@dataclass(slots=True)
class _Delivery:
    """One message being processed; ``settled`` once acked, nacked, or its fate handed on."""

    message: Any
    settled: bool = False


class AmqpAsyncWorker:
    def __init__(
        self,
        *,
        name: str,
        config: FunctionConfig,
        arn: str,
        queue: AmqpAsyncQueue,
        limit: FunctionLimit,
        prefetch: int,
        execute: Execute,
        destinations: FunctionDestinations,
        metrics: Metrics,
        clock: Clock,
        store: StateStore,
        wake_store: Callable[[], None],
        uniform: Uniform = random.uniform,
    ) -> None:
        self.name = name
        self._async = config.async_
        self._arn = arn
        self._queue = queue
        self._limit = limit
        self._prefetch = prefetch
        self._execute = execute
        self._dests = destinations
        self._metrics = metrics
        self._clock = clock
        self._store = store
        self._wake_store = wake_store
        self._uniform = uniform
        # Deliveries waiting for a slot. The broker sends at most ``prefetch`` unacked messages per
        # channel; after a reconnection, stale ones of the old channel may still sit here (skipped).
        self._buffer: asyncio.Queue[Any] = asyncio.Queue(maxsize=2 * prefetch)
        self._consumer: Consumer | None = None
        self.inflight: set[asyncio.Task[None]] = set()

    # --- consuming --------------------------------------------------------------------------------------

    async def consume_loop(self) -> None:
        """Run until cancelled. Cancelling stops consuming (what was delivered but not started goes back
        to the queue); in-flight events keep running."""
        delay = 0.5
        while self._consumer is None:
            try:
                self._consumer = await self._queue.consume(self.name, self._prefetch, self._on_message)
            except (AsyncQueueError, OSError, RuntimeError, TimeoutError) as exc:
                log.error("%s: cannot consume %s (%s: %s); retrying in %gs", self._queue.where,
                          queue_name(self.name), type(exc).__name__, exc, delay,
                          extra={"function": self.name})
                await self._clock.sleep(delay)
                delay = min(2 * delay, 30.0)
        message: Any = None
        try:
            while True:
                message = await self._buffer.get()
                if _stale(message):
                    message = None
                    continue
                await self._limit.acquire()  # STYLE: capacity before work
                try:
                    task = asyncio.create_task(self._run(message), name=f"async-amqp:{self.name}")
                except BaseException:
                    self._limit.release()
                    raise
                message = None
                self.inflight.add(task)
                task.add_done_callback(self.inflight.discard)
        finally:
            await asyncio.shield(self._stop(message))

    async def _on_message(self, message: Any) -> None:
        try:
            self._buffer.put_nowait(message)
        except asyncio.QueueFull:
            await _nack(message)

    async def _stop(self, taken: Any) -> None:
        """Cancel the broker consumer and hand back what was delivered but not started."""
        if self._consumer is not None:
            await self._consumer.cancel()
        pending = [taken] if taken is not None else []
        while not self._buffer.empty():
            pending.append(self._buffer.get_nowait())
        for message in pending:
            await _nack(message)

    # --- one event --------------------------------------------------------------------------------------

    async def _run(self, message: Any) -> None:
        """Owns one slot and one delivery: settles it, or hands it back when cancelled or failing."""
        delivery = _Delivery(message)
        try:
            await self._process(delivery)
        except asyncio.CancelledError:
            if not delivery.settled:
                await asyncio.shield(_nack(message))
            raise
        except Exception:
            log.exception("async worker: unexpected error; the event goes back to the queue",
                          extra={"function": self.name})
            if not delivery.settled:
                await _nack(message)
        finally:
            self._limit.release()

    async def _settle(self, delivery: _Delivery, ack: bool) -> None:
        delivery.settled = True
        await asyncio.shield(_ack(delivery.message) if ack else _nack(delivery.message))

    async def _process(self, delivery: _Delivery) -> None:
        ev = from_message(delivery.message, self._clock.time())
        done = await run_attempt(ev, name=self.name, cfg=self._async, clock=self._clock,
                                 execute=self._execute, uniform=self._uniform, metrics=self._metrics)
        d = done.decision
        if d is None:
            await self._finish(delivery, ev, EVENT_AGE_EXCEEDED, ev.attempts, None)
        elif d.action is Action.RETRY:
            try:
                await self._queue.publish(self.name, ev.next(d.attempts), d.delay)
            except AsyncQueueError as exc:
                log.error("cannot schedule the retry, the event goes back to the queue: %s", exc,
                          extra=self._extra(ev, ev.attempts + 1, done.result))
                await self._settle(delivery, ack=False)
                return
            await self._settle(delivery, ack=True)
        else:
            await self._finish(delivery, ev, d.condition, d.attempts, done.result)

    async def _finish(
        self, delivery: _Delivery, ev: AmqpEvent, condition: str, attempts: int, result: Result | None
    ) -> None:
        """Send the destination record of a finished event (or count the drop), then ack it."""
        which = "on_success" if condition == SUCCESS else "on_failure"
        dest = self._dests.get(which)
        if dest is None:
            if which == "on_failure":
                self._metrics.async_events_dropped.labels(self.name, condition).inc()
                log.warning("async event dropped (%s): no on_failure destination", condition,
                            extra=self._extra(ev, attempts, result))
            await self._settle(delivery, ack=True)
            return
        record = build_record(
            request_id=ev.request_id, function_arn=self._arn, condition=condition,
            approximate_invoke_count=attempts, payload=ev.payload, result=result, now=self._clock.time(),
        )
        extra = self._extra(ev, attempts, result)
        if not await deliver_record(dest, record, metrics=self._metrics, extra=extra):
            try:
                await asyncio.shield(self._store.enqueue(
                    function=self.name, request_id=ev.request_id, payload=delivery_payload(which, record),
                    source=DELIVERY_SOURCE, route=ev.route, now=self._clock.time(),
                ))
            except Exception as exc:
                log.error("cannot keep the undelivered record in the state store (%s: %s); the event goes "
                          "back to the queue and will be invoked again", type(exc).__name__, exc,
                          extra=extra)
                await self._settle(delivery, ack=False)
                return
            self._wake_store()
        await self._settle(delivery, ack=True)

    def _extra(self, ev: AmqpEvent, attempt: int, result: Result | None = None) -> dict[str, Any]:
        return event_extra(self.name, ev, attempt, result)


def _stale(message: Any) -> bool:
    """A delivery of a channel that has closed since: the broker has requeued it already."""
    try:
        return bool(message.channel.is_closed)
    except Exception:  # aio-pika raises when the channel is gone
        return True


async def _ack(message: Any) -> None:
    try:
        await message.ack()
    except Exception as exc:
        # The channel is gone: the broker requeued the message and delivers it again (a duplicate).
        log.warning("async_queue: cannot ack (%s: %s); the event will be delivered again",
                    type(exc).__name__, exc)


async def _nack(message: Any) -> None:
    # When the channel is gone, the broker has requeued the message already.
    with contextlib.suppress(Exception):
        await message.nack(requeue=True)
