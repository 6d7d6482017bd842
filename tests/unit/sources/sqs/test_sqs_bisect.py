"""bisect_on_error on the sqs source, against a real moto_server with redrive policies: only the messages
that fail alone stay on the queue (and reach its DLQ); the others are deleted within the same receive."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from router.config.models import SqsSourceConfig
from router.invocation import Outcome, Result
from tests.unit.sources.functions import FunctionInvoker, fail, ok
from tests.unit.sources.sqs.support import Harness, Sqs
from tests.waiting import until

BODIES = [f"m{i}" for i in range(10)]


def poison_handler(poison: set[str], done: list[str], pause: float = 0.0) -> Any:
    """Fails any batch holding a poison body; records the bodies of the batches it finished (its side
    effects happen only on success)."""

    async def handler(event: dict[str, Any]) -> Result:
        if pause:
            await asyncio.sleep(pause)
        bodies = [r["body"] for r in event["Records"]]
        if poison & set(bodies):
            return fail("poison")
        done.extend(bodies)
        return ok()

    return handler


async def dead_letters(sqs: Sqs, dlq: str, count: int, deadline: float = 30.0) -> list[str]:
    """Bodies moved to ``dlq`` (taken), once there are ``count`` of them."""
    moved: list[str] = []

    async def gathered() -> bool:
        moved.extend(m["Body"] for m in await sqs.drain(dlq, wait=1))
        return len(moved) >= count

    await until(gathered, f"{count} dead letters", deadline=deadline)
    return moved


def bisections(harness: Harness) -> float:
    return harness.metrics.registry.get_sample_value("router_batch_bisections_total",
                                                     {"route": "uploads"}) or 0.0


def test_off_by_default_as_on_lambda() -> None:
    cfg = SqsSourceConfig.model_validate({"type": "sqs", "queue_url": "http://127.0.0.1/1/q"})
    assert not cfg.bisect_on_error
    assert SqsSourceConfig.model_validate({"type": "sqs", "queue_url": "http://127.0.0.1/1/q",
                                           "bisect_on_error": True}).bisect_on_error


@pytest.mark.parametrize("bisect", [True, False])
async def test_one_poison_message_in_a_batch_of_ten(harness: Harness, sqs: Sqs, bisect: bool,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """maxReceiveCount 1. With bisect_on_error the 9 good messages are processed once and deleted in the
    receive that brought them, and only the poison one reaches the DLQ, body intact. Without it (the
    default, as Lambda), the whole batch comes back and all ten are dead-lettered."""
    url = await sqs.create(visibility=2, dlq_after=1)
    await sqs.send(url, *BODIES)
    done: list[str] = []
    fn = FunctionInvoker(poison_handler({"m6"}, done))
    options = {"bisect_on_error": True} if bisect else {}
    async with harness.source(url, fn, concurrency=1, batch_size=10, batch_window="2s", **options):
        moved = await dead_letters(sqs, url + "-dlq", 1 if bisect else 10)
        await until(lambda: fn.running == 0, what="idle")
    assert [r["body"] for r in fn.events[0]["Records"]] == BODIES  # one batch of ten
    if bisect:
        assert moved == ["m6"]
        assert sorted(done) == sorted(set(BODIES) - {"m6"})  # each exactly once
        assert [[r["body"] for r in e["Records"]] for e in fn.events[1:]] == [
            BODIES[:5], BODIES[5:], BODIES[5:8], BODIES[5:7], ["m5"], ["m6"], ["m7"], BODIES[8:]]
        assert bisections(harness) == 4
        messages = [r.getMessage() for r in caplog.records if r.name == "router.sources.sqs"]
        assert ("route 'uploads': the function failed (error) on a batch of 10 messages; bisect_on_error: "
                "retrying its halves") in messages
        assert ("route 'uploads': the function failed (error) (alone, after bisecting the batch); 1 messages "
                "stay on the queue until their visibility timeout") in messages
    else:
        assert sorted(moved) == sorted(BODIES)  # the good ones went to the DLQ with the poison one
        assert done == []
        assert len(fn.events) == 1
        assert bisections(harness) == 0
    # no invocation saw a second receive: the halves ran in the receive that brought the batch
    assert {r["attributes"]["ApproximateReceiveCount"] for e in fn.events for r in e["Records"]} == {"1"}
    assert await sqs.counts(url) == (0, 0)


async def test_the_poison_message_is_retried_up_to_max_receive_count(harness: Harness, sqs: Sqs) -> None:
    """The message that fails alone takes the normal failure path: back after its visibility timeout,
    counted by the redrive policy (maxReceiveCount 2: two receives), then the DLQ."""
    url = await sqs.create(visibility=1, dlq_after=2)
    await sqs.send(url, "a", "b", "poison", "d")
    done: list[str] = []
    fn = FunctionInvoker(poison_handler({"poison"}, done))
    async with harness.source(url, fn, concurrency=1, batch_size=10, batch_window="1s", bisect_on_error=True):
        assert await dead_letters(sqs, url + "-dlq", 1) == ["poison"]
        await until(lambda: fn.running == 0, what="idle")
    assert sorted(done) == ["a", "b", "d"]
    alone = [e["Records"][0]["attributes"]["ApproximateReceiveCount"] for e in fn.events
             if [r["body"] for r in e["Records"]] == ["poison"]]
    assert alone == ["1", "2"]
    assert await sqs.counts(url) == (0, 0)


async def test_a_batch_where_every_message_fails_takes_2n_minus_1_invocations(
    harness: Harness, sqs: Sqs,
) -> None:
    url = await sqs.create(visibility=2, dlq_after=1)
    await sqs.send(url, *BODIES)
    fn = FunctionInvoker(poison_handler(set(BODIES), []))
    async with harness.source(url, fn, concurrency=1, batch_size=10, batch_window="2s", bisect_on_error=True):
        moved = await dead_letters(sqs, url + "-dlq", 10)
        await until(lambda: fn.running == 0, what="idle")
    assert sorted(moved) == sorted(BODIES)
    assert len(fn.events[0]["Records"]) == 10
    assert len(fn.events) == 19
    assert bisections(harness) == 9


async def test_reported_failures_are_honoured_and_bisect_applies_to_failed_invocations(
    harness: Harness, sqs: Sqs,
) -> None:
    """With report_batch_item_failures: a part whose response names failures is not bisected (the named
    ones stay on the queue, the rest is deleted); only an invocation that failed is."""
    url = await sqs.create(visibility=2, dlq_after=1)
    bodies = ["a", "b", "reported", "bad", "e", "f"]
    ids = dict(zip(await sqs.send(url, *bodies), bodies, strict=True))
    done: list[str] = []

    async def handler(event: dict[str, Any]) -> Result:
        got = [r["body"] for r in event["Records"]]
        if "bad" in got:
            return fail("bad")
        failures = [{"itemIdentifier": r["messageId"]} for r in event["Records"] if r["body"] == "reported"]
        done.extend(b for b in got if b != "reported")
        return ok({"batchItemFailures": failures})

    fn = FunctionInvoker(handler)
    async with harness.source(url, fn, concurrency=1, batch_size=10, batch_window="2s", bisect_on_error=True,
                              report_batch_item_failures=True):
        moved = await dead_letters(sqs, url + "-dlq", 2)
        await until(lambda: fn.running == 0, what="idle")
    assert sorted(moved) == ["bad", "reported"]
    assert sorted(done) == ["a", "b", "e", "f"]
    assert [[ids[r["messageId"]] for r in e["Records"]] for e in fn.events] == [
        bodies, ["a", "b", "reported"], ["bad", "e", "f"], ["bad", "e"], ["bad"], ["e"], ["f"]]
    assert bisections(harness) == 3


async def test_visibility_stays_extended_while_bisecting(harness: Harness, sqs: Sqs) -> None:
    """Five invocations of 0.5 s against a visibility timeout of 1 s: another consumer of the queue
    receives none of the batch's messages while it is being bisected."""
    url = await sqs.create(visibility=1)
    await sqs.send(url, "a", "b", "poison", "d")
    done: list[str] = []
    fn = FunctionInvoker(poison_handler({"poison"}, done, pause=0.5))
    stolen: list[str] = []
    async with harness.source(url, fn, concurrency=1, batch_size=10, batch_window="1s",
                              bisect_on_error=True):
        await until(lambda: len(fn.events) >= 1, what="the batch invoked")
        async with asyncio.timeout(20):
            while len(fn.events) < 5:  # until the last part ([d]) starts: the poison one is held till then
                resp = await sqs.client.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                                        WaitTimeSeconds=0)
                stolen.extend(m["Body"] for m in resp.get("Messages") or [])
                await asyncio.sleep(0.1)  # another consumer polling the queue
        await until(lambda: fn.running == 0, what="idle")
    assert stolen == []
    assert [[r["body"] for r in e["Records"]] for e in fn.events[:5]] == [
        ["a", "b", "poison", "d"], ["a", "b"], ["poison", "d"], ["poison"], ["d"]]
    assert sorted(done) == ["a", "b", "d"]  # each once


async def test_fifo_bisect_keeps_the_later_messages_of_a_failed_group(harness: Harness, sqs: Sqs) -> None:
    """FIFO: halves run first half first; once a message failed alone, the later messages of its group are
    not run (they stay on the queue behind it); other groups go on."""
    url = await sqs.create(fifo=True, visibility=30)
    for i in range(5):
        await sqs.send(url, f"A{i}", group="A")
    await sqs.send(url, "B0", "B1", group="B")
    done: list[str] = []
    fn = FunctionInvoker(poison_handler({"A1"}, done))
    async with harness.source(url, fn, concurrency=1, batch_size=10, bisect_on_error=True):  # no window: FIFO
        await until(lambda: {"A0", "B0", "B1"} <= set(done), what="A0, B0 and B1 done")
        await until(lambda: fn.running == 0, what="idle")
    assert sorted(done) == ["A0", "B0", "B1"]
    assert [e for e in fn.events if {"A2", "A3", "A4"} & {r["body"] for r in e["Records"]}
            and "A1" not in {r["body"] for r in e["Records"]}] == []  # never run without A1 before them
    assert sum([r["body"] for r in e["Records"]] == ["A1"] for e in fn.events) == 1
    assert await sqs.counts(url) == (0, 4)  # A1..A4 stay (in flight until their visibility timeout)


async def test_stop_while_bisecting_hands_back_the_parts_not_yet_run(harness: Harness, sqs: Sqs) -> None:
    """A stop lets the running part finish and be deleted; the parts not yet run are visible again at
    once (not after the 60 s visibility timeout)."""
    url = await sqs.create(visibility=60)
    await sqs.send(url, "a", "b", "poison", "d")
    gate = asyncio.Event()

    async def handler(event: dict[str, Any]) -> Result:
        bodies = [r["body"] for r in event["Records"]]
        if bodies == ["a", "b"]:
            await gate.wait()
        return fail("poison") if "poison" in bodies else ok()

    fn = FunctionInvoker(handler)
    async with harness.source(url, fn, concurrency=1, batch_size=10, batch_window="1s",
                              bisect_on_error=True) as src:
        await until(lambda: len(fn.events) == 2 and fn.running == 1, what="the first half running")
        stopping = asyncio.create_task(src.stop(10))
        await until(lambda: src._gate.stopping, what="stopping")
        gate.set()
        await stopping
    assert [[r["body"] for r in e["Records"]] for e in fn.events] == [["a", "b", "poison", "d"], ["a", "b"]]
    assert await sqs.counts(url) == (2, 0)  # a and b deleted; poison and d handed back


async def test_a_throttle_while_bisecting_leaves_the_rest_on_the_queue(harness: Harness, sqs: Sqs) -> None:
    """A throttle is not the messages' fault: bisecting stops, nothing more runs from that receive and
    nothing of it is deleted; the rest comes back after the visibility timeout, as a throttled batch."""
    url = await sqs.create(visibility=1)
    await sqs.send(url, "a", "b", "poison", "d")
    throttled = [True]  # the first part of two messages is throttled, once
    done: list[str] = []

    async def handler(event: dict[str, Any]) -> Result:
        bodies = [r["body"] for r in event["Records"]]
        if "poison" in bodies:
            return fail("poison")
        if bodies == ["a", "b"] and throttled:
            throttled.clear()
            return Result.error("TooManyRequestsException", "slow down", outcome=Outcome.THROTTLED,
                                throttle=True)
        done.extend(bodies)
        return ok()

    fn = FunctionInvoker(handler)
    async with harness.source(url, fn, concurrency=1, batch_size=10, batch_window="1s", bisect_on_error=True):
        await until(lambda: sorted(done) == ["a", "b", "d"], deadline=20, what="the good ones done")
        await until(lambda: fn.running == 0, what="idle")
    bodies = [[r["body"] for r in e["Records"]] for e in fn.events]
    assert bodies[:2] == [["a", "b", "poison", "d"], ["a", "b"]]
    later = {r["attributes"]["ApproximateReceiveCount"] for e in fn.events[2:] for r in e["Records"]}
    assert "2" in later
    assert "1" not in later  # nothing else ran from the first receive
    assert sorted(done) == ["a", "b", "d"]  # each once
