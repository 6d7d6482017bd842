"""Failed events in the state store (``router.state.failures``), against SQLite and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from router.state import StateStore
from router.state.failures import FailureFilter
from router.state.schema import SCHEMA_VERSION
from tests.stores import StoreFactory, older_sqlite_database


def _row(function: str = "resize", *, failed_at: float = 100.0, condition: str = "RetriesExhausted",
         route: str | None = "uploads", request_id: str = "req-1") -> dict[str, Any]:
    return {
        "function": function, "route": route, "source": "webhook", "request_id": request_id,
        "condition": condition, "record": json.dumps({"requestContext": {"condition": condition}}),
        "payload": b'{"n": 1}', "failed_at": failed_at, "attempts": 3, "error_type": "handler",
        "error_message": "Exception: boom", "redriven_as": None, "redriven_at": None,
    }


async def test_keep_list_get_filters_and_pages(new_store: StoreFactory) -> None:
    store = await new_store()
    a = await store.keep_failure(_row("resize", failed_at=100.0))
    b = await store.keep_failure(_row("resize", failed_at=200.0, condition="EventAgeExceeded"))
    c = await store.keep_failure(_row("thumbs", failed_at=300.0, route=None))
    everything = await store.list_failures(FailureFilter(), 100)
    assert [e.id for e in everything] == [c, b, a]  # newest first
    assert everything[0].payload == b""  # a listing is light
    assert everything[0].record == ""
    assert [e.id for e in await store.list_failures(FailureFilter(function="resize"), 100)] == [b, a]
    assert [e.id for e in await store.list_failures(FailureFilter(condition="EventAgeExceeded"), 100)] == [b]
    assert [e.id for e in await store.list_failures(FailureFilter(route="uploads"), 100)] == [b, a]
    assert [e.id for e in await store.list_failures(FailureFilter(since=150.0, until=300.0), 100)] == [b]
    page = await store.list_failures(FailureFilter(), 2)
    assert [e.id for e in page] == [c, b]
    assert [e.id for e in await store.list_failures(FailureFilter(before=page[-1].id), 2)] == [a]
    other = await new_store()  # another replica sees what was kept
    whole = await other.get_failure(b)
    assert whole is not None
    assert whole.payload == b'{"n": 1}'
    assert json.loads(whole.record)["requestContext"]["condition"] == "EventAgeExceeded"
    assert (whole.attempts, whole.error_type, whole.error_message) == (3, "handler", "Exception: boom")
    assert await other.get_failure(c + 1000) is None


async def test_claim_is_once_even_when_concurrent(new_store: StoreFactory) -> None:
    first, second = await new_store(), await new_store()
    ids = [await first.keep_failure(_row(request_id=f"r{i}")) for i in range(5)]
    f = FailureFilter(function="resize")
    got = await asyncio.gather(first.claim_failures(f, 5, [f"a{i}" for i in range(5)]),
                               second.claim_failures(f, 5, [f"b{i}" for i in range(5)]))
    claimed = [e.id for batch in got for e in batch]
    assert sorted(claimed) == ids  # each exactly once, across both replicas
    assert await first.claim_failures(f, 5, ["c"] * 5) == []  # redriving again does nothing
    event = got[0][0] if got[0] else got[1][0]
    assert event.payload == b'{"n": 1}'  # claimed whole: what the redrive submits
    assert event.redriven_as is not None
    await first.failure_redriven(event.id, event.redriven_as, now=500.0)
    seen = await first.get_failure(event.id)
    assert seen is not None
    assert (seen.redriven_as, seen.redriven_at) == (event.redriven_as, 500.0)


async def test_the_event_a_redrive_came_from(new_store: StoreFactory) -> None:
    store = await new_store()
    a = await store.keep_failure(_row(request_id="old-a"))
    await store.keep_failure(_row(request_id="old-b"))
    await store.claim_failures(FailureFilter(ids=(a,)), 1, ["new-a"])
    other = await new_store()  # another replica answers the status API
    event = await other.failure_redriven_as("new-a")
    assert event is not None
    assert (event.id, event.request_id, event.redriven_as) == (a, "old-a", "new-a")
    assert await other.failure_redriven_as("old-a") is None  # not a redrive
    assert await other.failure_redriven_as("nope") is None
    await store.purge_failures(FailureFilter(ids=(a,)))
    assert await other.failure_redriven_as("new-a") is None  # its event is gone


async def test_existing_database_gets_the_redriven_as_index(tmp_path: Path) -> None:
    engine = await older_sqlite_database(tmp_path, "sqlite:///old.db", drop=[], version=SCHEMA_VERSION)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX router_failed_events_redriven_as"))
    store = StateStore.from_url("sqlite:///old.db", tmp_path)
    await store.open()
    await store.close()
    with engine.begin() as conn:
        indexes = {i["name"] for i in sa.inspect(conn).get_indexes("router_failed_events")}
    engine.dispose()
    assert "router_failed_events_redriven_as" in indexes


async def test_unclaim_hands_back_only_what_was_not_accepted(new_store: StoreFactory) -> None:
    store = await new_store()
    a = await store.keep_failure(_row())
    b = await store.keep_failure(_row())
    await store.claim_failures(FailureFilter(ids=(a, b)), 2, ["x", "y"])
    await store.failure_redriven(a, "x", now=1.0)
    assert await store.unclaim_failures([(a, "x"), (b, "y")]) == 1
    again = await store.claim_failures(FailureFilter(ids=(a, b)), 2, ["z", "w"])
    assert [(e.id, e.redriven_as) for e in again] == [(b, "z")]


async def test_purge_and_prune(new_store: StoreFactory) -> None:
    store = await new_store()
    ids = [await store.keep_failure(_row(failed_at=float(t))) for t in range(10)]
    assert await store.purge_failures(FailureFilter(ids=(ids[0], ids[1]))) == 2
    assert await store.purge_failures(FailureFilter(function="nope")) == 0
    # Older than 4.0: ids[2..3] (2 rows); then at most 3 kept: the newest 3 of the 6 left.
    assert await store.prune_failures(older_than=4.0, keep=3) == 5
    assert [e.id for e in await store.list_failures(FailureFilter(), 100)] == ids[:6:-1]
    assert await store.purge_failures(FailureFilter()) == 3


async def test_version_3_database_migrates_by_opening(tmp_path: Path) -> None:
    engine = await older_sqlite_database(tmp_path, "sqlite:///old.db", drop=["router_failed_events"],
                                         version=3)
    store = StateStore.from_url("sqlite:///old.db", tmp_path)
    await store.open()
    try:
        assert await store.keep_failure(_row()) >= 1
    finally:
        await store.close()
    with engine.begin() as conn:
        version = conn.execute(sa.text("SELECT value FROM router_meta WHERE key = 'schema_version'")).scalar()
    engine.dispose()
    assert version == str(SCHEMA_VERSION) == "5"
