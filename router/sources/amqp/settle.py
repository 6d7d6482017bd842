"""What becomes of a delivered AMQP message once its batch has run: ack, reject (dead-letter), a delayed
requeue through the router's delay queue, a dead-letter with a reason, or a hand-back at shutdown.

Every publish uses publisher confirms and mandatory routing; the original is acked only once the
broker confirmed its copy, and is requeued at once (``basic.nack``) when the copy cannot be published.
A settlement that fails because the channel is gone is logged and counted: the broker redelivers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from router.amqp import channel_open
from router.config.models import AmqpSourceConfig
from router.metrics import Metrics
from router.sources.amqp.event import REASON_HEADER, REDELIVERIES_HEADER, redelivery_count

log = logging.getLogger("router.sources.amqp")

TYPE = "amqp"
PUBLISH_TIMEOUT = 10.0
DELAY_SUFFIX = ".router-delay"


def delay_queue_of(queue: str) -> str:
    """The router's delay queue for ``on_error: requeue``: no consumer, dead-letters back to ``queue``."""
    return queue + DELAY_SUFFIX


def delay_queue_arguments(queue: str) -> dict[str, Any]:
    return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue}


class AmqpSettler:
    """Settles messages of one route. ``channel()`` returns the current robust channel (or None);
    ``log_limited(text, error_type)`` logs an error at most once a minute per text."""

    def __init__(self, route: str, cfg: AmqpSourceConfig, *, metrics: Metrics, user: str,
                 channel: Callable[[], Any], log_limited: Callable[[str, str], None],
                 extra: dict[str, Any]) -> None:
        self._route = route
        self._cfg = cfg
        self._metrics = metrics
        self._user = user
        self._channel = channel
        self._log_limited = log_limited
        self._extra = extra
        self._where = f"route '{route}'"
        self._delay_queue = delay_queue_of(cfg.queue)
        self._dlx: str | None = cfg.arguments.get("x-dead-letter-exchange")
        self._dlx_key: str | None = cfg.arguments.get("x-dead-letter-routing-key")
        self._children: dict[str, Any] = {}  # outcome -> its router_amqp_messages_total child

    async def settle(self, messages: list[Any], outcome: str, *, ack: bool | None = None) -> None:
        """ack (outcome ``acked``) or reject without requeue (``rejected``) each message; ``ack``
        overrides which, for outcomes reached by a republish (``requeued``, a router dead-letter)."""
        ack = outcome == "acked" if ack is None else ack
        if ack:
            done = await self._ack_all(messages, outcome)
        else:
            done = 0
            for message in messages:
                try:
                    await message.reject(requeue=False)
                    done += 1
                except Exception as exc:
                    self._failed(exc, len(messages) - done, outcome)
                    break
        if done:
            self._count(outcome, done)

    async def _ack_all(self, messages: list[Any], outcome: str) -> int:
        """basic.ack each message; how many were written. The frames go to the connection's writer back
        to back and only the last one waits until it is written (the writer keeps their order): one turn
        of the writer for the batch, where ``message.ack()`` waits for one a message. If any of them
        fails (the channel or connection went away), none counts as written: the broker redelivers what
        it did not get."""
        last = len(messages) - 1
        for i, message in enumerate(messages):
            try:
                await message.channel.basic_ack(delivery_tag=message.delivery_tag, wait=i == last)
            except Exception as exc:
                self._failed(exc, len(messages), outcome)
                return 0
        return len(messages)

    def _count(self, outcome: str, n: int) -> None:
        child = self._children.get(outcome)
        if child is None:
            child = self._children[outcome] = self._metrics.amqp_messages.labels(route=self._route,
                                                                                 outcome=outcome)
        child.inc(n)

    async def hand_back(self, messages: list[Any]) -> None:
        """Received but not started: nack with requeue, so a consumer gets them again at once."""
        done = 0
        for message in messages:
            if not channel_open(message):
                continue
            try:
                await message.nack(requeue=True)
                done += 1
            except Exception as exc:
                self._failed(exc, len(messages) - done, "returned")
                break
        if done:
            self._count("returned", done)

    async def requeue_later(self, messages: list[Any]) -> None:
        """``on_error: requeue``: a delayed copy (confirmed) then ack; dead-letter past the limit."""
        limit = self._cfg.max_redeliveries
        over = [m for m in messages if redelivery_count(m.headers) >= limit]
        if over:
            log.warning("%s: %d messages failed after %d requeues: dead-lettered", self._where, len(over),
                        limit, extra=self._extra)
            await self.settle(over, "rejected")
        for message in (m for m in messages if m not in over):
            headers = dict(message.headers or {})
            headers[REDELIVERIES_HEADER] = redelivery_count(headers) + 1
            copy = self._copy(message, headers, expiration=self._cfg.requeue_delay)
            if await self._publish(copy, "", self._delay_queue, message):
                await self.settle([message], "requeued", ack=True)

    async def dead_letter(self, message: Any, reason: str) -> None:
        """Dead-letter one message the function never saw, with ``x-router-reject-reason`` when the
        config names the queue's dead-letter exchange (else a plain reject: the reason is only logged)."""
        if self._dlx is None:
            await self.settle([message], "rejected")
            return
        headers = dict(message.headers or {})
        headers[REASON_HEADER] = reason
        copy = self._copy(message, headers, expiration=None)
        routing_key = self._dlx_key if self._dlx_key is not None else message.routing_key or ""
        if await self._publish(copy, self._dlx, routing_key, message):
            # The DLX has the copy with the reason: ack, as a reject would dead-letter a second copy.
            await self.settle([message], "rejected", ack=True)

    def _copy(self, message: Any, headers: dict[str, Any], *, expiration: float | None) -> Any:
        """The message again: same body, properties and headers (``user_id`` only when it is ours,
        as RabbitMQ refuses another user's); ``expiration`` in seconds."""
        import aio_pika

        return aio_pika.Message(
            bytes(message.body), headers=headers, content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=message.delivery_mode or aio_pika.DeliveryMode.PERSISTENT,
            priority=message.priority, correlation_id=message.correlation_id, reply_to=message.reply_to,
            expiration=expiration, message_id=message.message_id, timestamp=message.timestamp,
            type=message.type, user_id=message.user_id if message.user_id == self._user else None,
            app_id=message.app_id,
        )

    async def _publish(self, copy: Any, exchange: str, routing_key: str, original: Any) -> bool:
        """Publish with confirms; on failure the original is requeued at once. True: confirmed."""
        channel = self._channel()
        try:
            if channel is None:
                raise RuntimeError("no channel")
            target = (channel.default_exchange if exchange == ""
                      else await channel.get_exchange(exchange, ensure=False))
            await target.publish(copy, routing_key=routing_key, mandatory=True, timeout=PUBLISH_TIMEOUT)
        except Exception as exc:
            self._metrics.source_errors.labels(route=self._route, type=TYPE).inc()
            self._log_limited(f"{self._where}: publishing to exchange '{exchange}' routing key "
                              f"'{routing_key}' failed ({type(exc).__name__}: {exc}); the message is "
                              "requeued at once instead", "connection")
            await self.hand_back([original])
            return False
        return True

    def _failed(self, exc: BaseException, count: int, outcome: str) -> None:
        self._metrics.source_errors.labels(route=self._route, type=TYPE).inc()
        self._log_limited(f"{self._where}: could not settle {count} messages ({outcome}): the channel is "
                          f"gone ({type(exc).__name__}); the broker redelivers them (at-least-once)",
                          "connection")
