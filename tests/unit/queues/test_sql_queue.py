"""The state store as the queue of async invocations, on a real SQLite store: publish wakes the taker,
deliveries are claims settled by complete / retry_later / release, an idle taker waits for what is due."""

from __future__ import annotations

import asyncio
import time

from router.clock import SystemClock
from router.queues.sql import CLAIM_BATCH, SqlQueue
from router.state.store import StateStore
from tests.stores import StoreFactory


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


# --- several functions, several replicas ---------------------------------------------------------------


async def test_a_function_is_not_held_behind_another_functions_backlog(new_store: StoreFactory) -> None:
    """Each function's events are claimed on their own: a cold function's event, published after a hot
    backlog, is taken at once by its own taker, and the hot backlog is all still there."""
    store = await new_store()
    queue = SqlQueue(store, clock=SystemClock(), poll_interval=30)
    now = time.time()
    await asyncio.gather(*(publish(queue, 50, "hot", now=now - 60 + i) for i in range(10)))  # 500, older
    await publish(queue, 3, "cold", now=now)
    cold = await queue.deliveries("cold", prefetch=10, lease=60)
    await asyncio.wait_for(cold.wait(), 5)
    taken = await cold.take(CLAIM_BATCH)
    assert sorted(d.event.request_id for d in taken) == ["r-0", "r-1", "r-2"]
    assert await queue.depth() == {"hot": 500}


async def test_replicas_claiming_at_once_never_take_the_same_event(new_store: StoreFactory) -> None:
    """Three stores on one database (three replicas) claim one function's events concurrently until none
    is left: every event is claimed exactly once (on PostgreSQL: FOR UPDATE SKIP LOCKED)."""
    stores = [await new_store() for _ in range(3)]
    queues = [SqlQueue(s, clock=SystemClock(), poll_interval=30) for s in stores]
    now = time.time()
    await asyncio.gather(*(publish(queues[0], 100, "hot", now=now - 10) for _ in range(4)))  # 400 events
    claimed: list[int] = []

    async def drain(queue: SqlQueue) -> None:
        deliveries = await queue.deliveries("hot", prefetch=64, lease=60)
        for _ in range(400):  # bounded: at least one event per round while any is left
            taken = await deliveries.take(CLAIM_BATCH)
            if not taken:
                return
            claimed.extend(d.event.id for d in taken)

    await asyncio.wait_for(asyncio.gather(*(drain(q) for q in queues)), 60)
    assert len(claimed) == 400
    assert len(set(claimed)) == 400
