"""Contract tests of the state store, run against SQLite and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from router.errors import StateStoreError
from router.state import QueuedEvent, StateStore
from router.state.url import engine_url
from tests.stores import SQLITE_URL, StoreFactory

ROOT = Path(__file__).resolve().parents[3]
FAR_FUTURE = 1e12



@pytest.fixture
async def store(new_store: StoreFactory) -> StateStore:
    return await new_store()


async def put(store: StateStore, function: str = "f", n: int = 1, *, now: float = 100.0,
              prefix: str = "req") -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(n)]
    for request_id in ids:
        await store.enqueue(function=function, request_id=request_id, payload=b'{"n": 1}',
                            source="webhook", route="hooks", now=now)
    return ids


async def everything(new_store: StoreFactory, function: str = "f") -> list[QueuedEvent]:
    """Every claimable event of ``function``, seen through a fresh store instance."""
    other = await new_store()
    return await other.claim(function, 1_000_000, FAR_FUTURE, 1.0)


async def test_enqueue_claim_complete(store: StateStore) -> None:
    await store.enqueue(function="f", request_id="r1", payload=b'{"a": 1}', source="webhook",
                        route="hooks", now=100.0)
    await store.enqueue(function="f", request_id="r2", payload=b"[]", source="invoke_api",
                        route=None, now=101.0)
    await store.enqueue(function="g", request_id="r3", payload=b"{}", source="schedule",
                        route="nightly", now=99.0)

    claimed = await store.claim("f", 10, now=200.0, lease=30.0)

    assert [(e.request_id, e.payload, e.source, e.route, e.attempts, e.enqueued_at, e.available_at)
            for e in claimed] == [
        ("r1", b'{"a": 1}', "webhook", "hooks", 0, 100.0, 100.0),
        ("r2", b"[]", "invoke_api", None, 0, 101.0, 101.0),
    ]
    assert all(isinstance(e.id, int) and e.function == "f" for e in claimed)
    await store.complete(claimed[0].id)
    await store.release(claimed[1].id)
    again = await store.claim("f", 10, now=200.0, lease=30.0)
    assert [e.request_id for e in again] == ["r2"]
    await store.complete(again[0].id)
    assert await store.claim("f", 10, now=FAR_FUTURE, lease=30.0) == []
    assert [e.request_id for e in await store.claim("g", 10, now=200.0, lease=30.0)] == ["r3"]


async def test_claim_takes_oldest_available_first_up_to_limit(store: StateStore) -> None:
    await put(store, n=1, now=105.0, prefix="late")
    await put(store, n=2, now=100.0, prefix="early")

    assert await store.claim("f", 5, now=99.0, lease=30.0) == []  # none available yet
    first = await store.claim("f", 2, now=110.0, lease=30.0)
    assert [e.request_id for e in first] == ["early-0", "early-1"]
    assert [e.request_id for e in await store.claim("f", 2, now=110.0, lease=30.0)] == ["late-0"]
    assert await store.claim("f", 0, now=110.0, lease=30.0) == []


async def test_retry_later_delays_the_event_and_records_attempts(store: StateStore) -> None:
    await put(store, now=100.0)
    [event] = await store.claim("f", 1, now=100.0, lease=30.0)

    await store.retry_later(event.id, available_at=160.0, attempts=1)

    assert await store.next_available_at("f") == 160.0
    assert await store.claim("f", 1, now=159.0, lease=30.0) == []
    [retried] = await store.claim("f", 1, now=160.0, lease=30.0)
    assert (retried.id, retried.attempts, retried.enqueued_at, retried.available_at) == (
        event.id, 1, 100.0, 160.0)


async def test_lease_hides_event_from_other_claims_until_it_expires(store: StateStore) -> None:
    await put(store, now=100.0)
    [event] = await store.claim("f", 1, now=100.0, lease=30.0)

    assert await store.claim("f", 1, now=129.9, lease=30.0) == []
    assert await store.next_available_at("f") == 130.0  # when the lease runs out
    [again] = await store.claim("f", 1, now=130.0, lease=30.0)  # lease expired: claimable at once
    assert again.id == event.id
    assert again.attempts == 0


async def test_release_hands_back_without_counting_an_attempt(store: StateStore) -> None:
    await put(store, now=100.0)
    [event] = await store.claim("f", 1, now=100.0, lease=300.0)
    await store.retry_later(event.id, available_at=100.0, attempts=2)
    [event] = await store.claim("f", 1, now=100.0, lease=300.0)

    await store.release(event.id)

    [again] = await store.claim("f", 1, now=100.0, lease=300.0)
    assert (again.id, again.attempts) == (event.id, 2)


async def test_release_all_leases_makes_a_crashed_process_events_claimable(
        new_store: StoreFactory) -> None:
    crashed = await new_store()
    await put(crashed, n=5, now=100.0)
    assert len(await crashed.claim("f", 3, now=100.0, lease=3600.0)) == 3

    restarted = await new_store()
    assert len(await restarted.claim("f", 10, now=101.0, lease=3600.0)) == 2  # only the unleased ones
    assert await restarted.release_all_leases() == 5
    assert await restarted.release_all_leases() == 0
    assert len(await restarted.claim("f", 10, now=101.0, lease=3600.0)) == 5


async def test_depth_counts_unleased_events_per_function(store: StateStore) -> None:
    assert await store.depth() == {}
    await put(store, "f", n=3)
    await put(store, "g", n=2)
    await store.claim("f", 1, now=FAR_FUTURE, lease=30.0)

    assert await store.depth() == {"f": 2, "g": 2}


async def test_next_available_at_is_when_the_next_event_is_claimable(store: StateStore) -> None:
    assert await store.next_available_at("f") is None
    await put(store, "f", now=120.0, prefix="a")
    await put(store, "f", now=110.0, prefix="b")
    await put(store, "g", now=50.0)

    assert await store.next_available_at("f") == 110.0
    await store.claim("f", 1, now=115.0, lease=30.0)  # leases b until 145
    assert await store.next_available_at("f") == 120.0
    await store.claim("f", 1, now=125.0, lease=10.0)  # leases a until 135
    assert await store.next_available_at("f") == 135.0


async def test_concurrent_claims_from_two_instances_never_return_the_same_event(
        new_store: StoreFactory) -> None:
    one, two = await new_store(), await new_store()
    expected = set(await put(one, n=300, now=100.0))
    claimed: list[tuple[int, str]] = []

    async def claimer(store: StateStore) -> None:
        while batch := await store.claim("f", 7, now=100.0, lease=3600.0):
            claimed.extend((e.id, e.request_id) for e in batch)

    async with asyncio.timeout(60):
        await asyncio.gather(*(claimer(s) for s in (one, two, one, two, one, two)))

    ids = [event_id for event_id, _ in claimed]
    assert len(ids) == len(set(ids)), "an event was claimed twice"
    assert {request_id for _, request_id in claimed} == expected
    assert await one.claim("f", 10, now=100.0, lease=3600.0) == []


async def test_concurrent_enqueues_are_all_persisted_by_group_commit(new_store: StoreFactory,
                                                                     request: pytest.FixtureRequest
                                                                     ) -> None:
    store = await new_store()
    n = 2000
    started = time.perf_counter()
    async with asyncio.timeout(60):
        await asyncio.gather(*(
            store.enqueue(function="f", request_id=f"r{i}", payload=b'{"i": %d}' % i,
                          source="webhook", route=None, now=100.0)
            for i in range(n)
        ))
    rate = n / (time.perf_counter() - started)
    print(f"\n{request.node.callspec.id}: {n} concurrent enqueues at {rate:,.0f} events/s")

    # Durable when enqueue returned: another instance (own connections) sees every event, intact.
    seen = await everything(new_store)
    assert sorted(e.request_id for e in seen) == sorted(f"r{i}" for i in range(n))
    assert all(e.payload == b'{"i": %d}' % int(e.request_id[1:]) for e in seen)


async def test_enqueue_is_committed_when_it_returns(new_store: StoreFactory) -> None:
    writer, reader = await new_store(), await new_store()
    for i in range(20):
        await writer.enqueue(function="f", request_id=f"r{i}", payload=b"{}", source="webhook",
                             route=None, now=100.0)
        [event] = await reader.claim("f", 10, now=100.0, lease=60.0)
        assert event.request_id == f"r{i}"


@pytest.mark.parametrize("grace", [None, 0.0])
async def test_close_commits_pending_enqueues_or_fails_their_callers(
        new_store: StoreFactory, grace: float | None) -> None:
    store = await new_store()
    tasks = [
        asyncio.create_task(store.enqueue(function="f", request_id=f"r{i}", payload=b"{}",
                                          source="webhook", route=None, now=100.0))
        for i in range(3000)  # more than the writer's queue holds: some wait for room
    ]
    await asyncio.sleep(0)  # let every task queue its event (or wait for room)

    async with asyncio.timeout(60):  # nobody is left waiting
        await store.close(grace=grace)
        results = await asyncio.gather(*tasks, return_exceptions=True)

    assert all(r is None or isinstance(r, StateStoreError) for r in results), results
    accepted = {f"r{i}" for i, r in enumerate(results) if r is None}
    stored = {e.request_id for e in await everything(new_store)}
    assert accepted <= stored
    if grace is None:
        assert len(accepted) == len(tasks)
    else:
        failed = [r for r in results if isinstance(r, StateStoreError)]
        assert failed, "a zero grace should fail some callers"
        assert "closed before the event was committed" in str(failed[0])


async def test_cancelled_enqueue_callers_never_leave_half_written_events(new_store: StoreFactory) -> None:
    store = await new_store()
    tasks = [
        asyncio.create_task(store.enqueue(function="f", request_id=f"r{i}", payload=b'{"i": %d}' % i,
                                          source="webhook", route=None, now=100.0))
        for i in range(200)
    ]
    await asyncio.sleep(0)
    for task in tasks[::2]:
        task.cancel()
    async with asyncio.timeout(60):
        results = await asyncio.gather(*tasks, return_exceptions=True)
    await store.close()

    assert all(r is None for r in results[1::2])
    seen = {e.request_id: e.payload for e in await everything(new_store)}
    assert {f"r{i}" for i in range(1, 200, 2)} <= seen.keys()
    assert all(payload == b'{"i": %d}' % int(rid[1:]) for rid, payload in seen.items())


async def test_closed_store_refuses_work(store: StateStore) -> None:
    assert await store.ping() is True
    await store.close()

    assert await store.ping() is False
    with pytest.raises(StateStoreError, match=r"^state .*: the store is not open; the event was not acc"):
        await put(store)
    with pytest.raises(StateStoreError, match=r": claim: the store is not open"):
        await store.claim("f", 1, now=1.0, lease=1.0)


async def test_open_refuses_a_database_written_by_a_newer_router(new_store: StoreFactory) -> None:
    first = await new_store()
    from router.state.schema import meta

    # What a future version would leave behind.
    await first._transact("test", lambda conn: conn.execute(meta.update().values(value="999")))

    with pytest.raises(StateStoreError, match=r"schema version 999 is newer than this router understands"):
        await new_store()


# --- URLs and open errors (no server needed) ----------------------------------------------------------


def test_urls_map_to_async_drivers(tmp_path: Path) -> None:
    assert engine_url("sqlite:///data/state.db", tmp_path).database == str(tmp_path / "data/state.db")
    assert engine_url("sqlite:////var/lib/router/state.db", tmp_path).database == "/var/lib/router/state.db"
    assert engine_url("sqlite:///x.db", tmp_path).drivername == "sqlite+aiosqlite"
    for url in ("postgresql://u:p@db:5433/router", "postgres://u:p@db:5433/router",
                "postgresql+asyncpg://u:p@db:5433/router"):
        mapped = engine_url(url, tmp_path)
        assert (mapped.drivername, mapped.host, mapped.port, mapped.database, mapped.password) == (
            "postgresql+asyncpg", "db", 5433, "router", "p")


@pytest.mark.parametrize(("url", "message"), [
    ("sqlite://", r"^state: SQLite needs a file path, got sqlite://; use sqlite:///relative"),
    ("sqlite:///:memory:", r"^state: SQLite needs a file path"),
    ("mysql://u:p@db/x", r"^state: unsupported database, got mysql://\.\.\.; use sqlite:///PATH"),
    ("not a url", r"^state: not a database URL, got not a url://\.\.\."),
])
def test_unusable_urls_are_refused(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(StateStoreError, match=message):
        StateStore.from_url(url, tmp_path)


async def test_unreachable_postgres_fails_open_without_showing_the_password(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = StateStore.from_url(f"postgresql://router:s3cret@127.0.0.1:{port}/db", tmp_path)

    with pytest.raises(StateStoreError) as info:
        await store.open()

    message = str(info.value)
    assert message.startswith(f"state postgresql://router:***@127.0.0.1:{port}/db: cannot open (")
    assert message.endswith("; check that PostgreSQL is running and the URL's host, port, user and "
                            "database are right")
    assert "s3cret" not in message
    await store.close()


async def test_sqlite_directory_that_cannot_be_created_fails_open(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    store = StateStore.from_url("sqlite:///file/state/router.db", tmp_path)

    with pytest.raises(StateStoreError, match=r"^state sqlite:///file/state/router.db: cannot create dir"):
        await store.open()


# --- durability across SIGKILL (SQLite: WAL + synchronous=NORMAL) -------------------------------------

_ENQUEUER = """
import asyncio, sys
from pathlib import Path
from router.state import StateStore

async def main():
    store = StateStore.from_url("sqlite:///state/router.db", Path(sys.argv[1]))
    await store.open()
    async def one(i):
        await store.enqueue(function="f", request_id=f"r{i}", payload=b"{}", source="webhook",
                            route=None, now=100.0)
        sys.stdout.write(f"r{i}\\n")
        sys.stdout.flush()
    i = 0
    while True:  # until killed
        await asyncio.gather(*(one(i + k) for k in range(50)))
        i += 50

asyncio.run(main())
"""


async def test_sqlite_acknowledged_enqueues_survive_sigkill(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _ENQUEUER, str(tmp_path), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    acknowledged: set[str] = set()
    try:
        async with asyncio.timeout(60):
            while len(acknowledged) < 1000:
                line = await proc.stdout.readline()
                assert line, "the enqueuing process ended early"
                acknowledged.add(line.decode().strip())
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    async with asyncio.timeout(10):  # ack lines already written when the kill landed
        acknowledged.update(line.decode().strip() for line in (await proc.stdout.read()).splitlines())

    store = StateStore.from_url(SQLITE_URL, tmp_path)
    await store.open()
    try:
        stored = {e.request_id for e in await store.claim("f", 1_000_000, FAR_FUTURE, 1.0)}
    finally:
        await store.close()
    assert acknowledged <= stored


async def test_the_index_of_leased_events_is_partial_on_both_dialects(new_store: StoreFactory) -> None:
    """Only the leased rows are indexed: on PostgreSQL the index's WHERE is given when the tables are
    created (not where the index is defined, which would load the PostgreSQL dialect on SQLite too)."""
    import sqlalchemy as sa

    store = await new_store()

    def definition(conn: sa.Connection) -> str:
        if conn.dialect.name == "sqlite":
            query = "SELECT sql FROM sqlite_master WHERE name = 'router_async_events_leased'"
            return str(conn.execute(sa.text(query)).scalar_one())
        query = ("SELECT indexdef FROM pg_indexes WHERE indexname = 'router_async_events_leased' "
                 "AND schemaname = :schema")
        return str(conn.execute(sa.text(query), {"schema": store._schema}).scalar_one())

    sql = await store._transact("read the index", definition)
    assert "WHERE" in sql.upper(), sql
    assert "lease_until IS NOT NULL" in sql.replace("(", "").replace(")", ""), sql


def test_a_store_on_sqlite_does_not_load_the_postgresql_dialect(tmp_path: Path) -> None:
    """~2 MB of a router's idle memory (bench scenario 6): opening and using a SQLite store, as the
    router does, leaves SQLAlchemy's PostgreSQL dialect unimported."""
    import subprocess

    script = """
import asyncio, sys
from pathlib import Path
from router.state import StateStore

async def main():
    store = StateStore.from_url("sqlite:///state.db", Path(sys.argv[1]))
    await store.open()
    await store.enqueue(function="f", request_id="r1", payload=b"{}", source="test", route=None, now=1.0)
    await store.save_checkpoint("route", "shard", "1", now=1.0)  # upserts of each kind
    await store.ensure_leases("route", ["shard"])
    await store.claim_fire("schedule", 60.0, now=61.0, keep=3600.0)
    await store.close()

asyncio.run(main())
loaded = sorted(m for m in sys.modules if m.startswith("sqlalchemy.dialects.postgresql"))
print(loaded)
"""
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
