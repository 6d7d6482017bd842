"""Bisect on error, shared by the polled sources: split a batch whose invocation failed into halves and
run those, first half first, down to the single messages that fail on their own.

Pure, no I/O. ``halves`` is the split (the stream engine's ``bisect_on_error`` uses it too);
``Bisection`` holds the parts of one batch still to run, for the sqs and amqp sources' loops.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


def halves(items: Sequence[T]) -> tuple[list[T], list[T]]:
    """Split a failed batch in two halves (the first half, the larger by one when odd, runs first, to
    keep the order)."""
    mid = (len(items) + 1) // 2
    return list(items[:mid]), list(items[mid:])


class Bisection(Generic[T]):
    """The parts of one batch still to run, depth first (a half's own halves run before the other half).

    Start with the whole batch; ``next()`` gives the next part to invoke (None: all ran). When a part's
    invocation failed as a whole, ``failed(part)`` splits it (when ``enabled`` and it has more than one
    item: its halves run next, and it returns True) or returns False: the part takes the source's normal
    failure path. A part that succeeded, or whose failures the function reported itself, needs no call.
    ``rest()`` takes the parts not run yet (to hand them back at a stop or a throttle).

    A batch of n items that all fail runs at most 2n - 1 invocations (a binary tree with n leaves); a
    batch with one poison item about 2 log2(n) + 1.
    """

    __slots__ = ("_todo", "enabled", "splits")

    def __init__(self, items: Sequence[T], *, enabled: bool) -> None:
        self._todo: deque[list[T]] = deque([list(items)] if items else [])
        self.enabled = enabled
        self.splits = 0  # parts split so far

    def next(self) -> list[T] | None:
        return self._todo.popleft() if self._todo else None

    def failed(self, part: Sequence[T]) -> bool:
        """The invocation of ``part`` failed as a whole: True when it was split (its halves run next)."""
        if not self.enabled or len(part) < 2:
            return False
        first, second = halves(part)
        self._todo.appendleft(second)
        self._todo.appendleft(first)
        self.splits += 1
        return True

    def rest(self) -> list[T]:
        """Every item of the parts not run yet, in order; none is left to run after this."""
        out = [item for part in self._todo for item in part]
        self._todo.clear()
        return out


__all__ = ["Bisection", "halves"]
