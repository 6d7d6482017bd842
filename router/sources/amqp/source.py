"""The amqp source: Lambda's RabbitMQ event source mapping over an aio-pika robust connection.

The broker pushes up to ``prefetch`` unacknowledged messages (basic.qos) into a small buffer. Workers
(``prefetch // batch_size`` of them) each take a concurrency slot of the function *before* they take
messages; one at a time gathers up to ``batch_size`` within ``batch_window`` (and under the payload
limit), then invokes the function once with Lambda's RabbitMQ event (``amqp.event``) and settles every
message of the batch (``amqp.settle``): ack on success; on failure (with ``bisect_on_error``, the
default, only for the messages that fail alone once the failed batch was bisected) reject to the
queue's dead-letter exchange (``on_error: dead_letter``) or a confirmed, delayed copy through
``<queue>.router-delay`` then ack (``on_error: requeue``, dead-lettered after ``max_redeliveries``).
A throttled or unreachable function is not the messages' fault: they are handed back after a backoff.
A message too large for the payload limit is dead-lettered with a reason; messages no filter matches are
acked uninvoked.

The queue is consumed as it exists (a passive declare, on a channel of its own first, so a missing
queue closes only that one), as Lambda never declares one; with ``declare: true`` the router declares it
with ``durable`` / ``queue_type`` / ``arguments``.

Faults: an unreachable broker, refused login, missing queue (unless ``declare: true``), mismatching
queue arguments (``declare: true``) or a consumer the broker cancelled (queue deleted) are logged (never
the password), counted in ``router_source_errors_total``, mark the route not ready and are retried with
exponential backoff (capped at 30 s). Once connected, the robust connection re-establishes itself after
a loss (every second) and the robust channel re-applies qos and the consumer; meanwhile the route is
not ready.
Messages delivered on the lost channel cannot be acked any more: the broker redelivers them
(``redelivered: true``); buffered ones are dropped unstarted.
``stop``: basic.cancel, batches being gathered are handed back (nack with requeue) at once, running
batches get ``timeout`` to finish and be acked, then the buffer is handed back and the connection closed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from router import lineage
from router.amqp import (
    channel_open,
    close_settled,
    connect,
    describe_error,
    host_of,
    redact,
    user_of,
    vhost_of,
)
from router.clock import Clock
from router.config.models import AmqpSourceConfig, AwsConfig, RouteConfig
from router.core.dispatcher import Dispatch
from router.filters import compile_filters, mq_filter_data
from router.invocation import Invocation, Result
from router.metrics import Metrics
from router.readiness import Readiness
from router.sources.amqp.event import (
    ENVELOPE_OVERHEAD,
    batch_payload_of,
    broker_arn,
    encode_record,
    to_record,
)
from router.sources.amqp.settle import AmqpSettler, delay_queue_arguments, delay_queue_of
from router.sources.batch_bisect import Bisection
from router.sources.lifecycle import BACKOFF, RouteHealth, StopGate, pause_unless, until_set

log = logging.getLogger("router.sources.amqp")

SETTLE_TIMEOUT = 5.0
"""How long a session's end waits for acks and hand-backs under way before it lets them go."""

TYPE = "amqp"
CONSUMER_CHECK = 1.0  # seconds between checks that the broker still knows our consumer
PAUSE_CHECK = 0.5  # seconds between looks at whether the route is paused (no consumer while it is)


class ConsumerCancelled(Exception):
    """Raised (inside the source) when the broker cancelled the consumer, e.g. the queue was deleted."""


class Phase(enum.Enum):
    IDLE = "idle"  # waiting for a slot or a first message: safe to cancel
    GATHERING = "gathering"  # holding part of a batch: on stop, hand it back at once
    BUSY = "busy"  # the batch is with the function or being settled: let it finish


@dataclass(slots=True)
class Item:
    message: Any  # aio_pika.abc.AbstractIncomingMessage
    encoded: bytes  # the record's JSON in the event, encoded once
    size: int  # bytes it adds to the event (with its comma)


class AmqpSource:
    """One ``type: amqp`` route; implements ``router.sources.base.Poller``. ``backoff``: the first and
    largest delay after a fault or a throttle; ``clock``: the time of batch windows, backoff and logs."""

    def __init__(
        self,
        route: RouteConfig,
        *,
        dispatcher: Dispatch,
        metrics: Metrics,
        readiness: Readiness,
        aws: AwsConfig,
        max_body: int,
        backoff: tuple[float, float] = BACKOFF,
        reconnect_interval: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(route.source, AmqpSourceConfig):
            raise TypeError(f"AmqpSource: route '{route.name}' is not an amqp route")
        self.route = route
        self._cfg: AmqpSourceConfig = route.source
        self._dispatcher = dispatcher
        self._metrics = metrics
        self._max_body = max_body
        self._backoff = backoff
        self._reconnect_interval = reconnect_interval
        self._filter = compile_filters(route.filters)
        self._where = f"route '{route.name}'"
        url = self._cfg.url
        self._vhost = vhost_of(url)
        self._arn = broker_arn(host_of(url), region=aws.region, account=aws.account_id)
        self._gate = StopGate(clock)
        self._clock = self._gate.clock
        self._health = RouteHealth(route, TYPE, service="broker", connecting=f"connecting to {redact(url)}",
                                   metrics=metrics, readiness=readiness, logger=log, gate=self._gate,
                                   backoff=backoff)
        self._extra = self._health.extra
        self._settler = AmqpSettler(route.name, self._cfg, metrics=metrics, user=user_of(url),
                                    channel=lambda: self._channel, log_limited=self._health.log_limited,
                                    extra=self._extra)

        self._buffer: asyncio.Queue[Any] = asyncio.Queue(maxsize=2 * self._cfg.prefetch)
        self._carry: collections.deque[Item] = collections.deque()  # left over by a full batch
        self._gather_lock = asyncio.Lock()
        self._channel: Any = None
        self._queue: Any = None
        self._consumer_tag: str | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._phase: dict[asyncio.Task[None], Phase] = {}
        self._settling: set[asyncio.Task[Any]] = set()
        self._throttled = 0  # consecutive throttled batches, for their backoff
        self._closing = False
        self._end_session = asyncio.Event()  # set by stop, or when the consumer is gone
        self._draining = False  # this session ends: workers finish their batch and return
        # Per message: the metric children resolved once (a labels() lookup costs more than the inc).
        self._received = metrics.source_events.labels(route=route.name, type=TYPE)
        self._redelivered = metrics.amqp_messages.labels(route=route.name, outcome="redelivered")
        self._filtered = metrics.source_events_filtered.labels(route=route.name, type=TYPE)
        self._bisections = metrics.batch_bisections.labels(route=route.name)

    @property
    def workers(self) -> int:
        return max(1, self._cfg.prefetch // self._cfg.batch_size)

    # --- lifecycle ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until ``stop``; faults are retried with backoff, never raised."""
        with self._gate.run():
            while not self._gate.stopping:
                try:
                    await self._session()
                except Exception as exc:  # broker faults; anything else is a bug, logged with traceback
                    self._fault(exc)
                    await self._health.backoff_pause()

    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109 (the Poller contract)
        """No new deliveries; gathered messages go back at once, running batches get ``timeout``."""
        self._end_session.set()

        def timed_out() -> None:
            busy = list(self._phase.values()).count(Phase.BUSY)
            log.warning("%s: %d batches did not finish within %gs: cancelled; the broker redelivers "
                        "their messages", self._where, busy, timeout, extra=self._extra)

        def cancel_all() -> None:
            for task in list(self._phase):
                task.cancel()

        await self._gate.stop(timeout, cancel_all=cancel_all, timed_out=timed_out)

    # --- one connection ----------------------------------------------------------------------------

    async def _session(self) -> None:
        conn = await self._connect()
        if conn is None:
            return  # stopped while connecting
        self._closing = False
        self._draining = False
        self._end_session.clear()
        if self._gate.stopping:
            self._end_session.set()
        try:
            conn.close_callbacks.add(self._on_connection_lost)
            conn.reconnect_callbacks.add(self._on_reconnected)
            if not self._cfg.declare:
                await self._check_queue(conn)
            channel = await conn.channel(publisher_confirms=True, on_return_raises=True)
            await channel.set_qos(prefetch_count=self._cfg.prefetch)
            queue = await self._declare(channel)
            if self._cfg.on_error == "requeue":
                await channel.declare_queue(delay_queue_of(self._cfg.queue), durable=self._cfg.durable,
                                            arguments=delay_queue_arguments(self._cfg.queue))
            self._channel, self._queue = channel, queue
            self._consumer_tag = await queue.consume(self._on_message)
            log.info("%s: consuming queue '%s' on %s (prefetch %d, batch %d, %d workers)", self._where,
                     self._cfg.queue, redact(self._cfg.url), self._cfg.prefetch, self._cfg.batch_size,
                     self.workers, extra=self._extra)
            self._health.healthy()
            try:
                async with asyncio.TaskGroup() as tg:
                    self._tg = tg
                    for _ in range(self.workers):
                        task = tg.create_task(self._work(), name=f"amqp:{self.route.name}")
                        self._phase[task] = Phase.IDLE
                    watch = tg.create_task(self._watch_consumer(channel),
                                           name=f"amqp-watch:{self.route.name}")
                    pause = tg.create_task(self._follow_pause(queue), name=f"amqp-pause:{self.route.name}")
                    await self._end_session.wait()
                    self._draining = True
                    watch.cancel()
                    pause.cancel()
                    await self._cancel_consumer()
                    for task, phase in list(self._phase.items()):
                        if phase is not Phase.BUSY:
                            task.cancel()  # they hand their messages back on the way out
                if not self._gate.stopping:
                    raise ConsumerCancelled(
                        f"the broker cancelled the consumer of queue '{self._cfg.queue}' "
                        "(was the queue deleted?); consuming again")
            finally:
                self._tg = None
                await asyncio.shield(self._hand_back_buffer())
                if self._settling:  # bounded: an ack on a connection that is gone never gets written
                    _, stuck = await asyncio.wait(set(self._settling), timeout=SETTLE_TIMEOUT)
                    for task in stuck:
                        task.cancel()
                    if stuck:
                        await asyncio.wait(stuck)
                        log.warning("%s: %d settlements not written within %gs: the broker redelivers "
                                    "their messages", self._where, len(stuck), SETTLE_TIMEOUT,
                                    extra=self._extra)
        finally:
            self._closing = True
            channel, self._channel, self._queue, self._consumer_tag = self._channel, None, None, None
            await asyncio.shield(close_settled(conn, channel))  # the acks above reach the broker

    async def _watch_consumer(self, channel: Any) -> None:
        """The broker cancels a consumer whose queue is deleted, and aio-pika then just stops
        delivering: notice it and end the session (the run loop declares and consumes again)."""
        while True:
            await self._clock.sleep(CONSUMER_CHECK)
            tag = self._consumer_tag
            if tag is None or not self._health.ok:
                continue  # reconnecting: the robust channel restores the consumer itself
            try:
                async with asyncio.timeout(CONSUMER_CHECK):
                    underlay = await channel.get_underlay_channel()
            except Exception:  # reconnecting meanwhile
                continue
            if tag not in getattr(underlay, "consumers", {tag: None}):
                self._health.not_ready("the broker cancelled the consumer")
                self._end_session.set()
                return

    async def _follow_pause(self, queue: Any) -> None:
        """While the route is paused (``router pause``, UpdateEventSourceMapping ``Enabled: false``) it has
        no consumer at all: the broker keeps its messages ready for other consumers and none wait unacked
        here; those delivered and not started yet go back to the queue. Resumed, it consumes again."""
        route = self.route.name
        while True:
            await self._clock.sleep(PAUSE_CHECK)
            if self._dispatcher.route_enabled(route) or self._consumer_tag is None:
                continue
            await self._cancel_consumer()
            await asyncio.shield(self._hand_back_buffer())
            log.info("%s: paused: not consuming queue '%s' until resumed", self._where, self._cfg.queue,
                     extra=self._extra)
            while not self._dispatcher.route_enabled(route):
                await self._clock.sleep(PAUSE_CHECK)
            self._consumer_tag = await queue.consume(self._on_message)
            log.info("%s: resumed: consuming queue '%s' again", self._where, self._cfg.queue,
                     extra=self._extra)

    async def _connect(self) -> Any:
        """The robust connection, or None when ``stop`` came first. Raises the first attempt's error."""
        attempt = await until_set(self._gate.stopped, connect(
            self._cfg.url, f"router:{self.route.name}", reconnect_interval=self._reconnect_interval))
        if attempt.cancelled():
            return None
        return attempt.result()

    async def _check_queue(self, conn: Any) -> None:
        """The queue exists: a passive declare on a short-lived channel of its own (the broker closes the
        channel of a passive declare that finds nothing; the consuming channel is opened after this)."""
        check = await conn.channel()
        try:
            await check.declare_queue(self._cfg.queue, passive=True)
        finally:
            with contextlib.suppress(Exception):
                await check.close()

    async def _declare(self, channel: Any) -> Any:
        cfg = self._cfg
        if not cfg.declare:  # checked by ``_check_queue``; passive again so the robust channel restores it
            return await channel.declare_queue(cfg.queue, passive=True)
        arguments = dict(cfg.arguments)
        if cfg.queue_type == "quorum":
            arguments["x-queue-type"] = "quorum"
        return await channel.declare_queue(cfg.queue, durable=cfg.durable, arguments=arguments or None)

    async def _cancel_consumer(self) -> None:
        """basic.cancel: the broker stops delivering; what it delivered stays ours to settle."""
        queue, tag = self._queue, self._consumer_tag
        if queue is None or tag is None:
            return
        self._consumer_tag = None
        try:
            async with asyncio.timeout(5):
                await queue.cancel(tag)
        except Exception as exc:  # the connection may be gone: unacked messages go back anyway
            log.info("%s: basic.cancel failed (%s)", self._where, type(exc).__name__, extra=self._extra)

    async def _on_message(self, message: Any) -> None:
        """Consumer callback (a task of aiormq's per delivery): into the bounded buffer."""
        self._received.inc()
        if message.redelivered:
            self._redelivered.inc()
        await self._buffer.put(message)

    def _on_connection_lost(self, _sender: Any, exc: BaseException | None = None) -> None:
        """The robust connection lost its broker (also called for each failed reconnect attempt)."""
        if self._closing or self._gate.stopping:
            return
        first = self._health.ok
        why = f"{type(exc).__name__}: {exc}" if exc is not None else "closed"
        message = (f"connection to {redact(self._cfg.url)} lost ({why[:200]}); reconnecting, messages "
                   "in flight are redelivered by the broker")
        self._health.fault(message, "connection", logged=not first)  # still away: logged once a minute
        if first:
            log.warning("%s: %s", self._where, message, extra={**self._extra, "error_type": "connection"})

    def _on_reconnected(self, _sender: Any) -> None:
        self._metrics.amqp_reconnects.labels(route=self.route.name).inc()
        log.info("%s: reconnected to %s; consuming again", self._where, redact(self._cfg.url),
                 extra=self._extra)
        self._health.healthy()

    # --- workers -----------------------------------------------------------------------------------

    async def _work(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        try:
            while not self._gate.stopping and not self._draining:
                self._phase[me] = Phase.IDLE
                try:
                    async with self._dispatcher.slot(self.route.function, TYPE, self.route.name):
                        async with self._gather_lock:  # one batch fills at a time, in order
                            batch = await self._gather(me)
                        if batch and not self._draining:
                            self._phase[me] = Phase.BUSY
                            await self._run_batch(batch)
                        elif batch:
                            await self._shielded(self._settler.hand_back([i.message for i in batch]))
                except Exception as exc:  # a bug: logged with its traceback, then carry on
                    self._fault(exc)
                    await self._health.backoff_pause()
        finally:
            self._phase.pop(me, None)

    async def _gather(self, me: asyncio.Task[None]) -> list[Item]:
        """The first message (waiting as long as it takes), then more until ``batch_size``, the window
        or the payload limit. Cancelled meanwhile (stop): what was gathered goes back to the queue."""
        first = await self._next(None)
        if first is None:
            return []
        self._phase[me] = Phase.GATHERING
        batch = [first]
        try:
            size = ENVELOPE_OVERHEAD + first.size
            deadline = self._clock.monotonic() + self._cfg.batch_window
            while len(batch) < self._cfg.batch_size and not self._draining:
                item = await self._next(deadline)
                if item is None:
                    break
                if size + item.size > self._max_body:
                    self._carry.append(item)  # the next batch starts with it
                    break
                batch.append(item)
                size += item.size
        except BaseException:
            await self._shielded(self._settler.hand_back([i.message for i in batch]))
            raise
        return batch

    async def _next(self, deadline: float | None) -> Item | None:
        """The next message worth invoking, or None at the deadline. Messages of a lost channel are
        dropped (the broker redelivers them), too large ones dead-lettered, filtered-out ones acked."""
        while True:
            if self._carry:
                return self._carry.popleft()
            if not self._buffer.empty():  # under load the buffer holds the next one: no timer needed
                message = self._buffer.get_nowait()
            elif deadline is None:
                message = await self._buffer.get()
            else:
                remaining = deadline - self._clock.monotonic()
                if remaining <= 0:
                    return None
                try:
                    async with asyncio.timeout(remaining):
                        message = await self._buffer.get()
                except TimeoutError:
                    return None
            if not channel_open(message):
                continue
            record = to_record(message)
            encoded = encode_record(record)
            item = Item(message, encoded, len(encoded) + 1)
            if ENVELOPE_OVERHEAD + item.size > self._max_body:
                await self._shielded(self._dead_letter_oversize(item))
                continue
            if self._filter and not self._filter.matches(mq_filter_data(record)):
                self._filtered.inc()
                await self._shielded(self._settler.settle([message], "acked"))
                continue
            return item

    async def _run_batch(self, batch: list[Item]) -> None:
        """Invoke the function with the batch and settle its messages. With ``bisect_on_error`` a batch
        whose invocation failed is split in halves that run next, first half first, then theirs, down
        to the messages that fail alone (``batch_bisect``): only those take the ``on_error`` path; the
        others are acked once a part they are in succeeded, never rejected or requeued with a poison one.
        A throttle hands back the part and the parts not run yet; so does a stop while bisecting."""
        parts = Bisection(batch, enabled=self._cfg.bisect_on_error)
        while (part := parts.next()) is not None:
            part = [i for i in part if channel_open(i.message)]  # a lost channel's come back anyway
            if not part:
                continue
            if parts.splits and self._gate.stopping:
                rest = [i.message for i in part + parts.rest()]
                await self._shielded(self._settler.hand_back(rest))
                log.info("%s: stopping while bisecting a failed batch: %d messages not yet run handed back",
                         self._where, len(rest), extra=self._extra)
                return
            payload = batch_payload_of([i.encoded for i in part], arn=self._arn, queue=self._cfg.queue,
                                       vhost=self._vhost)
            inv = Invocation(function=self.route.function, payload=payload, source=TYPE,
                             route=self.route.name, trace_id=_trace(part))
            result = await self._dispatcher.invoke_in_slot(inv)
            messages = [i.message for i in part]
            if result.ok:
                self._throttled = 0
                await self._shielded(self._settler.settle(messages, "acked"))
                continue
            if result.throttle:
                messages += [i.message for i in parts.rest()]
                await self._throttle_pause(result, len(messages))
                await self._shielded(self._settler.hand_back(messages))
                return
            self._throttled = 0
            if parts.failed(part):
                self._bisections.inc()
                (log.warning if parts.splits == 1 else log.info)(
                    "%s: the function failed (%s) on %d messages; bisect_on_error: retrying its halves",
                    self._where, result.outcome.value, len(part), extra=self._failure_extra(result, inv))
                continue
            self._log_failure(result, inv, len(messages), alone=parts.splits > 0)
            if self._cfg.on_error == "dead_letter":
                await self._shielded(self._settler.settle(messages, "rejected"))
            else:
                await self._shielded(self._settler.requeue_later(messages))

    async def _throttle_pause(self, result: Result, count: int) -> None:
        """Throttled, or the function could not be reached (``Result.throttle``): not the messages'
        fault, so they are neither dead-lettered nor counted as requeues. The worker waits (backoff, or
        the target's Retry-After, up to 30 s; a stop cuts it short), then hands them back."""
        self._throttled += 1
        delay = self._health.backoff(self._throttled)
        if result.retry_after is not None:
            delay = min(self._backoff[1], max(delay, result.retry_after))
        self._health.error(
            f"{self._where}: the function '{self.route.function}' is throttled or unreachable "
            f"({result.error_message()}); {count} messages go back to the queue after {delay:.1f}s",
            result.error_type.value if result.error_type else "throttled")
        await pause_unless(self._end_session, delay, self._clock)

    def _log_failure(self, result: Result, inv: Invocation, count: int, *, alone: bool) -> None:
        then = ("rejected to the queue's dead-letter exchange" if self._cfg.on_error == "dead_letter"
                else f"go back after {self._cfg.requeue_delay:g}s, or to the dead-letter exchange after "
                     f"{self._cfg.max_redeliveries} requeues")
        log.warning("%s: the function failed (%s)%s; its %d messages %s", self._where, result.outcome.value,
                    " on them alone, after bisecting their batch" if alone else "", count, then,
                    extra=self._failure_extra(result, inv))

    def _failure_extra(self, result: Result, inv: Invocation) -> dict[str, Any]:
        return {**self._extra, "request_id": inv.request_id,
                "error_type": result.error_type.value if result.error_type else None}

    # --- settling ----------------------------------------------------------------------------------

    async def _shielded(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a settlement to its end even when the worker is cancelled (STYLE: shield only the ack)."""
        task = asyncio.ensure_future(coro)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        await asyncio.shield(task)

    async def _hand_back_buffer(self) -> None:
        pending = [i.message for i in self._carry]
        self._carry.clear()
        while not self._buffer.empty():
            pending.append(self._buffer.get_nowait())
        if pending:
            await self._settler.hand_back(pending)
            log.info("%s: handed back %d messages not started", self._where, len(pending),
                     extra=self._extra)

    async def _dead_letter_oversize(self, item: Item) -> None:
        reason = (f"message too large: its record is {item.size} bytes, the payload limit "
                  f"(server.max_body) is {self._max_body}")
        log.error("%s: %s; dead-lettered", self._where, reason,
                  extra={**self._extra, "error_type": "decode"})
        await self._settler.dead_letter(item.message, reason)

    # --- faults ------------------------------------------------------------------------------------

    def _fault(self, exc: BaseException) -> None:
        hint = ("the route consumes an existing queue: create it on the broker (with the arguments it "
                "needs: dead-letter exchange, queue type, ...), or set source.declare: true (with "
                "source.queue_type / source.arguments) to have the router declare it"
                if not self._cfg.declare else "check source.queue")
        message, error_type = describe_error(exc, self._cfg.url, queue=self._cfg.queue, hint_not_found=hint)
        self._health.fault(message, error_type.value, exc_info=None if _is_broker_error(exc) else exc)


def _is_broker_error(exc: BaseException) -> bool:
    import aiormq.exceptions
    import pamqp.exceptions

    return isinstance(exc, aiormq.exceptions.AMQPError | pamqp.exceptions.PAMQPException | OSError
                      | TimeoutError | ConnectionError | ConsumerCancelled)


def _trace(items: list[Item]) -> str | None:
    """The trace header the batch carries (``x-amzn-trace-id``: the recursive loop count, ``lineage``)."""
    headers: list[str | None] = []
    for item in items:
        value = (item.message.headers or {}).get(lineage.HEADER)
        headers.append(value.decode("utf-8", "replace") if isinstance(value, bytes) else
                       value if isinstance(value, str) else None)
    return lineage.deepest(headers)
