"""bisect_on_error's halving (``router.sources.batch_bisect``), shared by the sqs, amqp and stream sources:
pure, checked exhaustively on small batches."""

from __future__ import annotations

import itertools
import math

from router.sources.batch_bisect import Bisection, halves
from router.sources.stream.batch import bisect as stream_bisect


def run(n: int, poison: set[int], *, enabled: bool = True) -> tuple[list[list[int]], list[int], list[int]]:
    """Drive a Bisection as the sources do: a part fails as a whole when it holds a poison item.
    Returns (every part invoked, the items acked, the items sent down the failure path)."""
    parts = Bisection(list(range(n)), enabled=enabled)
    invoked: list[list[int]] = []
    acked: list[int] = []
    failed: list[int] = []
    while (part := parts.next()) is not None:
        invoked.append(part)
        if not poison & set(part):
            acked.extend(part)
        elif not parts.failed(part):
            failed.extend(part)
    return invoked, acked, failed


def test_halves_keep_order_and_the_first_is_the_larger() -> None:
    assert halves([0, 1, 2, 3, 4]) == ([0, 1, 2], [3, 4])
    assert halves([0, 1]) == ([0], [1])
    assert halves([0]) == ([0], [])
    assert stream_bisect is halves  # the stream engine splits with the same function


def test_one_poison_in_ten_only_it_fails_the_nine_others_acked_once() -> None:
    invoked, acked, failed = run(10, {6})
    assert failed == [6]
    assert sorted(acked) == [0, 1, 2, 3, 4, 5, 7, 8, 9]  # each once, none with the poison one
    assert invoked == [list(range(10)), [0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [5, 6, 7], [5, 6], [5], [6], [7],
                       [8, 9]]


def test_every_poison_subset_of_small_batches() -> None:
    """For n up to 8 and every set of poison items: each good item is acked exactly once and never fails
    with a poison one; each poison item fails alone, exactly once; at most 2n - 1 invocations, and one
    poison item costs at most 2 ceil(log2 n) + 1."""
    for n in range(1, 9):
        for k in range(n + 1):
            for poison in map(set, itertools.combinations(range(n), k)):
                invoked, acked, failed = run(n, poison)
                assert sorted(acked) == sorted(set(range(n)) - poison), (n, poison)
                assert sorted(failed) == sorted(poison), (n, poison)
                assert len(invoked) <= 2 * n - 1, (n, poison)
                if len(poison) == 1:
                    assert len(invoked) <= 2 * math.ceil(math.log2(n)) + 1, (n, poison)


def test_a_batch_where_all_fail_takes_exactly_2n_minus_1_invocations() -> None:
    for n in (1, 2, 3, 10, 100, 1000):
        invoked, acked, failed = run(n, set(range(n)))
        assert len(invoked) == 2 * n - 1
        assert acked == []
        assert failed == list(range(n))  # in order


def test_disabled_the_whole_batch_takes_the_failure_path_after_one_invocation() -> None:
    invoked, acked, failed = run(10, {3}, enabled=False)
    assert invoked == [list(range(10))]
    assert acked == []
    assert failed == list(range(10))


def test_splits_counted_and_rest_taken_in_order() -> None:
    parts = Bisection(list(range(6)), enabled=True)
    whole = parts.next()
    assert whole == list(range(6))
    assert parts.failed(whole)
    assert parts.failed(parts.next() or [])  # [0, 1, 2] -> [0, 1], [2]
    assert parts.splits == 2
    assert parts.rest() == [0, 1, 2, 3, 4, 5]
    assert parts.next() is None
    assert Bisection([], enabled=True).next() is None
