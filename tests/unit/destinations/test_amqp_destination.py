"""The amqp destination against the real RabbitMQ: persistent JSON with confirms, and every way a
publish can fail turning into a ``DestinationError`` that names the broker but never its password."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiohttp
import pytest
from yarl import URL

from router.destinations.amqp import AmqpConnections, AmqpDestination
from router.destinations.factory import DestinationBuilder
from router.errors import DestinationError
from tests.unit.core.helpers import make_config

# aiormq leaves the socket of a connection the broker closed to the garbage collector.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*StreamWriter.__del__:pytest.PytestUnraisableExceptionWarning")

RECORD = {
    "version": "1.0",
    "timestamp": "2026-11-23T10:00:00.000Z",
    "requestContext": {"requestId": "req-1", "functionArn": "arn:aws:lambda:us-east-1:0:function:f:$LATEST",
                       "condition": "RetriesExhausted", "approximateInvokeCount": 3},
    "requestPayload": {"n": 1},
    "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
    "responsePayload": {"errorType": "ValueError", "errorMessage": "boom"},
}


def unique(prefix: str) -> str:
    return f"test.{prefix}.{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[Any]:
    """A channel of the test's own connection, to declare, inspect and delete what a test uses."""
    conn = await aio_pika.connect(amqp_url)
    try:
        yield await conn.channel()
    finally:
        await conn.close()


@pytest.fixture
async def connections() -> AsyncIterator[AmqpConnections]:
    pool = AmqpConnections(name=unique("dest-conn"))
    try:
        yield pool
    finally:
        await pool.close()


async def bound_queue(channel: Any, exchange: str, routing_key: str) -> Any:
    ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.DIRECT, auto_delete=True)
    queue = await channel.declare_queue(unique("q"), exclusive=True)
    await queue.bind(ex, routing_key)
    return queue


async def get_one(queue: Any, deadline: float = 10.0) -> Any:
    async with asyncio.timeout(deadline):
        while True:
            message = await queue.get(fail=False)
            if message is not None:
                await message.ack()
                return message
            await asyncio.sleep(0.02)


async def test_publishes_persistent_json_with_confirms_to_a_bound_queue(
    amqp_url: str, broker: Any, connections: AmqpConnections
) -> None:
    exchange = unique("dlx")
    queue = await bound_queue(broker, exchange, "resize")
    dest = AmqpDestination(amqp_url, exchange=exchange, routing_key="resize", connections=connections)
    assert dest.kind == "amqp"
    await dest.send(RECORD)

    message = await get_one(queue)
    assert json.loads(message.body) == RECORD
    assert message.content_type == "application/json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == "req-1:RetriesExhausted"


async def test_default_exchange_routes_to_the_queue_named_by_the_routing_key(
    amqp_url: str, broker: Any, connections: AmqpConnections
) -> None:
    queue = await broker.declare_queue(unique("q"), exclusive=True)
    dest = AmqpDestination(amqp_url, exchange="", routing_key=queue.name, connections=connections)
    await dest.send(RECORD)
    assert json.loads((await get_one(queue)).body) == RECORD


async def test_unroutable_record_is_a_failure_not_a_silent_drop(
    amqp_url: str, broker: Any, connections: AmqpConnections
) -> None:
    exchange = unique("dlx")
    queue = await bound_queue(broker, exchange, "other-key")
    dest = AmqpDestination(amqp_url, exchange=exchange, routing_key="resize", connections=connections)
    with pytest.raises(DestinationError, match=r"unroutable \(NO_ROUTE\): no queue is bound") as info:
        await dest.send(RECORD)
    assert f"exchange '{exchange}'" in str(info.value)
    assert "guest:guest" not in str(info.value)
    assert await queue.get(fail=False) is None


async def test_missing_exchange_fails_then_delivers_once_it_exists(
    amqp_url: str, broker: Any, connections: AmqpConnections
) -> None:
    exchange = unique("missing")
    dest = AmqpDestination(amqp_url, exchange=exchange, routing_key="k", connections=connections)
    with pytest.raises(DestinationError, match=rf"exchange '{exchange}' not found \(NOT_FOUND\); declare it"):
        await dest.send(RECORD)
    queue = await bound_queue(broker, exchange, "k")

    async def delivered() -> None:  # the channel the broker closed is reopened by the robust channel
        async with asyncio.timeout(15):
            while True:
                try:
                    await dest.send(RECORD)
                    return
                except DestinationError:
                    await asyncio.sleep(0.1)

    await delivered()
    assert json.loads((await get_one(queue)).body) == RECORD


async def test_unreachable_broker_is_a_destination_error_without_the_password(
    connections: AmqpConnections
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    url = f"amqp://router:s3cret-pw@127.0.0.1:{port}/"
    dest = AmqpDestination(url, exchange="x", routing_key="k", connections=connections, timeout=5)
    with pytest.raises(DestinationError, match=r"broker 127\.0\.0\.1:\d+ vhost '/'.*cannot connect") as info:
        await dest.send(RECORD)
    assert "s3cret-pw" not in str(info.value)
    assert "amqp://router:***@127.0.0.1" in str(info.value)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=True)


def add_vhost(vhost: str) -> None:
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")


async def test_broker_away_fails_then_delivers_when_it_is_back(amqp_url: str) -> None:
    """The broker goes away for this destination (its vhost is deleted: the broker closes the
    connection and refuses reconnections), then comes back (vhost, exchange and queue again)."""
    vhost = unique("vhost")
    url = str(URL(amqp_url).with_path("/" + vhost))
    exchange = unique("dlx")

    async def prepare() -> Any:
        await asyncio.to_thread(add_vhost, vhost)
        conn = await aio_pika.connect(url)
        channel = await conn.channel()
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.DIRECT)
        queue = await channel.declare_queue("records")
        await queue.bind(ex, "k")
        return conn, queue

    pool = AmqpConnections(name=unique("dest-conn"))
    conn, queue = await prepare()
    try:
        dest = AmqpDestination(url, exchange=exchange, routing_key="k", connections=pool, timeout=3)
        await dest.send(RECORD)
        assert json.loads((await get_one(queue)).body) == RECORD
        await conn.close()

        await asyncio.to_thread(rabbitmqctl, "delete_vhost", vhost)  # the broker is away
        with pytest.raises(DestinationError, match=rf"amqp destination amqp://guest:\*\*\*@127\.0\.0\.1:5672/"
                           rf"{vhost} \(exchange '{exchange}', routing key 'k'\)") as info:
            await dest.send({**RECORD, "requestPayload": {"n": 2}})
        assert "guest:guest" not in str(info.value)

        conn, queue = await prepare()  # the broker is back
        deadline = time.monotonic() + 30
        while True:
            try:
                await dest.send({**RECORD, "requestPayload": {"n": 3}})
                break
            except DestinationError:
                assert time.monotonic() < deadline, "the destination did not recover"
                await asyncio.sleep(0.2)
        assert json.loads((await get_one(queue)).body)["requestPayload"] == {"n": 3}
    finally:
        await pool.close()
        await conn.close()
        await asyncio.to_thread(subprocess.run, ["rabbitmqctl", "delete_vhost", vhost],
                                capture_output=True, timeout=60, check=False)


async def test_factory_builds_amqp_destinations_sharing_one_connection_per_url(
    amqp_url: str, broker: Any
) -> None:
    q1 = await broker.declare_queue(unique("q"), exclusive=True)
    q2 = await broker.declare_queue(unique("q"), exclusive=True)
    config = make_config({
        "a": {"async": {"on_failure": {"type": "amqp", "url": amqp_url, "routing_key": q1.name,
                                       "timeout": "3s"}}},
        "b": {"async": {"on_success": {"type": "amqp", "url": amqp_url, "routing_key": q2.name}}},
    })

    async def no_submit(_: Any) -> str:
        raise AssertionError("not used")

    async with aiohttp.ClientSession() as session:
        builder = DestinationBuilder(config, session=session, submit=no_submit)
        d1 = builder.build("a", config.functions["a"].async_.on_failure)  # type: ignore[arg-type]
        d2 = builder.build("b", config.functions["b"].async_.on_success)  # type: ignore[arg-type]
        assert isinstance(d1, AmqpDestination)
        assert isinstance(d2, AmqpDestination)
        assert builder.problems == []
        try:
            await d1.send(RECORD)
            await d2.send(RECORD)
            assert d1._connections is d2._connections
            assert len(d1._connections._conns) == 1
        finally:
            await builder.close()
        assert d1._connections._conns == {}
    assert json.loads((await get_one(q1)).body) == RECORD
    assert json.loads((await get_one(q2)).body) == RECORD
