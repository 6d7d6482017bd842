"""The schedule source with a real AsyncIOScheduler: rate fires, event shape, misses, errors, close."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from router.config.models import RouteConfig
from router.errors import ConfigError
from router.invocation import Result
from router.metrics import Metrics
from router.sources.schedule.source import ScheduleSource, build_trigger, scheduled_event
from tests.clocks import WallClock
from tests.unit.sources.schedule.support import AWS, Dispatcher, dispatched, routes
from tests.waiting import until


def runs(m: Metrics, route: str, outcome: str) -> float:
    labels = {"route": route, "outcome": outcome}
    return m.registry.get_sample_value("router_schedule_runs_total", labels) or 0


@pytest.fixture
async def sources() -> AsyncIterator[list[ScheduleSource]]:
    made: list[ScheduleSource] = []
    yield made
    for s in made:
        await s.close()


async def started(sources: list[ScheduleSource], rs: list[RouteConfig], d: Dispatcher, m: Metrics,
                  **kw: Any) -> ScheduleSource:
    s = ScheduleSource(rs, d, m, AWS, **kw)
    sources.append(s)
    await s.start()
    return s


async def test_rate_fires_repeatedly_with_the_eventbridge_event(sources: list[ScheduleSource]) -> None:
    d, m = Dispatcher(), Metrics()
    await started(sources, routes({"name": "tick", "source": {"type": "schedule", "rate": 1}}), d, m)
    await dispatched(lambda: len(d.invoked) >= 2, d)
    first, second = (json.loads(i.payload) for i in d.invoked[:2])
    assert first["id"] != second["id"]
    for event in (first, second):
        assert set(event) == {"version", "id", "detail-type", "source", "account", "time", "region",
                              "resources", "detail"}
        assert event["version"] == "0"
        assert event["detail-type"] == "Scheduled Event"
        assert event["source"] == "aws.events"
        assert event["detail"] == {}
        assert event["account"] == "123456789012"
        assert event["region"] == "eu-central-1"
        assert event["resources"] == ["arn:aws:events:eu-central-1:123456789012:rule/tick"]
        datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%SZ")
    inv = d.invoked[0]
    assert (inv.function, inv.source, inv.route, inv.invocation_type) == ("job", "schedule", "tick", "sync")
    assert (m.registry.get_sample_value("router_schedule_runs_total", {"route": "tick", "outcome": "fired"})
            or 0) >= 1
    assert (m.registry.get_sample_value("router_schedule_lag_seconds_count", {"route": "tick"}) or 0) >= 2
    events = m.registry.get_sample_value("router_source_events_total", {"route": "tick", "type": "schedule"})
    assert (events or 0) >= 2


async def test_constant_input_and_async_route(sources: list[ScheduleSource]) -> None:
    d, m = Dispatcher(), Metrics()
    rs = routes({"name": "nightly", "source": {"type": "schedule", "rate": "500ms"},
                 "input": {"task": "cleanup"}, "invocation": "async"})
    await started(sources, rs, d, m)
    await dispatched(lambda: len(d.submitted) >= 1, d)
    assert json.loads(d.submitted[0].payload) == {"task": "cleanup"}
    assert d.submitted[0].invocation_type == "async"
    assert d.invoked == []


async def test_overlapping_tick_is_missed_not_stacked(sources: list[ScheduleSource]) -> None:
    d, m = Dispatcher(), Metrics()
    d.hold = asyncio.Event()
    await started(sources, routes({"name": "slow", "source": {"type": "schedule", "rate": "300ms"}}), d, m)
    await until(lambda: runs(m, "slow", "missed") >= 1, "a missed run")
    assert len(d.invoked) == 1  # the held run is the only one started
    d.hold.set()
    await dispatched(lambda: len(d.invoked) >= 2, d)


async def test_failures_count_as_error(sources: list[ScheduleSource]) -> None:
    d, m = Dispatcher(), Metrics()
    d.result = lambda inv: Result.error("ValueError", "boom")
    d.fail_submit = True
    rs = routes({"name": "bad-sync", "source": {"type": "schedule", "rate": "300ms"}},
                {"name": "bad-async", "source": {"type": "schedule", "rate": "300ms"}, "invocation": "async"})
    await started(sources, rs, d, m)
    for name in ("bad-sync", "bad-async"):
        await until(lambda name=name: runs(m, name, "error") >= 1, "an error run")
    labels = {"route": "bad-sync", "outcome": "fired"}
    fired = m.registry.get_sample_value("router_schedule_runs_total", labels)
    assert fired is None


async def test_close_cancels_runs_past_the_timeout_and_leaves_no_task(sources: list[ScheduleSource]) -> None:
    d, m = Dispatcher(), Metrics()
    d.hold = asyncio.Event()  # never set: the run hangs
    s = await started(sources, routes({"name": "hang", "source": {"type": "schedule", "rate": "200ms"}}),
                      d, m, close_timeout=0.1)
    await dispatched(lambda: len(d.invoked) >= 1, d)
    before = {t for t in asyncio.all_tasks() if t.get_name() == "hang"}
    assert before
    await s.close()
    assert all(t.done() for t in before)
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "hang" and not t.done()]
    await s.close()  # idempotent


async def test_close_waits_for_a_running_fire(sources: list[ScheduleSource]) -> None:
    d, m = Dispatcher(), Metrics()
    d.hold = asyncio.Event()
    s = await started(sources, routes({"name": "finish", "source": {"type": "schedule", "rate": "200ms"}}),
                      d, m, close_timeout=30)
    await dispatched(lambda: len(d.invoked) >= 1, d)
    closing = asyncio.create_task(s.close())
    await asyncio.sleep(0)
    assert not closing.done()
    d.hold.set()
    async with asyncio.timeout(10):
        await closing
    assert (m.registry.get_sample_value("router_schedule_runs_total", {"route": "finish", "outcome": "fired"})
            == 1)


async def test_run_fires_until_stop_lets_the_running_fire_finish() -> None:
    """The Poller contract the app runs every source by: ``run`` in a task, ``stop(timeout)``."""
    d, m = Dispatcher(), Metrics()
    d.hold = asyncio.Event()
    s = ScheduleSource(routes({"name": "polled", "source": {"type": "schedule", "rate": "200ms"}}), d, m, AWS)
    task = asyncio.create_task(s.run())
    await dispatched(lambda: len(d.invoked) >= 1, d)
    stopping = asyncio.create_task(s.stop(30))
    await asyncio.sleep(0.05)
    assert not stopping.done()
    assert not task.done()
    d.hold.set()
    async with asyncio.timeout(10):
        await stopping
    assert task.done()
    await task
    fired = m.registry.get_sample_value("router_schedule_runs_total", {"route": "polled", "outcome": "fired"})
    assert fired == 1
    await s.stop(1)  # idempotent


async def test_stop_before_run_ends_it_at_once() -> None:
    s = ScheduleSource(routes({"name": "never", "source": {"type": "schedule", "rate": "1s"}}), Dispatcher(),
                       Metrics(), AWS)
    await s.stop(1)
    async with asyncio.timeout(5):
        await s.run()


# --- triggers and the event, with plain datetimes -------------------------------------------------


def trigger_of(source: dict[str, Any]) -> Any:
    (route,) = routes({"name": "r", "source": {"type": "schedule", **source}})
    return build_trigger(route.source)  # type: ignore[arg-type]


def next_fires(trigger: Any, start: datetime, n: int = 3) -> list[datetime]:
    out, prev, now = [], None, start
    for _ in range(n):
        fire = trigger.get_next_fire_time(prev, now)
        out.append(fire)
        prev, now = fire, fire
    return out


def test_five_field_cron_with_timezone() -> None:
    trigger = trigger_of({"cron": "0 3 * * *", "timezone": "Europe/Berlin"})
    assert isinstance(trigger, CronTrigger)
    fires = next_fires(trigger, datetime(2026, 1, 1, 0, 0, tzinfo=UTC))
    assert [f.astimezone(UTC).hour for f in fires] == [2, 2, 2]  # 03:00 CET is 02:00 UTC in winter
    summer = next_fires(trigger, datetime(2026, 7, 1, tzinfo=UTC), 1)[0]
    assert summer.astimezone(UTC).hour == 1


def test_six_field_cron_has_seconds_first() -> None:
    fires = next_fires(trigger_of({"cron": "*/15 * * * * *"}), datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC), 4)
    assert [f.second for f in fires] == [15, 30, 45, 0]


def test_cron_weekdays_are_crontab_numbers() -> None:
    fires = next_fires(trigger_of({"cron": "0 9 * * 1-5"}), datetime(2026, 1, 3, tzinfo=UTC), 5)  # a Saturday
    assert [f.strftime("%a") for f in fires] == ["Mon", "Tue", "Wed", "Thu", "Fri"]
    sunday = next_fires(trigger_of({"cron": "0 9 * * 0"}), datetime(2026, 1, 1, tzinfo=UTC), 1)[0]
    assert sunday.strftime("%a") == "Sun"


def test_rate_is_an_interval() -> None:
    trigger = trigger_of({"rate": "5m"})
    assert isinstance(trigger, IntervalTrigger)
    assert trigger.interval.total_seconds() == 300


@pytest.mark.parametrize(
    ("source", "match"),
    [({"cron": "0 3 * *"}, r"route 'r': source: .*4 fields"),
     ({"cron": "0 25 * * *"}, r"route 'r': source: .*0 25"),
     ({"cron": "0 3 * * *", "timezone": "Europe/Berln"},
      r"route 'r': source: unknown time zone 'Europe/Berln'")],
)
def test_bad_schedules_are_config_errors(source: dict[str, Any], match: str) -> None:
    rs = routes({"name": "r", "source": {"type": "schedule", **source}})
    with pytest.raises(ConfigError, match=match):
        ScheduleSource(rs, Dispatcher(), Metrics(), AWS)


def test_scheduled_event_time_is_the_nominal_time_in_utc() -> None:
    from zoneinfo import ZoneInfo

    nominal = datetime(2026, 1, 1, 4, 0, 0, 250_000, tzinfo=ZoneInfo("Europe/Berlin"))
    event = scheduled_event("nightly", nominal, AWS)
    assert event["time"] == "2026-01-01T03:00:00Z"
    assert event["resources"] == ["arn:aws:events:eu-central-1:123456789012:rule/nightly"]


async def test_event_time_and_lag_come_from_the_nominal_fire_time() -> None:
    from apscheduler.events import EVENT_JOB_SUBMITTED, JobSubmissionEvent

    nominal = datetime(2026, 1, 1, 3, 0, 0, tzinfo=UTC)
    d, m = Dispatcher(), Metrics()
    s = ScheduleSource(routes({"name": "n", "source": {"type": "schedule", "cron": "0 3 * * *"}}), d, m, AWS,
                       clock=WallClock(lambda: nominal.timestamp() + 0.25))
    s._on_event(JobSubmissionEvent(EVENT_JOB_SUBMITTED, "n", "default", [nominal]))
    await s._fire("n")
    assert json.loads(d.invoked[0].payload)["time"] == "2026-01-01T03:00:00Z"
    assert m.registry.get_sample_value("router_schedule_lag_seconds_sum", {"route": "n"}) == 0.25
