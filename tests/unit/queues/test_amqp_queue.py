"""The RabbitMQ transport of async invocations: the delay ladder, events as messages, and a publish that
fails at once without a broker, naming it without the password."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import aio_pika
import pytest

from router.clock import SystemClock
from router.errors import AsyncQueueError
from router.queues.amqp import (
    AmqpEvent,
    AmqpQueue,
    from_message,
    retry_level_ms,
    to_message,
)
from tests.waiting import until

# aiormq leaves the socket of a connection closed under it to the garbage collector.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*StreamWriter.__del__:pytest.PytestUnraisableExceptionWarning")


@pytest.mark.parametrize(("delay", "level"), [
    (0.0, 0), (0.009, 0), (0.01, 10), (0.0119, 10), (0.0121, 12), (0.099, 80), (0.1, 100),
    (0.35, 300), (2.9, 2500), (299.0, 250000), (21600.0, 20000000),
])
def test_retry_levels_round_down_to_the_ladder(delay: float, level: int) -> None:
    assert retry_level_ms(delay) == level
    assert level <= delay * 1000
    assert level == 0 or delay * 1000 / level < 1.34


def test_event_round_trips_through_a_message() -> None:
    ev = AmqpEvent(request_id="r-1", payload=b'{"a":1}', source="invoke_api", route=None, attempts=2,
                   enqueued_at=1700000000.123)
    message = to_message(ev)
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == "r-1"
    assert from_message(message, now=0.0) == ev


def test_the_qualifier_of_an_event_rides_in_a_header() -> None:
    ev = AmqpEvent(request_id="r-2", payload=b"{}", source="invoke_api", route="hook", attempts=0,
                   enqueued_at=1700000000.0, qualifier="prod")
    message = to_message(ev)
    assert message.headers["x-router-qualifier"] == "prod"
    assert from_message(message, now=0.0).qualifier == "prod"
    assert from_message(message, now=0.0).next(1).qualifier == "prod"  # a retry keeps it


def test_a_foreign_message_is_a_new_event() -> None:
    message = aio_pika.Message(b"hello", message_id="m-1")
    ev = from_message(message, now=50.0)
    assert (ev.request_id, ev.payload, ev.source, ev.attempts, ev.enqueued_at) == ("m-1", b"hello", "amqp",
                                                                                  0, 50.0)


async def test_publish_without_a_broker_fails_at_once_naming_it_without_the_password() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    q = AmqpQueue(f"amqp://router:pw-secret@127.0.0.1:{port}/", ["f"], clock=SystemClock(),
                  timeout=0.5, backoff=(0.05, 0.1))
    runner = asyncio.create_task(q.run())
    try:
        await until(lambda: q.problem is not None and "cannot connect" in q.problem, "a problem")
        ev = AmqpEvent("r", b"{}", "webhook", None, 0, time.time())
        # The connection attempt failed: no wait for a publish timeout, the caller answers 503 at once.
        with pytest.raises(AsyncQueueError, match=r"async_queue amqp://router:\*\*\*@127\.0\.0\.1:\d+/: "
                           r"function 'f': not connected \(broker 127\.0\.0\.1:\d+ .*cannot connect") as info:
            await q.publish_event("f", ev)
        assert "pw-secret" not in str(info.value)
        assert info.value.retry_after == 1
        assert not await q.ping()
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await q.close()
