"""The route lifecycle shared by the polling sources: backoff bounds, the once-a-minute error log, the
route's health in /readyz and metrics, pauses that stop cuts short, and the stop skeleton."""

from __future__ import annotations

import asyncio
import logging

import pytest

from router.config.models import RouteConfig
from router.metrics import Metrics
from router.readiness import Readiness
from router.sources.lifecycle import (
    RateLimitedLog,
    RouteHealth,
    StopGate,
    backoff_delay,
    pause_unless,
    until_set,
)

ROUTE = RouteConfig.model_validate({"name": "r", "function": "fn",
                                    "source": {"type": "sqs", "queue_url": "http://q/1/q"}})


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


async def test_route_health_flags_counts_and_logs_faults_once(caplog: pytest.LogCaptureFixture) -> None:
    metrics, readiness = Metrics(), Readiness()
    logger = logging.getLogger("test.health.route")
    health = RouteHealth(ROUTE, "sqs", service="queue", connecting="connecting to the queue", metrics=metrics,
                         readiness=readiness, logger=logger, gate=StopGate(), backoff=(0.01, 0.02))
    readiness.set_started()
    assert await readiness.reasons() == ["route r: connecting to the queue"]
    caplog.set_level(logging.INFO, logger="test.health.route")
    health.fault("queue not found (X); check it", "config")
    health.fault("queue not found (X); check it", "config")
    assert health.failures == 2
    assert not health.ok
    assert await readiness.reasons() == ["route r: queue not found (X); check it"]
    assert metrics.registry.get_sample_value("router_source_errors_total", {"route": "r", "type": "sqs"}) == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == ["route 'r': queue not found (X); check it"]
    assert errors[0].__dict__["error_type"] == "config"
    assert errors[0].__dict__["route"] == "r"
    assert 0.005 <= health.backoff() <= 0.02
    health.healthy()
    assert health.ok
    assert health.failures == 0
    assert await readiness.reasons() == []
    assert caplog.records[-1].getMessage() == "route 'r': the queue answers again"
    health.error("route 'r': cannot save a checkpoint", "connection")  # counted, still ready
    assert await readiness.reasons() == []
    assert metrics.registry.get_sample_value("router_source_errors_total", {"route": "r", "type": "sqs"}) == 3


async def test_a_pause_is_cut_short_by_stop_and_until_set_cancels_what_lost() -> None:
    gate = StopGate()
    assert await gate.pause(0) is True
    pausing = asyncio.create_task(gate.pause(60))
    await asyncio.sleep(0)
    await gate.stop(1, cancel_all=lambda: None, timed_out=lambda: None)  # not running: returns at once
    assert await asyncio.wait_for(pausing, 5) is False
    assert await pause_unless(gate.stopped, 60, gate.clock) is False

    event = asyncio.Event()
    won = await until_set(event, asyncio.sleep(0, result="x"))
    assert won.result() == "x"
    event.set()
    lost = await until_set(event, asyncio.sleep(60))
    assert lost.cancelled()


async def test_stop_cancels_the_idle_at_once_and_the_rest_after_the_timeout() -> None:
    gate = StopGate()
    calls: list[str] = []
    release = asyncio.Event()

    async def run() -> None:
        with gate.run():
            try:
                await release.wait()
            except asyncio.CancelledError:
                calls.append("cancelled")

    task = asyncio.create_task(run())
    await asyncio.sleep(0)
    assert gate.running
    await gate.stop(0.05, cancel_idle=lambda: calls.append("idle"),
                    cancel_all=lambda: (calls.append("all"), task.cancel()),
                    timed_out=lambda: calls.append("timed out"))
    assert gate.stopping
    assert gate.stopped.is_set()
    assert calls == ["idle", "timed out", "all", "cancelled"]
    await task
