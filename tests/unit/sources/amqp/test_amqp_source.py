"""The amqp source in-process against the real RabbitMQ, with scripted functions behind the real
Dispatcher and a fresh metrics registry per test."""

from __future__ import annotations

import asyncio
import base64
import socket
from typing import Any

import aio_pika
import pytest

from router.invocation import ErrorType, Outcome, Result
from tests.unit.sources.amqp.support import Harness
from tests.unit.sources.functions import FunctionInvoker, fail, ok
from tests.waiting import until


def data(event: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(m["data"]) for msgs in event["rmqMessagesByQueue"].values() for m in msgs]


async def test_batches_fill_in_order_within_the_window(harness: Harness) -> None:
    fn = FunctionInvoker()
    queue = harness.queue()
    async with harness.source(fn, queue=queue, prefetch=10, batch_size=3, batch_window=1.0):
        await until(harness.ready, what="ready")
        await harness.publish(queue, *(f"m{i}".encode() for i in range(7)))
        await until(lambda: sum(len(data(e)) for e in fn.events) == 7, what="7 messages")
    assert [data(e) for e in fn.events] == [[b"m0", b"m1", b"m2"], [b"m3", b"m4", b"m5"], [b"m6"]]
    assert harness.sample("router_amqp_messages_total", outcome="acked") == 7
    assert harness.sample("router_source_events_total", type="amqp") == 7
    assert await harness.count(queue) == 0


async def test_full_batches_acked_once_and_nothing_redelivered(harness: Harness) -> None:
    """Acks of a batch are written back to back (only the last one waits for the writer): every message
    is acked once, none is redelivered, and the queue is empty once the consumer has gone."""
    fn = FunctionInvoker()
    queue = harness.queue()
    bodies = [f"m{i}".encode() for i in range(55)]
    async with harness.source(fn, queue=queue, prefetch=20, batch_size=10, batch_window=0.5):
        await until(harness.ready, what="ready")
        await harness.publish(queue, *bodies)
        await until(lambda: harness.sample("router_amqp_messages_total", outcome="acked") == 55,
                    what="55 acked")
    got = [b for e in fn.events for b in data(e)]
    assert sorted(got) == sorted(bodies)  # each exactly once
    assert max(len(data(e)) for e in fn.events) == 10
    assert harness.sample("router_amqp_messages_total", outcome="redelivered") == 0
    assert await harness.count(queue) == 0  # unacked messages would be ready again after the close


async def test_dead_letter_filters_and_metrics(harness: Harness) -> None:
    async def handler(event: dict[str, Any]) -> Result:
        return fail("bad") if data(event) == [b'{"k": "bad"}'] else ok()

    fn = FunctionInvoker(handler)
    queue = harness.queue()
    async with harness.source(fn, filters=[{"data": {"k": ["good", "bad"]}}], queue=queue, batch_size=1):
        await until(harness.ready, what="ready")
        await harness.publish(queue, b'{"k": "good"}', b'{"k": "bad"}', b'{"k": "other"}', b"\xff")
        await until(lambda: harness.sample("router_amqp_messages_total", outcome="rejected") == 1,
                    what="the failed message rejected")
        await until(lambda: harness.sample("router_source_events_filtered_total", type="amqp") == 2,
                    what="two filtered")
    assert harness.sample("router_amqp_messages_total", outcome="acked") == 3  # 1 success + 2 filtered
    assert [data(e) for e in fn.events] == [[b'{"k": "good"}'], [b'{"k": "bad"}']]
    assert await harness.count(queue) == 0  # no dead-letter exchange on this queue: dropped by the broker


async def test_throttled_function_keeps_the_message(harness: Harness) -> None:
    results = [Result.error("Throttled", "slow down", outcome=Outcome.THROTTLED, throttle=True), ok()]

    async def handler(event: dict[str, Any]) -> Result:
        return results.pop(0)

    fn = FunctionInvoker(handler)
    queue = harness.queue()
    async with harness.source(fn, queue=queue, batch_size=1):
        await until(harness.ready, what="ready")
        await harness.publish(queue, b"once more")
        await until(lambda: len(fn.events) == 2, what="the second attempt")
        await until(lambda: harness.sample("router_amqp_messages_total", outcome="acked") == 1,
                    what="acked")
    second = fn.events[1]["rmqMessagesByQueue"][f"{queue}::/"][0]
    assert second["redelivered"] is True
    assert harness.sample("router_amqp_messages_total", outcome="returned") == 1
    assert harness.sample("router_amqp_messages_total", outcome="rejected") == 0
    assert harness.sample("router_source_errors_total", type="amqp") >= 1


# aiormq 6.9 leaves the socket of a connection attempt cancelled while it waits for the broker's
# protocol header unclosed (its cleanup covers only the later handshake steps): a ResourceWarning.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_stop_while_connecting(harness: Harness) -> None:
    """``stop`` never waits for a connection attempt (here: a port that accepts TCP but never speaks AMQP)."""
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        port = mute.getsockname()[1]
        queue = harness.queue()
        async with asyncio.timeout(8):  # a hang fails the test (the connect timeout alone is 10 s)
            async with harness.source(FunctionInvoker(), url=f"amqp://guest:guest@127.0.0.1:{port}/",
                                      queue=queue, stop_timeout=1.0) as src:
                await until(lambda: src._gate.running, what="run() started its connection attempt")
                assert not harness.ready()
                assert src.workers == 1


async def test_queue_with_other_arguments_is_a_clear_error(harness: Harness) -> None:
    queue = harness.queue()
    conn = await aio_pika.connect(harness.url)
    async with conn:
        channel = await conn.channel()
        await channel.declare_queue(queue, durable=True)  # classic
    async with harness.source(FunctionInvoker(), queue=queue, queue_type="quorum"):
        await until(lambda: "PRECONDITION_FAILED" in harness.reason(),
                    what="the route not ready with the broker's reason")
        await until(lambda: harness.sample("router_source_errors_total", type="amqp") >= 2,
                    what="retried")
    reason = harness.reason()
    assert f"broker {harness.url.split('@')[1].rstrip('/')}" in reason
    assert "make source.durable / queue_type / arguments match it, or declare: false" in reason


# --- bisect_on_error ------------------------------------------------------------------------------------


def poison_handler(poison: set[bytes], done: list[bytes]) -> Any:
    """A function that fails any batch holding a poison body, and records the bodies of the batches it
    finished (its side effects happen only on success)."""

    async def handler(event: dict[str, Any]) -> Result:
        bodies = data(event)
        if poison & set(bodies):
            return fail("poison")
        done.extend(bodies)
        return ok()

    return handler


async def dead_letter_queue(harness: Harness) -> tuple[str, str, dict[str, str]]:
    """A quorum queue (not yet declared: the source declares it) whose dead-letter exchange routes to a
    dead-letter queue (declared here); (queue, dlq, arguments)."""
    queue, dlq = harness.queue(), harness.queue()
    conn = await aio_pika.connect(harness.url)
    async with conn:
        channel = await conn.channel()
        await channel.declare_queue(dlq, durable=True)
    return queue, dlq, {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
async def test_bisect_dead_letters_only_the_poison_message_of_a_batch(harness: Harness, queue_type: str,
                                                                       caplog: pytest.LogCaptureFixture,
                                                                       ) -> None:
    """A batch of 10 with one poison message: the 9 good ones are processed once and acked, never
    dead-lettered; the poison one alone is rejected to the dead-letter queue, body intact. On by default."""
    done: list[bytes] = []
    fn = FunctionInvoker(poison_handler({b"m6"}, done))
    queue, dlq, args = await dead_letter_queue(harness)
    bodies = [f"m{i}".encode() for i in range(10)]
    async with harness.source(fn, queue=queue, prefetch=10, batch_size=10, batch_window=2.0,
                              queue_type=queue_type, arguments=args):
        await until(harness.ready, what="ready")
        await harness.publish(queue, *bodies)
        await until(lambda: harness.sample("router_amqp_messages_total", outcome="rejected") == 1,
                    what="the poison message rejected")
        await until(lambda: harness.sample("router_amqp_messages_total", outcome="acked") == 9,
                    what="the 9 good ones acked")
    assert sorted(done) == sorted(b for b in bodies if b != b"m6")  # each exactly once
    assert await harness.get_all(dlq) == [b"m6"]
    assert data(fn.events[0]) == bodies  # one batch of 10, bisected down to m6:
    assert [data(e) for e in fn.events[1:]] == [bodies[:5], bodies[5:], bodies[5:8], bodies[5:7], [b"m5"],
                                                [b"m6"], [b"m7"], bodies[8:]]
    assert harness.sample("router_batch_bisections_total") == 4
    messages = [r.getMessage() for r in caplog.records if r.name == "router.sources.amqp"]
    assert "route 'orders': the function failed (error) on 10 messages; bisect_on_error: retrying its " \
           "halves" in messages
    assert "route 'orders': the function failed (error) on them alone, after bisecting their batch; its 1 " \
           "messages rejected to the queue's dead-letter exchange" in messages
    assert all(not m["redelivered"] for e in fn.events for m in e["rmqMessagesByQueue"][f"{queue}::/"])
    assert harness.sample("router_amqp_messages_total", outcome="returned") == 0
    assert await harness.count(queue) == 0


async def test_a_timeout_bisects_too(harness: Harness) -> None:
    """A function that times out on a message: like an error, the batch is bisected down to it."""

    async def handler(event: dict[str, Any]) -> Result:
        if b"slow" in data(event):
            return Result.error("Sandbox.Timedout", "Task timed out after 1.00 seconds",
                                outcome=Outcome.TIMEOUT, error_type=ErrorType.TIMEOUT)
        return ok()

    fn = FunctionInvoker(handler)
    queue, dlq, args = await dead_letter_queue(harness)
    async with harness.source(fn, queue=queue, prefetch=4, batch_size=4, batch_window=2.0,
                              arguments=args):
        await until(harness.ready, what="ready")
        await harness.publish(queue, b"a", b"slow", b"c", b"d")
        await until(lambda: harness.sample("router_amqp_messages_total", outcome="rejected") == 1,
                    what="the slow message rejected")
        await until(lambda: harness.sample("router_amqp_messages_total", outcome="acked") == 3,
                    what="the others acked")
    assert await harness.get_all(dlq) == [b"slow"]
    assert harness.sample("router_batch_bisections_total") == 2


async def test_bisect_off_rejects_the_whole_batch(harness: Harness) -> None:
    """bisect_on_error: false is the old behaviour (and Lambda's): the good messages of a failed batch are
    dead-lettered with the poison one."""
    done: list[bytes] = []
    fn = FunctionInvoker(poison_handler({b"m6"}, done))
    queue, dlq, args = await dead_letter_queue(harness)
    bodies = [f"m{i}".encode() for i in range(10)]
    async with harness.source(fn, queue=queue, prefetch=10, batch_size=10, batch_window=2.0,
                              queue_type="quorum", arguments=args, bisect_on_error=False):
        await until(harness.ready, what="ready")
        await harness.publish(queue, *bodies)
        await until(lambda: harness.sample("router_amqp_messages_total", outcome="rejected") == 10,
                    what="the batch rejected")
    assert [data(e) for e in fn.events] == [bodies]
    assert sorted(await harness.get_all(dlq)) == sorted(bodies)
    assert done == []
    assert harness.sample("router_batch_bisections_total") == 0


async def test_bisect_of_a_batch_where_all_fail_is_bounded(harness: Harness) -> None:
    """Every message poison: 2n - 1 invocations for a batch of n, then each is dead-lettered once."""
    fn = FunctionInvoker(poison_handler({f"m{i}".encode() for i in range(10)}, []))
    queue, dlq, args = await dead_letter_queue(harness)
    bodies = [f"m{i}".encode() for i in range(10)]
    async with harness.source(fn, queue=queue, prefetch=10, batch_size=10, batch_window=2.0,
                              arguments=args):
        await until(harness.ready, what="ready")
        await harness.publish(queue, *bodies)
        await until(lambda: harness.sample("router_amqp_messages_total", outcome="rejected") == 10,
                    what="all 10 rejected")
    assert len(fn.events[0]["rmqMessagesByQueue"][f"{queue}::/"]) == 10
    assert len(fn.events) == 19
    assert sorted(await harness.get_all(dlq)) == sorted(bodies)
    assert harness.sample("router_batch_bisections_total") == 9
    assert harness.sample("router_amqp_messages_total", outcome="acked") == 0


async def test_bisect_with_requeue_counts_no_requeue_for_the_good_ones(harness: Harness) -> None:
    """on_error: requeue: only the poison message is requeued (x-router-redeliveries), then
    dead-lettered after max_redeliveries; the good ones were acked once, never requeued."""
    done: list[bytes] = []
    fn = FunctionInvoker(poison_handler({b"bad"}, done))
    queue, dlq, args = await dead_letter_queue(harness)
    bodies = [b"a", b"bad", b"c", b"d"]
    async with harness.source(fn, queue=queue, prefetch=4, batch_size=4, batch_window=2.0,
                              queue_type="quorum", arguments=args, on_error="requeue", requeue_delay=0.2,
                              max_redeliveries=1):
        await until(harness.ready, what="ready")
        await harness.publish(queue, *bodies)
        await until(lambda: harness.sample("router_amqp_messages_total", outcome="rejected") == 1,
                    what="the poison message dead-lettered")
    assert sorted(done) == [b"a", b"c", b"d"]
    assert await harness.get_all(dlq) == [b"bad"]
    assert harness.sample("router_amqp_messages_total", outcome="requeued") == 1  # only the poison one
    assert harness.sample("router_amqp_messages_total", outcome="acked") == 3
    assert sum(data(e) == [b"bad"] for e in fn.events) == 2  # alone: once bisected, once requeued


async def test_throttle_while_bisecting_hands_back_what_was_not_settled(harness: Harness) -> None:
    """A throttle is not the messages' fault: bisecting stops; the part and the parts not yet run go back
    to the queue (nothing rejected), and run again later."""
    done: list[bytes] = []
    throttled = [True]  # the first part of two messages is throttled

    async def handler(event: dict[str, Any]) -> Result:
        bodies = data(event)
        if b"bad" in bodies:
            return fail("poison")
        if len(bodies) == 2 and throttled:
            throttled.clear()
            return Result.error("Throttled", "slow down", outcome=Outcome.THROTTLED, throttle=True)
        done.extend(bodies)
        return ok()

    fn = FunctionInvoker(handler)
    queue, dlq, args = await dead_letter_queue(harness)
    async with harness.source(fn, queue=queue, prefetch=4, batch_size=4, batch_window=2.0, arguments=args):
        await until(harness.ready, what="ready")
        await harness.publish(queue, b"a", b"b", b"bad", b"d")
        await until(lambda: sorted(done) == [b"a", b"b", b"d"], what="the good ones done")
        await until(lambda: harness.sample("router_amqp_messages_total", outcome="rejected") == 1,
                    what="the poison message rejected")
    # [a b bad d] failed -> [a b] throttled: a, b and the untried [bad d] handed back, nothing rejected
    assert [data(e) for e in fn.events[:2]] == [[b"a", b"b", b"bad", b"d"], [b"a", b"b"]]
    assert harness.sample("router_amqp_messages_total", outcome="returned") == 4
    assert sorted(done) == [b"a", b"b", b"d"]
    assert await harness.get_all(dlq) == [b"bad"]


async def test_stop_while_bisecting_hands_back_the_parts_not_yet_run(harness: Harness) -> None:
    """A stop lets the running part finish and be acked; the parts not yet run go back to the queue."""
    gate = asyncio.Event()

    async def handler(event: dict[str, Any]) -> Result:
        bodies = data(event)
        if bodies == [b"a", b"b"]:
            await gate.wait()
        return fail("poison") if b"bad" in bodies else ok()

    fn = FunctionInvoker(handler)
    queue, _, args = await dead_letter_queue(harness)
    async with harness.source(fn, queue=queue, prefetch=4, batch_size=4, batch_window=2.0,
                              arguments=args) as src:
        await until(harness.ready, what="ready")
        await harness.publish(queue, b"a", b"b", b"bad", b"d")
        await until(lambda: len(fn.events) == 2 and fn.running == 1, what="the first half running")
        stopping = asyncio.create_task(src.stop(10))
        await until(lambda: src._gate.stopping, what="stopping")
        gate.set()
        await stopping
    assert [data(e) for e in fn.events] == [[b"a", b"b", b"bad", b"d"], [b"a", b"b"]]
    assert harness.sample("router_amqp_messages_total", outcome="acked") == 2
    assert harness.sample("router_amqp_messages_total", outcome="returned") == 2
    assert harness.sample("router_amqp_messages_total", outcome="rejected") == 0
    assert await harness.count(queue) == 2  # bad and d, for the next consumer


async def test_a_paused_route_has_no_consumer_and_its_messages_stay_ready(harness: Harness) -> None:
    """Paused (``router pause``, UpdateEventSourceMapping): the consumer is cancelled, so the broker keeps
    the messages ready (none wait unacked here); resumed, it consumes them."""
    fn = FunctionInvoker()
    queue = harness.queue()
    paused = {"on": False}

    async def consumers() -> int:
        conn = await aio_pika.connect(harness.url)
        async with conn:
            channel = await conn.channel()
            q = await channel.declare_queue(queue, passive=True)
            return int(q.declaration_result.consumer_count or 0)

    async with harness.source(fn, queue=queue, prefetch=10, batch_size=1) as src:
        src._dispatcher.route_enabled = lambda route: not paused["on"]  # type: ignore[method-assign]
        await until(harness.ready, what="ready")
        await harness.publish(queue, b"before")
        await until(lambda: len(fn.events) == 1, what="the first message")
        paused["on"] = True

        async def no_consumer() -> bool:
            return await consumers() == 0

        await until(no_consumer, what="the consumer cancelled")
        await harness.publish(queue, *(f"p{i}".encode() for i in range(5)))

        async def ready_on_the_broker() -> bool:
            return await harness.count(queue) == 5

        await until(ready_on_the_broker, what="5 messages ready on the broker")
        assert len(fn.events) == 1
        paused["on"] = False
        await until(lambda: len(fn.events) == 6, what="consumed after the resume")
    assert sorted(b for e in fn.events for b in data(e)) == [b"before", b"p0", b"p1", b"p2", b"p3", b"p4"]
    assert await harness.count(queue) == 0
