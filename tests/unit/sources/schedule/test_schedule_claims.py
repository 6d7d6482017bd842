"""Schedule ticks claimed in the real state store (SQLite and PostgreSQL): once among replicas, caught up
after downtime within catch_up, fired anyway when the store is away."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from router.metrics import Metrics
from router.sources.schedule.source import ScheduleSource
from tests.clocks import WallClock
from tests.stores import StoreFactory
from tests.unit.sources.schedule.support import AWS, Dispatcher, dispatched, routes
from tests.waiting import until


def _times(d: Dispatcher) -> list[str]:
    return [json.loads(inv.payload)["time"] for inv in d.invoked]


async def test_two_replicas_fire_each_tick_once(new_store: StoreFactory) -> None:
    rs = routes({"name": "every-second", "source": {"type": "schedule", "rate": "1s"}})
    a, b = Dispatcher(), Dispatcher()
    first = ScheduleSource(rs, a, Metrics(), AWS, claims=await new_store())
    second = ScheduleSource(rs, b, Metrics(), AWS, claims=await new_store())
    await first.start()
    await second.start()
    try:
        # Polling: fires land on either replica.
        await until(lambda: len(set(_times(a) + _times(b))) >= 5, "5 distinct ticks", deadline=15)
    finally:
        await first.close()
        await second.close()
    times = _times(a) + _times(b)
    assert len(set(times)) >= 5
    assert sorted(times) == sorted(set(times)), f"a tick fired twice: {sorted(times)}"


async def test_ticks_missed_while_down_fire_late_within_catch_up(new_store: StoreFactory) -> None:
    store = await new_store()
    rs = routes({"name": "hourly", "source": {"type": "schedule", "rate": "1h", "catch_up": "150m"}})
    last = datetime(2026, 1, 1, 0, 0, tzinfo=UTC).timestamp()
    assert await store.claim_fire("hourly", last, now=last, keep=3600)
    now = datetime(2026, 1, 1, 10, 0, 5, tzinfo=UTC).timestamp()  # ticks 01:00 .. 10:00 were missed
    d, m = Dispatcher(), Metrics()
    s = ScheduleSource(rs, d, m, AWS, claims=store, clock=WallClock(lambda: now))
    await s.start()
    try:
        await dispatched(lambda: len(d.invoked) >= 3, d)
    finally:
        await s.close()
    assert _times(d) == ["2026-01-01T08:00:00Z", "2026-01-01T09:00:00Z", "2026-01-01T10:00:00Z"]
    assert m.registry.get_sample_value("router_schedule_runs_total",
                                       {"route": "hourly", "outcome": "missed"}) == 7
    assert await store.last_fire("hourly") == datetime(2026, 1, 1, 10, 0, tzinfo=UTC).timestamp()
    # A second router starting now finds nothing left to catch up: every late tick was claimed.
    d2 = Dispatcher()
    s2 = ScheduleSource(rs, d2, Metrics(), AWS, claims=store, clock=WallClock(lambda: now + 1))
    await s2.start()
    await s2.close()
    assert d2.invoked == []
    assert not await store.claim_fire("hourly", datetime(2026, 1, 1, 9, tzinfo=UTC).timestamp(),
                                      now=now, keep=3600)


async def test_a_route_that_never_fired_has_nothing_to_catch_up(new_store: StoreFactory) -> None:
    rs = routes({"name": "fresh", "source": {"type": "schedule", "rate": "1h", "catch_up": "24h"}})
    d, m = Dispatcher(), Metrics()
    s = ScheduleSource(rs, d, m, AWS, claims=await new_store())
    await s.start()
    await s.close()
    assert d.invoked == []


async def test_ticks_fire_when_the_store_cannot_be_asked(new_store: StoreFactory) -> None:
    store = await new_store()
    await store.close()  # every claim now fails
    rs = routes({"name": "r", "source": {"type": "schedule", "rate": "1s"}})
    d, m = Dispatcher(), Metrics()
    s = ScheduleSource(rs, d, m, AWS, claims=store)
    await s.start()
    try:
        await dispatched(lambda: len(d.invoked) >= 1, d, deadline=10)
    finally:
        await s.close()
    assert (m.registry.get_sample_value("router_source_errors_total", {"route": "r", "type": "schedule"})
            or 0) >= 1


def test_rate_ticks_are_anchored_at_the_epoch() -> None:
    rs = routes({"name": "r", "source": {"type": "schedule", "rate": "5m"}})
    s = ScheduleSource(rs, Dispatcher(), Metrics(), AWS)
    after = datetime(2026, 3, 1, 12, 1, 30, tzinfo=UTC).timestamp()
    ticks = s.missed_ticks("r", after, after + 600)
    assert [t.strftime("%H:%M:%S") for t in ticks] == ["12:05:00", "12:10:00"]
