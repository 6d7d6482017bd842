"""A ``rate: 1s`` schedule on three ``router run`` replicas sharing one PostgreSQL database (a fresh one for
the test): each tick fires exactly once among them for 30 ticks (claimed in the store, no leader), and after
all three were stopped for 5 s, the ticks missed meanwhile fire late, once each, within ``catch_up``."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.e2e.recorder_server import RecorderServer
from tests.fault import conftest as fault
from tests.router_process import RouterFactory
from tests.waiting import until_sync

pg_database = fault.pg_database  # a database of the test's own, dropped afterwards

TICKS = 30
DOWNTIME = 5.0


def _config(replica: int, database: str, recorder: RecorderServer) -> str:
    return f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 5s}}
        state: "{database}"
        functions:
          tick:
            http: {{url: "{recorder.url}/tick", headers: {{X-Replica: r{replica}}}}}
            timeout: 5s
        routes:
          - {{name: tick, source: {{type: schedule, rate: 1s, catch_up: 30s}}, function: tick}}
    """


def _epoch(tick: str) -> int:
    """A Scheduled Event's ``time`` (its nominal tick, whole seconds UTC) as epoch seconds."""
    return int(datetime.strptime(tick, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


def _ticks(recorder: RecorderServer) -> Counter[int]:
    return Counter(_epoch(d.id) for d in recorder.deliveries("tick"))


def _assert_each_tick_once(counts: Counter[int], first: int, last: int) -> None:
    twice = {t: n for t, n in counts.items() if n > 1}
    missing = [t for t in range(first, last + 1) if t not in counts]
    assert not twice, f"ticks fired more than once: {twice}"
    assert not missing, f"ticks never fired between {first} and {last}: {missing}"


@pytest.mark.postgres
@pytest.mark.timeout(240)
def test_three_replicas_fire_each_tick_once_and_catch_up_after_all_stopped(
    pg_database: str, router_factory: RouterFactory, tmp_path: Path,
) -> None:
    recorder = RecorderServer().start()
    try:
        configs = [_config(i, pg_database, recorder) for i in range(3)]
        replicas = [router_factory(c, name=f"r{i}.yaml") for i, c in enumerate(configs)]
        all_up = int(time.time()) + 1  # from this tick on, all three replicas compete for every tick
        until_sync(lambda: len([t for t in _ticks(recorder) if t >= all_up]) >= TICKS, deadline=TICKS + 30,
                   interval=0.2, what=f"{TICKS} ticks fired while all three replicas run")
        for rp in replicas:
            assert rp.stop() == 0
        stopped_at = time.time()
        counts = _ticks(recorder)
        last_before = max(counts)
        _assert_each_tick_once(counts, all_up, last_before)
        winners = Counter(d.replica for d in recorder.deliveries("tick") if _epoch(d.id) >= all_up)
        # The stop is the fault: every replica stays down this long (a deadline, not a timing assertion).
        until_sync(lambda: time.time() >= stopped_at + DOWNTIME, deadline=DOWNTIME + 5, interval=0.1,
                   what=f"{DOWNTIME:g}s with no replica running")

        restarted = [router_factory(c, name=f"r{i}.yaml") for i, c in enumerate(configs)]
        back_at = int(time.time())
        # The ticks missed while none ran fire late (catch_up: 30s), then the schedule goes on.
        until_sync(lambda: max(_ticks(recorder)) >= back_at + 3, deadline=30, interval=0.2,
                   what="the schedule to fire again after the restart")
        for rp in restarted:
            assert rp.stop() == 0
        counts = _ticks(recorder)
        missed = [t for t in range(last_before + 1, back_at) if t in counts]
        assert len(missed) >= DOWNTIME  # the downtime's ticks, fired late by the restarted replicas
        _assert_each_tick_once(counts, all_up, max(counts))
        late = [r for rp in restarted for r in rp.log_records()
                if "missed ticks late" in str(r.get("message"))]
        assert late, "no replica said it fired missed ticks late"
        print(f"{len(counts)} ticks, each fired once; winners while all ran {dict(winners)}; "
              f"{len(missed)} ticks of the downtime fired late")
    finally:
        recorder.close()
