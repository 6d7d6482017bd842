"""Concurrency: per function, and for the whole router (Lambda's account limit), as counted slots.

One ``FunctionLimit`` per function is shared by every source in this replica (DESIGN §4.2); each takes a
slot of the account-wide limit too (its ``parent``), so a slot held means both. Sync callers
``try_acquire`` and are throttled at once when it fails; pollers, schedules and the async worker
``await acquire()`` (backpressure). Waiters are served first come, first served.
"""

from __future__ import annotations

import asyncio
import collections

DEFAULT_ASYNC_PARALLELISM = 64
"""Async events a function's worker runs at once when the function has no ``concurrency`` cap."""


class FunctionLimit:
    """Slots of one function (or of the account); ``cap=None`` is unbounded. With a ``parent`` (the
    account), a slot is only had when the parent has one free too."""

    def __init__(self, cap: int | None, parent: FunctionLimit | None = None) -> None:
        if cap is not None and cap < 1:
            raise ValueError(f"FunctionLimit: cap must be at least 1, got {cap}")
        self.cap = cap
        self.parent = parent
        self.in_use = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def free(self) -> int | None:
        """Slots free now, the parent's counted too (None when unbounded)."""
        own = None if self.cap is None else max(0, self.cap - self.in_use)
        parent = self.parent.free() if self.parent is not None else None
        if own is None:
            return parent
        return own if parent is None else min(own, parent)

    def full(self) -> bool:
        """Whether this limit itself (not its parent) has no slot for a new caller."""
        return self.cap is not None and (self.in_use >= self.cap or self._has_waiters())

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody is queued for one; never waits."""
        if self.full():
            return False
        if self.parent is not None and not self.parent.try_acquire():
            return False
        self.in_use += 1
        return True

    async def acquire(self) -> None:
        """Take a slot, waiting for one when all are busy. Cancel-safe: a cancelled waiter holds none."""
        if self.try_acquire():
            return
        await self._acquire_own()
        if self.parent is not None:
            try:
                await self.parent.acquire()
            except BaseException:
                self._release_own()
                raise

    async def _acquire_own(self) -> None:
        if not self.full():
            self.in_use += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # The slot was handed to us just as we were cancelled: pass it on.
                self._release_own()
            raise
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)

    def set_cap(self, cap: int | None) -> None:
        """Change the cap at run time (reserved concurrency set through the control API): 0 pauses (every
        caller waits, sync callers are throttled), a higher cap hands the new slots to waiters at once.
        Slots held above a lower cap are kept until released."""
        if cap is not None and cap < 0:
            raise ValueError(f"FunctionLimit: cap must be 0 or more, got {cap}")
        self.cap = cap
        while self._waiters and (cap is None or self.in_use < cap):
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_use += 1  # the new slot moves to the waiter
                fut.set_result(None)

    def release(self) -> None:
        """Give a slot back (and the parent's); hands it straight to the first live waiter, if any."""
        self._release_own()
        if self.parent is not None:
            self.parent.release()

    def _release_own(self) -> None:
        while self._waiters and (self.cap is None or self.in_use <= self.cap):  # not above a lowered cap
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot moves to the waiter: in_use unchanged
                return
        if self.in_use <= 0:
            raise RuntimeError("FunctionLimit.release: no slot is held")
        self.in_use -= 1

    def _has_waiters(self) -> bool:
        return any(not f.done() for f in self._waiters)


class Limits:
    """The ``FunctionLimit`` of every function, built from the config's ``concurrency`` caps, each a
    child of the ``account`` limit (``limits.concurrent_executions``)."""

    def __init__(self, caps: dict[str, int | None], account: int | None = None) -> None:
        self.account = FunctionLimit(account)
        self._limits = {name: FunctionLimit(cap, self.account) for name, cap in caps.items()}

    def __getitem__(self, function: str) -> FunctionLimit:
        return self._limits[function]

    def get(self, function: str) -> FunctionLimit | None:
        return self._limits.get(function)

    def set(self, function: str, cap: int | None) -> FunctionLimit:
        """A new limit of ``cap`` for ``function`` (a reload added it)."""
        self._limits[function] = limit = FunctionLimit(None, self.account)
        limit.set_cap(cap)  # 0 (paused) too
        return limit

    def remove(self, function: str) -> None:
        self._limits.pop(function, None)
