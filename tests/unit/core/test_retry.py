"""The pure retry policy, with plain numbers."""

from __future__ import annotations

import pytest

from router.core.retry import (
    Action,
    backoff_delay,
    decide,
    is_too_old,
    throttle_delay,
)
from tests.unit.core.helpers import fail, ok, throttled


def upper(a: float, b: float) -> float:
    """A 'random' source that always picks the top of the range."""
    return b


def lower(a: float, b: float) -> float:
    return a


def test_backoff_is_exponential_and_capped() -> None:
    assert [backoff_delay(n, 1.0, 5.0, upper) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_backoff_full_jitter_draws_from_zero() -> None:
    seen: list[tuple[float, float]] = []

    def record(a: float, b: float) -> float:
        seen.append((a, b))
        return (a + b) / 2

    assert backoff_delay(3, 0.5, 300.0, record) == 1.0
    assert seen == [(0.0, 2.0)]


def test_backoff_huge_n_does_not_overflow() -> None:
    assert backoff_delay(10_000, 1.0, 300.0, upper) == 300.0


def test_backoff_rejects_n_below_one() -> None:
    with pytest.raises(ValueError, match="n must be at least 1, got 0"):
        backoff_delay(0, 1.0, 5.0)


def test_throttle_delay_grows_with_age() -> None:
    assert throttle_delay(0.0, 1.0, 300.0, upper) == 1.0
    assert throttle_delay(40.0, 1.0, 300.0, upper) == 40.0
    assert throttle_delay(4000.0, 1.0, 300.0, upper) == 300.0


def test_is_too_old() -> None:
    assert not is_too_old(now=160.0, enqueued_at=100.0, max_event_age=60.0)
    assert is_too_old(now=160.5, enqueued_at=100.0, max_event_age=60.0)


BASE = {"now": 1000.0, "enqueued_at": 990.0, "max_event_age": 3600.0, "initial": 1.0, "maximum": 60.0,
        "uniform": upper}


def test_success() -> None:
    d = decide(ok(), attempts=2, retries=2, **BASE)  # type: ignore[arg-type]
    assert (d.action, d.attempts, d.condition) == (Action.SUCCESS, 3, "Success")


@pytest.mark.parametrize(("attempts", "action", "stored", "delay"), [
    (0, Action.RETRY, 1, 1.0),  # first attempt failed: retry 1 after up to 1s
    (1, Action.RETRY, 2, 2.0),  # second failed: retry 2 after up to 2s
    (2, Action.FAIL, 3, 0.0),  # third failed: retries (2) exhausted
])
def test_error_uses_retries(attempts: int, action: Action, stored: int, delay: float) -> None:
    d = decide(fail(), attempts=attempts, retries=2, **BASE)  # type: ignore[arg-type]
    assert (d.action, d.attempts, d.delay) == (action, stored, delay)
    if action is Action.FAIL:
        assert d.condition == "RetriesExhausted"


def test_not_retryable_fails_at_once() -> None:
    d = decide(fail(retryable=False), attempts=0, retries=2, **BASE)  # type: ignore[arg-type]
    assert (d.action, d.attempts, d.condition) == (Action.FAIL, 1, "RetriesExhausted")


def test_zero_retries() -> None:
    d = decide(fail(), attempts=0, retries=0, **BASE)  # type: ignore[arg-type]
    assert d.action is Action.FAIL


def test_throttle_does_not_use_a_retry() -> None:
    d = decide(throttled(), attempts=2, retries=2, **BASE)  # type: ignore[arg-type]
    assert (d.action, d.attempts, d.throttled) == (Action.RETRY, 2, True)
    assert d.delay == 10.0  # the event is 10 s old: cap max(initial, age)


def test_retry_after_is_honoured() -> None:
    r = fail(retry_after=30.0)
    d = decide(r, attempts=0, retries=2, **{**BASE, "uniform": lower})  # type: ignore[arg-type]
    assert (d.action, d.delay) == (Action.RETRY, 30.0)
    # the larger of the two wins
    d = decide(fail(retry_after=0.5), attempts=1, retries=2, **BASE)  # type: ignore[arg-type]
    assert d.delay == 2.0


def test_wait_past_max_event_age_ends_the_event() -> None:
    base = {**BASE, "enqueued_at": 1000.0 - 3590.0}  # 10 s left
    d = decide(fail(retry_after=20.0), attempts=0, retries=2, **base)  # type: ignore[arg-type]
    assert (d.action, d.condition, d.attempts) == (Action.FAIL, "EventAgeExceeded", 1)
    d = decide(throttled(), attempts=1, retries=2, **base)  # type: ignore[arg-type]
    assert (d.action, d.condition, d.attempts) == (Action.FAIL, "EventAgeExceeded", 1)
    d = decide(fail(retry_after=5.0), attempts=0, retries=2, **base)  # type: ignore[arg-type]
    assert d.action is Action.RETRY
