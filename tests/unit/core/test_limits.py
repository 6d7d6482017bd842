"""FunctionLimit: try (sync, 429) and wait (pollers, async worker)."""

from __future__ import annotations

import asyncio

import pytest

from router.core.limits import FunctionLimit


def test_try_acquire_up_to_cap() -> None:
    lim = FunctionLimit(2)
    assert lim.try_acquire()
    assert lim.try_acquire()
    assert not lim.try_acquire()
    assert lim.free() == 0
    lim.release()
    assert lim.free() == 1


def test_unbounded() -> None:
    lim = FunctionLimit(None)
    assert all(lim.try_acquire() for _ in range(1000))
    assert lim.free() is None
    assert lim.in_use == 1000


def test_release_without_acquire_is_a_bug() -> None:
    with pytest.raises(RuntimeError, match="no slot is held"):
        FunctionLimit(1).release()


def test_cap_must_be_positive() -> None:
    with pytest.raises(ValueError, match="cap must be at least 1, got 0"):
        FunctionLimit(0)


async def test_waiters_get_slots_in_order_and_block_try() -> None:
    lim = FunctionLimit(1)
    assert lim.try_acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await lim.acquire()
        order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await asyncio.sleep(0)  # let them queue
    assert not lim.try_acquire()  # a queued waiter comes first
    for _ in range(3):
        lim.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert lim.in_use == 1
    lim.release()
    assert lim.in_use == 0


async def test_cancelled_waiter_holds_no_slot() -> None:
    lim = FunctionLimit(1)
    assert lim.try_acquire()
    task = asyncio.create_task(lim.acquire())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    lim.release()
    assert lim.in_use == 0
    assert lim.try_acquire()


async def test_slot_handed_over_while_cancelled_is_passed_on() -> None:
    lim = FunctionLimit(1)
    assert lim.try_acquire()
    first = asyncio.create_task(lim.acquire())
    second = asyncio.create_task(lim.acquire())
    await asyncio.sleep(0)
    lim.release()  # hands the slot to `first` ...
    first.cancel()  # ... which is cancelled before it runs: the slot must go to `second`
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 5)
    assert lim.in_use == 1


def test_a_slot_takes_one_of_the_account_too() -> None:
    account = FunctionLimit(3)
    a, b = FunctionLimit(2, account), FunctionLimit(None, account)
    assert a.try_acquire()
    assert a.try_acquire()
    assert not a.try_acquire()
    assert a.full()
    assert b.try_acquire()
    assert not b.try_acquire()  # the account is full, b itself is not
    assert not b.full()
    assert (a.free(), b.free(), account.in_use) == (0, 0, 3)
    a.release()
    assert (a.free(), b.free(), account.in_use) == (1, 1, 2)


async def test_a_waiter_of_a_full_account_gets_the_next_account_slot() -> None:
    account = FunctionLimit(1)
    a, b = FunctionLimit(None, account), FunctionLimit(5, account)
    assert a.try_acquire()
    waiter = asyncio.create_task(b.acquire())
    await asyncio.sleep(0)
    assert not waiter.done()
    assert b.in_use == 1  # its own slot is held while it waits for the account's
    a.release()
    await asyncio.wait_for(waiter, 5)
    assert (account.in_use, a.in_use, b.in_use) == (1, 0, 1)


async def test_a_waiter_cancelled_while_the_account_is_full_holds_nothing() -> None:
    account = FunctionLimit(1)
    a, b = FunctionLimit(None, account), FunctionLimit(2, account)
    assert a.try_acquire()
    waiter = asyncio.create_task(b.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (account.in_use, b.in_use) == (1, 0)
    a.release()
    assert account.in_use == 0


async def test_set_cap_zero_pauses_and_a_higher_cap_wakes_waiters() -> None:
    lim = FunctionLimit(2)
    assert lim.try_acquire()
    lim.set_cap(0)  # paused: nobody gets a slot; the held one stays held
    assert not lim.try_acquire()
    assert lim.full()
    waiters = [asyncio.create_task(lim.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    lim.release()  # above the lowered cap: not handed on
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    assert lim.in_use == 0
    lim.set_cap(2)  # resumed with room for two: two waiters get theirs at once
    await asyncio.sleep(0)
    assert sum(w.done() for w in waiters) == 2
    assert lim.in_use == 2
    lim.set_cap(None)
    await asyncio.gather(*waiters)
    assert lim.in_use == 3
    with pytest.raises(ValueError, match="0 or more"):
        lim.set_cap(-1)


async def test_child_waits_for_a_paused_parent() -> None:
    """The async limit of a function without a cap sits under the function's own: pausing it holds both."""
    fn = FunctionLimit(None)
    async_limit = FunctionLimit(64, fn)
    fn.set_cap(0)
    assert not async_limit.try_acquire()
    waiting = asyncio.create_task(async_limit.acquire())
    await asyncio.sleep(0)
    assert not waiting.done()
    fn.set_cap(None)  # resumed: the waiter gets its slot, counted in both limits
    await asyncio.wait_for(waiting, 5)
    assert (async_limit.in_use, fn.in_use) == (1, 1)
    async_limit.release()
    assert (async_limit.in_use, fn.in_use) == (0, 0)
