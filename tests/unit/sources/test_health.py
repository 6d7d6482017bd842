"""The shared fault helpers of the polling sources: backoff bounds and the once-a-minute error log."""

from __future__ import annotations

import logging

import pytest

from router.sources.health import RateLimitedLog, backoff_delay


def test_backoff_doubles_up_to_the_cap_with_jitter_of_half_to_whole() -> None:
    assert [backoff_delay(n, 0.5, 30.0, jitter=False) for n in (0, 1, 2, 3, 7, 8, 100)] == [
        0.5, 0.5, 1.0, 2.0, 30.0, 30.0, 30.0]
    for n in (1, 4, 50):
        exact = backoff_delay(n, 0.5, 30.0, jitter=False)
        assert all(exact / 2 <= backoff_delay(n, 0.5, 30.0) <= exact for _ in range(50))


def test_the_same_line_is_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.health")
    errors = RateLimitedLog(logger, interval=3600)
    with caplog.at_level(logging.ERROR, logger="test.health"):
        assert errors.error("queue not found", extra={"route": "r"})
        assert not errors.error("queue not found", extra={"route": "r"})
        assert errors.error("access denied", extra={"route": "r"})
        assert errors.error("queue not found", extra={"route": "r"})  # not the last line any more
    assert [r.getMessage() for r in caplog.records] == ["queue not found", "access denied", "queue not found"]
    assert RateLimitedLog(logger, interval=0).error("x", extra={}) is True
