"""The request-body budget: first come, first served; a wait that ends or is cancelled leaves no debt."""

from __future__ import annotations

import asyncio

from router.http.limits import ByteBudget


async def test_grants_in_order_and_refuses_after_the_wait() -> None:
    budget = ByteBudget(100)
    assert await budget.take(60, wait=0)
    assert not await budget.take(50, wait=0.01)  # no room within the wait
    big = asyncio.create_task(budget.take(80, wait=5))
    await asyncio.sleep(0)
    assert not budget.try_take(10)  # a newcomer queues behind the waiting 80, though 40 are free
    budget.give(60)
    assert await big
    assert budget.used == 80


async def test_a_cancelled_wait_gives_back_what_it_was_granted() -> None:
    budget = ByteBudget(100)
    assert await budget.take(100, wait=0)
    waiter = asyncio.create_task(budget.take(50, wait=5))
    await asyncio.sleep(0)
    budget.give(100)  # grants the 50 to the waiter...
    waiter.cancel()  # ...which is cancelled before it runs
    await asyncio.gather(waiter, return_exceptions=True)
    assert budget.used == 0
    assert await budget.take(100, wait=0)


async def test_a_request_larger_than_the_budget_is_refused_at_once() -> None:
    assert not await ByteBudget(10).take(11, wait=5)
