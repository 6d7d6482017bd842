"""The RabbitMQ transport of async invocations (``async_queue: amqp://...``): durable queues per function,
delayed retries through TTL queues that dead-letter back.

Topology (declared by every replica; declarations are idempotent, so replicas share it):

- ``router.async.<function>``: durable queue; one persistent message per async event (the payload as
  body, the request id, attempts made, first acceptance time, source and route in ``x-router-*``
  headers). Every replica consumes it: RabbitMQ hands each message to one consumer.
- ``router.async.<function>.retry.<ms>ms``: durable, ``x-message-ttl: <ms>``, dead-lettering to the
  default exchange with the function queue as routing key, ``x-expires`` ``<ms>`` + 15 min (redeclared
  before each publish, which renews it; every message expires long before its queue does).

Why one queue per delay with a queue-wide TTL, and not per-message ``expiration`` in one delay queue:
RabbitMQ expires a message only when it reaches the head of its queue, so a 50 ms retry behind a 5 min
one would wait 5 min. When all messages of a queue have the same TTL, the head is always the first to
expire, and every retry leaves at its time. Delays are rounded *down* to a ladder (1, 1.2, 1.5, 2,
2.5, 3, 4, 5, 6, 8 x 10^k ms; at most 25 % shorter): ten queues per decade at most, and no retry waits
longer than the policy decided (so the ``max_event_age`` decision stays true; with full jitter the
delay is random anyway). Delays under 10 ms go straight back to the function queue.
The delayed-message plugin would avoid the ladder but is not part of a stock RabbitMQ.

Every publish uses publisher confirms and ``mandatory`` (a message no queue takes is an error, not a
drop). The connection is aio-pika's robust one: after a loss it reconnects by itself, redeclares the
queues and resumes the consumers; ``run`` retries the first connection with backoff.

Taking deliveries: a consumer per function on a channel of its own, its prefetch the function's async
parallelism, buffers what the broker hands over until the worker has a slot for it. A delivery is acked
once its fate is settled (done, or its retry confirmed in a delay queue) and nacked with requeue when
handed back; a router that dies before the ack leaves it unacked, and the broker delivers it again (at
least once; the request id stays the same across deliveries, an idempotency key for the function).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from router import amqp, lineage
from router.clock import Clock
from router.errors import AsyncQueueError

log = logging.getLogger("router.async.amqp")

QUEUE_PREFIX = "router.async."
RETRY_EXPIRES_MARGIN_MS = 15 * 60 * 1000
MIN_DELAY_MS = 10
_LADDER = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)

H_REQUEST_ID = "x-router-request-id"
H_ATTEMPTS = "x-router-attempts"
H_ENQUEUED_AT = "x-router-enqueued-at-ms"
H_SOURCE = "x-router-source"
H_ROUTE = "x-router-route"
H_QUALIFIER = "x-router-qualifier"


def queue_name(function: str) -> str:
    return QUEUE_PREFIX + function


def retry_level_ms(delay: float) -> int:
    """The delay queue for ``delay`` seconds: the largest ladder step (ms) not above it; 0 = no delay."""
    ms = delay * 1000.0
    if ms < MIN_DELAY_MS:
        return 0
    exp = math.floor(math.log10(ms))
    best = 0
    for m in _LADDER:
        step = round(m * 10.0**exp)
        if step <= ms:
            best = max(best, step)
    return best


def retry_queue_name(function: str, level_ms: int) -> str:
    return f"{QUEUE_PREFIX}{function}.retry.{level_ms}ms"


@dataclass(frozen=True, slots=True)
class AmqpEvent:
    """One async event as carried by a message of ``router.async.<function>``."""

    request_id: str
    payload: bytes
    source: str
    route: str | None
    attempts: int  # attempts already made
    enqueued_at: float  # epoch seconds of first acceptance (for max_event_age)
    trace: str | None = None  # the X-Ray trace header it came with (router.lineage)
    qualifier: str | None = None  # the version or alias it was invoked with (None: $LATEST)

    def next(self, attempts: int) -> AmqpEvent:
        return replace(self, attempts=attempts)


def to_message(ev: AmqpEvent) -> Any:
    import aio_pika

    headers: dict[str, Any] = {
        H_REQUEST_ID: ev.request_id, H_ATTEMPTS: ev.attempts,
        H_ENQUEUED_AT: round(ev.enqueued_at * 1000), H_SOURCE: ev.source,
    }
    if ev.route is not None:
        headers[H_ROUTE] = ev.route
    if ev.trace is not None:
        headers[lineage.HEADER] = ev.trace
    if ev.qualifier is not None:
        headers[H_QUALIFIER] = ev.qualifier
    return aio_pika.Message(
        ev.payload, headers=headers, content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=ev.request_id,
    )


def from_message(message: Any, now: float) -> AmqpEvent:
    """The event of a delivered message. A message published by something else than the router (no
    ``x-router-*`` headers) is a new event: its message id (or a new id) as request id, ``now`` as age."""
    headers = message.headers or {}

    def text(key: str) -> str | None:
        v = headers.get(key)
        if isinstance(v, bytes):
            return v.decode("utf-8", "replace")
        return None if v is None else str(v)

    try:
        attempts = max(0, int(headers.get(H_ATTEMPTS, 0)))
    except (TypeError, ValueError):
        attempts = 0
    try:
        enqueued_at = int(headers[H_ENQUEUED_AT]) / 1000.0
    except (KeyError, TypeError, ValueError):
        enqueued_at = now
    return AmqpEvent(
        request_id=text(H_REQUEST_ID) or message.message_id or str(uuid.uuid4()),
        payload=bytes(message.body), source=text(H_SOURCE) or "amqp", route=text(H_ROUTE),
        attempts=attempts, enqueued_at=enqueued_at, trace=text(lineage.HEADER), qualifier=text(H_QUALIFIER),
    )


OnMessage = Callable[[Any], Awaitable[None]]


class AmqpQueue:
    """The broker side of the async path: one robust connection, one confirm channel for publishing,
    one channel per consumer (its prefetch is the function's async parallelism).

    ``run`` connects (retrying with backoff while the broker is away) and declares the function queues.
    ``publish`` waits up to ``publish_timeout`` for the connection and the confirm, but fails at once
    while the connection is down after a failed attempt (refused login, broker away): the caller answers
    503 at once instead of holding every request. ``close`` closes the connection (unacked messages go
    back to their queues).
    """

    kind = "amqp"

    def __init__(
        self, url: str, functions: list[str], *, clock: Clock, timeout: float = 10.0,
        backoff: tuple[float, float] = (0.5, 30.0), publish_timeout: float | None = None,
    ) -> None:
        self.url = url  # holds the password: only ever shown through amqp.redact
        self.where = f"async_queue {amqp.redact(url)}"
        self._functions = list(functions)
        self._clock = clock
        self._timeout = timeout  # connecting
        self._publish_timeout = timeout if publish_timeout is None else publish_timeout
        self._retry_after = max(1, math.ceil(self._publish_timeout))
        self._failed = False  # the last connection attempt failed (``problem`` says why)
        self._backoff = backoff
        self._name = f"router-async pid={os.getpid()}"
        self._conn: Any = None
        self._channel: Any = None
        self._consuming: list[Any] = []  # the consumers' channels, closed before the connection
        self._ready = asyncio.Event()
        self.problem: str | None = "not connected yet"

    # --- connection -------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and declare the function queues, retrying with backoff; returns once done."""
        delay = self._backoff[0]
        while not self._ready.is_set():
            try:
                await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                message, _ = amqp.describe_error(exc, self.url, setting="async_queue")
                self.problem = message
                self._failed = True
                log.error("%s: %s; retrying in %gs", self.where, message, delay)
                await self._drop()
                await self._clock.sleep(delay)
                delay = min(delay * 2, self._backoff[1])

    async def _connect(self) -> None:
        self._conn = await amqp.connect(self.url, self._name, timeout=self._timeout)
        self._channel = await self._conn.channel(publisher_confirms=True, on_return_raises=True)
        for function in self._functions:
            await self._channel.declare_queue(queue_name(function), durable=True)
        self.problem = None
        self._failed = False
        self._ready.set()
        log.info("%s: connected; %d function queues declared", self.where, len(self._functions))

    async def _drop(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        consuming, self._consuming = self._consuming, []
        if conn is not None:  # the consumers' acks reach the broker before the connection closes
            await amqp.close_settled(conn, *consuming)

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def ready(self) -> bool:
        """Connected now (false while the robust connection reconnects)."""
        conn = self._conn
        return self._ready.is_set() and conn is not None and not conn.is_closed and conn.connected.is_set()

    async def ping(self) -> bool:
        """The readiness check of ``/readyz``."""
        return self.ready()

    async def close(self) -> None:
        self._ready.clear()
        self.problem = "closed"
        await self._drop()

    # --- publishing -------------------------------------------------------------------------------------

    async def publish(
        self, function: str, *, request_id: str, payload: bytes, source: str, route: str | None, now: float,
        trace: str | None = None,
        qualifier: str | None = None,
    ) -> None:
        """Publish a new event to the function queue; returns once the broker confirmed it. Raises
        ``AsyncQueueError``."""
        await self.publish_event(function, AmqpEvent(
            request_id=request_id, payload=payload, source=source, route=route, attempts=0, enqueued_at=now,
            trace=trace, qualifier=qualifier))

    async def publish_event(self, function: str, ev: AmqpEvent, delay: float = 0.0) -> None:
        """Publish ``ev`` to the function queue, or through the delay queue of ``delay`` seconds; returns
        once the broker confirmed it. Raises ``AsyncQueueError``."""
        level = retry_level_ms(delay)
        target = retry_queue_name(function, level) if level else queue_name(function)
        where = f"{self.where}: function '{function}'"
        if self._failed and not self._ready.is_set():
            raise AsyncQueueError(f"{where}: not connected ({self.problem}); the event was not accepted",
                                  self._retry_after)

        async def publish() -> Any:
            await self._ready.wait()
            conn, channel = self._conn, self._channel
            if conn is None or channel is None:
                raise RuntimeError("the async_queue connection is closed (shutting down)")
            await conn.connected.wait()  # while the robust connection reconnects
            if level:
                # On the underlying channel: not remembered for restore (the robust channel would
                # keep one entry per call), and redeclared before each publish (renews x-expires).
                raw = await channel.get_underlay_channel()
                await raw.queue_declare(target, durable=True, arguments={
                    "x-message-ttl": level,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": queue_name(function),
                    "x-expires": level + RETRY_EXPIRES_MARGIN_MS,
                })
            return await channel.default_exchange.publish(to_message(ev), routing_key=target, mandatory=True)

        await amqp.publish_confirmed(
            publish, url=self.url, where=where, timeout=self._publish_timeout, setting="async_queue",
            error=lambda message: AsyncQueueError(message, self._retry_after),
            waiting=lambda: self.problem or "no confirm",
            returned=f"queue '{target}' is missing (message returned); it is declared at start: was it "
                     "deleted? restart the router to declare it again",
            refused="the broker refused the event ({}); check its logs (queue limits, disk or memory "
                    "alarms)",
        )

    # --- consuming --------------------------------------------------------------------------------------

    async def consume(self, function: str, prefetch: int, on_message: OnMessage) -> Consumer:
        """Start consuming the function queue on a channel of its own with ``prefetch``."""
        await self._ready.wait()
        channel = await self._conn.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.declare_queue(queue_name(function), durable=True)
        tag = await queue.consume(on_message)
        self._consuming.append(channel)
        return Consumer(queue, tag)

    async def depth(self) -> dict[str, int]:
        """Messages ready per function queue (passive declares; delayed retries are not counted); none
        while not connected."""
        if not self.ready():
            return {}
        return {function: await self._depth_of(function) for function in self._functions}

    async def _depth_of(self, function: str) -> int:
        async with asyncio.timeout(self._timeout):
            await self._ready.wait()
            raw = await self._channel.get_underlay_channel()
            ok = await raw.queue_declare(queue_name(function), passive=True)
        return int(ok.message_count or 0)

    async def deliveries(self, function: str, *, prefetch: int, lease: float) -> AmqpDeliveries:
        """Consume the function queue (retrying while it cannot); ``lease`` has no use here: a delivery
        stays this replica's until it is settled or the channel closes."""
        deliveries = AmqpDeliveries(self, function, prefetch)
        delay = 0.5
        while deliveries.consumer is None:
            try:
                deliveries.consumer = await self.consume(function, prefetch, deliveries.arrived)
            except (AsyncQueueError, OSError, RuntimeError, TimeoutError) as exc:
                log.error("%s: cannot consume %s (%s: %s); retrying in %gs", self.where, queue_name(function),
                          type(exc).__name__, exc, delay, extra={"function": function})
                await self._clock.sleep(delay)
                delay = min(2 * delay, 30.0)
        return deliveries


@dataclass(slots=True)
class Consumer:
    queue: Any
    tag: str

    async def cancel(self) -> None:
        """Stop deliveries; messages delivered but unacked stay with the caller to ack or nack."""
        with contextlib.suppress(Exception):
            await self.queue.cancel(self.tag)


class AmqpDeliveries:
    """The messages of one function queue, buffered until the worker takes them one at a time."""

    batch = 1

    def __init__(self, queue: AmqpQueue, function: str, prefetch: int) -> None:
        self._queue = queue
        self._function = function
        # The broker sends at most ``prefetch`` unacked messages per channel; after a reconnection, stale
        # ones of the old channel may still sit here (skipped).
        self._buffer: collections.deque[Any] = collections.deque()
        self._room = 2 * prefetch
        self._arrival = asyncio.Event()
        self.consumer: Consumer | None = None

    async def arrived(self, message: Any) -> None:
        """The consumer's callback: buffer ``message``, or hand it back when the buffer is full."""
        if len(self._buffer) >= self._room:
            await _nack(message)
            return
        self._buffer.append(message)
        self._arrival.set()

    async def wait(self) -> None:
        buffer = self._buffer
        while True:
            while buffer and not amqp.channel_open(buffer[0]):
                buffer.popleft()  # its channel closed: the broker has requeued it already
            if buffer:
                return
            self._arrival.clear()
            await self._arrival.wait()

    async def take(self, n: int) -> list[AmqpDelivery]:
        buffer = self._buffer
        taken: list[AmqpDelivery] = []
        now = self._queue._clock.time()
        while buffer and len(taken) < n:
            message = buffer.popleft()
            if amqp.channel_open(message):
                taken.append(AmqpDelivery(self._queue, self._function, message, from_message(message, now)))
        return taken

    async def close(self) -> None:
        """Cancel the broker consumer and hand back what was delivered but not taken."""
        if self.consumer is not None:
            await self.consumer.cancel()
        while self._buffer:
            await _nack(self._buffer.popleft())


class AmqpDelivery:
    """One message taken by the worker; acked or nacked exactly once."""

    __slots__ = ("_function", "_queue", "event", "message")

    def __init__(self, queue: AmqpQueue, function: str, message: Any, event: AmqpEvent) -> None:
        self._queue = queue
        self._function = function
        self.message = message
        self.event = event

    async def complete(self) -> None:
        await _ack(self.message)

    async def retry_later(self, delay: float, attempts: int) -> None:
        """Publish the event with ``attempts`` to the delay queue of ``delay`` (confirmed), then ack."""
        await self._queue.publish_event(self._function, self.event.next(attempts), delay)
        await _ack(self.message)

    async def release(self) -> None:
        await _nack(self.message)


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
