"""``amqp`` destination: publish the record as JSON to an exchange, persistent, with publisher confirms.

The publish is ``mandatory``: a record that no queue receives (no binding for the routing key) comes back
from the broker and is a failed delivery, as is a missing exchange, a nack, a broker that is away or a
confirm that does not come within ``timeout``. ``send`` then raises ``DestinationError`` (naming the
broker, never its password) and the async engine keeps the record in the state store and retries it.

Destinations share one robust connection per broker URL (``AmqpConnections``), opened on first use and
closed by ``AmqpConnections.close`` on shutdown; each destination has its own confirm channel (a missing
exchange closes the channel it was used on: the robust channel reopens by itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from router import amqp, compact_json, lineage
from router.errors import DestinationError

log = logging.getLogger("router.destinations.amqp")


class AmqpConnections:
    """One robust connection per broker URL, opened lazily; ``close`` closes them all."""

    def __init__(self, name: str = "router-destination") -> None:
        self._name = f"{name} pid={os.getpid()}"
        self._conns: dict[str, Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closed = False

    async def get(self, url: str, *, timeout: float) -> Any:  # noqa: ASYNC109 (the connect timeout)
        """The connection of ``url``; connects on first use. Raises what aio-pika raises."""
        conn = self._conns.get(url)
        if conn is not None:
            return conn
        async with self._locks.setdefault(url, asyncio.Lock()):
            conn = self._conns.get(url)
            if conn is None:
                if self._closed:
                    raise RuntimeError("the router is shutting down")
                conn = await amqp.connect(url, self._name, timeout=timeout)
                self._conns[url] = conn
            return conn

    async def close(self) -> None:
        self._closed = True
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.close()


class AmqpDestination:
    kind = "amqp"

    def __init__(
        self, url: str, *, exchange: str, routing_key: str, connections: AmqpConnections,
        timeout: float = 10.0,
    ) -> None:
        self.url = url  # holds the password: never logged, never in a message (amqp.redact)
        self.exchange = exchange
        self.routing_key = routing_key
        self._connections = connections
        self._timeout = timeout
        self._channel: Any = None
        self._lock = asyncio.Lock()
        shown = f"exchange '{exchange}'" if exchange else "the default exchange"
        self._where = f"amqp destination {amqp.redact(url)} ({shown}, routing key '{routing_key}')"

    async def _get_channel(self) -> Any:
        if self._channel is not None:
            return self._channel
        async with self._lock:
            if self._channel is None:
                conn = await self._connections.get(self.url, timeout=self._timeout)
                self._channel = await conn.channel(publisher_confirms=True, on_return_raises=True)
            return self._channel

    def message(self, record: dict[str, Any], trace: str | None = None) -> Any:
        """The persistent JSON message of ``record``; its message id is ``requestId:condition`` (the same
        for a record re-sent after a failure, so consumers can deduplicate); ``trace`` rides in its
        ``x-amzn-trace-id`` header (``router.lineage``), which the amqp source reads back."""
        import aio_pika

        ctx = record.get("requestContext") or {}
        return aio_pika.Message(
            compact_json.dumpb(record),
            headers={lineage.HEADER: trace} if trace else None,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=f"{ctx.get('requestId', '')}:{ctx.get('condition', '')}",
            type="lambda.destination-record",
        )

    async def send(self, record: dict[str, Any], trace: str | None = None) -> None:
        """Publish and wait for the broker's confirm; raises ``DestinationError`` otherwise."""
        message = self.message(record, trace)

        async def publish() -> Any:
            channel = await self._get_channel()
            if self.exchange:
                exchange = await channel.get_exchange(self.exchange, ensure=False)
            else:
                exchange = channel.default_exchange
            return await exchange.publish(message, routing_key=self.routing_key, mandatory=True)

        await amqp.publish_confirmed(
            publish, url=self.url, where=self._where, timeout=self._timeout, error=DestinationError,
            returned="returned by the broker as unroutable (NO_ROUTE): no queue is bound for this routing "
                     "key; bind a queue to the exchange (a record nobody receives is not dropped)",
            not_found=f"exchange '{self.exchange}' not found (NOT_FOUND); declare it, or fix the "
                      "destination's exchange",
            refused="the broker refused the record ({}); check the broker's logs (queue limits, disk or "
                    "memory alarms)",
        )
