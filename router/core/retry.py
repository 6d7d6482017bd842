"""Pure retry policy of the async path: exponential backoff with full jitter and max-event-age decisions.

Nothing here does I/O or reads the clock; callers pass ``now`` and a ``uniform(a, b)`` random source, so
every rule is tested with plain numbers.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass

from router.invocation import Result

Uniform = Callable[[float, float], float]
"""``uniform(a, b)`` -> a float in [a, b]; ``random.uniform`` by default."""


class Action(enum.StrEnum):
    SUCCESS = "success"  # done: on_success record, complete
    RETRY = "retry"  # retry_later(now + delay, attempts)
    FAIL = "fail"  # done: on_failure record with ``condition``, complete


SUCCESS = "Success"
RETRIES_EXHAUSTED = "RetriesExhausted"
EVENT_AGE_EXCEEDED = "EventAgeExceeded"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    delay: float = 0.0  # RETRY: seconds from now
    attempts: int = 0  # attempts to store (RETRY) or attempts made (SUCCESS/FAIL)
    condition: str = SUCCESS  # destination record condition
    throttled: bool = False  # RETRY that did not use up a retry


def backoff_delay(n: int, initial: float, maximum: float, uniform: Uniform = random.uniform) -> float:
    """Full-jitter delay before retry ``n`` (1-based): ``uniform(0, min(maximum, initial * 2**(n-1)))``."""
    if n < 1:
        raise ValueError(f"backoff_delay: n must be at least 1, got {n}")
    cap = min(maximum, initial * 2.0 ** min(n - 1, 64))
    return uniform(0.0, cap)


def throttle_delay(age: float, initial: float, maximum: float, uniform: Uniform = random.uniform) -> float:
    """Full-jitter delay after a throttle or infrastructure error.

    Such retries do not use up an attempt, so the retry count cannot drive the exponent; the event's age
    does instead: the cap is ``min(maximum, max(initial, age))``, which doubles roughly every retry.
    """
    return uniform(0.0, min(maximum, max(initial, age)))


def is_too_old(now: float, enqueued_at: float, max_event_age: float) -> bool:
    """True when an event waited longer than ``max_event_age`` and must not be invoked any more."""
    return now - enqueued_at > max_event_age


def decide(
    result: Result,
    *,
    attempts: int,
    retries: int,
    now: float,
    enqueued_at: float,
    max_event_age: float,
    initial: float,
    maximum: float,
    uniform: Uniform = random.uniform,
) -> Decision:
    """What to do after one attempt of an async event.

    ``attempts`` is the number of attempts made before this one. Throttles (``result.throttle``) retry
    without using up a retry; retryable errors retry while ``attempts + 1 <= retries``; a wait that would
    end after ``enqueued_at + max_event_age`` ends the event now with ``EventAgeExceeded``.
    """
    if result.ok:
        return Decision(Action.SUCCESS, attempts=attempts + 1, condition=SUCCESS)
    if result.throttle:
        made = attempts
        delay = throttle_delay(max(0.0, now - enqueued_at), initial, maximum, uniform)
    elif result.retryable and attempts + 1 <= retries:
        made = attempts + 1
        delay = backoff_delay(made, initial, maximum, uniform)
    else:
        return Decision(Action.FAIL, attempts=attempts + 1, condition=RETRIES_EXHAUSTED)
    if result.retry_after is not None:
        delay = max(delay, result.retry_after)
    if now + delay >= enqueued_at + max_event_age:
        return Decision(Action.FAIL, attempts=attempts + (0 if result.throttle else 1),
                        condition=EVENT_AGE_EXCEEDED)
    return Decision(Action.RETRY, delay=delay, attempts=made, throttled=result.throttle)
