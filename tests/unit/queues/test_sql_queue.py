"""The state store as the queue of async invocations, on a real SQLite store: publish wakes the taker,
deliveries are claims settled by complete / retry_later / release, an idle taker waits for what is due."""

from __future__ import annotations

import asyncio
import time

from router.clock import SystemClock
from router.queues.sql import CLAIM_BATCH, SqlQueue
from router.state.store import StateStore


async def publish(queue: SqlQueue, n: int, function: str = "f", now: float | None = None) -> None:
    for i in range(n):
        await queue.publish(function, request_id=f"r-{i}", payload=b"{}", source="webhook", route="hooks",
                            now=time.time() if now is None else now)


async def test_a_publish_wakes_an_idle_taker_and_take_claims_it(store: StateStore) -> None:
    queue = SqlQueue(store, clock=SystemClock(), poll_interval=30)
    deliveries = await queue.deliveries("f", prefetch=10, lease=60)
    waiting = asyncio.create_task(deliveries.wait())
    await asyncio.sleep(0.05)
    assert not waiting.done()  # nothing due: it waits (the poll interval is long)
    await publish(queue, 1)
    await asyncio.wait_for(waiting, 5)
    [delivery] = await deliveries.take(CLAIM_BATCH)
    assert (delivery.event.request_id, delivery.event.attempts, delivery.event.route) == ("r-0", 0, "hooks")
    assert await deliveries.take(CLAIM_BATCH) == []  # leased to this taker now
    await delivery.complete()
    assert await queue.depth() == {}


async def test_a_full_batch_is_taken_again_at_once(store: StateStore) -> None:
    queue = SqlQueue(store, clock=SystemClock(), poll_interval=30)
    await publish(queue, CLAIM_BATCH + 2)
    deliveries = await queue.deliveries("f", prefetch=64, lease=60)
    await asyncio.wait_for(deliveries.wait(), 5)
    assert len(await deliveries.take(CLAIM_BATCH)) == CLAIM_BATCH
    await asyncio.wait_for(deliveries.wait(), 1)  # a full batch: more may be waiting, no idle wait
    assert len(await deliveries.take(CLAIM_BATCH)) == 2


async def test_retry_later_counts_the_attempt_and_is_due_after_the_delay(store: StateStore) -> None:
    queue = SqlQueue(store, clock=SystemClock(), poll_interval=30)
    await publish(queue, 1)
    deliveries = await queue.deliveries("f", prefetch=10, lease=60)
    [delivery] = await deliveries.take(1)
    await delivery.retry_later(0.2, 1)
    assert await deliveries.take(1) == []  # not due yet
    await asyncio.wait_for(deliveries.wait(), 5)  # woken by the retry, then the store says when
    [again] = await deliveries.take(1)
    assert (again.event.request_id, again.event.attempts) == ("r-0", 1)


async def test_release_hands_the_event_back_untouched(store: StateStore) -> None:
    queue = SqlQueue(store, clock=SystemClock(), poll_interval=30)
    await publish(queue, 1)
    deliveries = await queue.deliveries("f", prefetch=10, lease=60)
    [delivery] = await deliveries.take(1)
    assert await queue.depth() == {}  # leased events are not waiting
    await delivery.release()
    assert await queue.depth() == {"f": 1}
    [again] = await deliveries.take(1)
    assert again.event.attempts == 0
    assert await queue.ping()
