"""The open-file limit and descriptor faults: the cap fits the limit, and EMFILE
is logged once per interval with a count instead of a traceback per failed accept."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
from typing import Any

import pytest

from router.http.nofile import FaultLog, connection_cap, raise_nofile_limit
from router.metrics import Metrics


def test_connection_cap_is_half_the_open_file_limit() -> None:
    assert connection_cap(10_000, 1024) == 512
    assert connection_cap(10_000, 1_048_576) == 10_000
    assert connection_cap(300, 1024) == 300
    assert connection_cap(10_000, 1) == 1
    assert connection_cap(10_000, resource.RLIM_INFINITY) == 10_000


def test_raise_nofile_limit_reports_before_now_and_hard() -> None:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        was, now, hard = raise_nofile_limit()
        assert (was, hard) == before
        assert now == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert hard == resource.RLIM_INFINITY or now == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _emfile() -> dict[str, Any]:
    return {"message": "socket.accept() out of system resource",
            "exception": OSError(errno.EMFILE, "Too many open files")}


async def test_descriptor_faults_are_logged_once_per_interval_with_a_count(
        caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    clock = Clock()
    handler = FaultLog(metrics, interval=10.0, clock=clock)
    loop = asyncio.get_running_loop()
    with caplog.at_level(logging.ERROR, logger="router.http"):
        for _ in range(1000):
            handler(loop, _emfile())
        clock.now += 10.0
        for _ in range(5):
            handler(loop, _emfile())
    lines = [r for r in caplog.records if r.name == "router.http"]
    assert len(lines) == 2
    assert all(r.exc_info is None for r in lines)  # no traceback
    first, second = (r.getMessage() for r in lines)
    assert first.startswith("socket.accept() out of system resource: Too many open files (EMFILE), 1 time(s)")
    assert "1000 time(s)" in second  # the 999 not logged, and the one that is
    assert "raise it (ulimit -n, systemd LimitNOFILE=" in first
    assert metrics.registry.get_sample_value("router_http_accept_errors_total", {"error": "EMFILE"}) == 1005


async def test_other_loop_errors_go_to_the_default_handler(caplog: pytest.LogCaptureFixture) -> None:
    handler = FaultLog(Metrics())
    loop = asyncio.get_running_loop()
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        handler(loop, {"message": "something else", "exception": ValueError("boom")})
    assert any("something else" in r.getMessage() for r in caplog.records if r.name == "asyncio")
