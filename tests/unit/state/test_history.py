"""The invocation history's SQL (``router.state.history``) through the state store, on SQLite and on
PostgreSQL: batched changes merged into one row per request id, final statuses kept, newest-first paging,
pruning by age and count, and the atomic cancellation of a waiting async event."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from router.state import StateStore
from router.state.history import Change, attempt_json, row_dict, whole_row
from router.state.schema import SCHEMA_VERSION
from tests.stores import StoreFactory, older_sqlite_database


@pytest.fixture
async def store(new_store: StoreFactory) -> StateStore:
    return await new_store()


def queued(rid: str, at: float, function: str = "f") -> Change:
    return Change(rid, function, at, "queued", {"route": "r", "source": "webhook", "started_at": at})


async def test_changes_of_one_invocation_make_one_row_with_its_attempts(store: StateStore) -> None:
    touched = await store.record_history([
        queued("a", 10.0),
        Change("a", "f", 11.0, "running", attempt={"attempt": 1, "started_at": 11.0}),
        Change("a", "f", 12.0, None, update={"error_type": "ValueError", "error_message": "no"},
               attempt={"attempt": 1, "ended_at": 12.0, "error_type": "ValueError"}),
        Change("a", "f", 12.0, "retrying"),
    ])
    assert touched == {"f"}
    await store.record_history([  # a later batch: the second attempt succeeds
        Change("a", "f", 20.0, "running", attempt={"attempt": 2, "started_at": 20.0}),
        Change("a", "f", 21.0, None, update={"error_type": None, "result": b'{"ok":1}'},
               attempt={"attempt": 2, "ended_at": 21.0}),
        Change("a", "f", 21.0, "succeeded", update={"finished_at": 21.0}),
    ])
    row, queue_row = await store.invocation("a", "destination")
    assert queue_row is None
    assert row is not None
    assert (row["status"], row["attempts"], row["route"], row["started_at"]) == ("succeeded", 2, "r", 10.0)
    assert json.loads(row["attempt_log"]) == [
        {"attempt": 1, "started_at": 11.0, "ended_at": 12.0, "error_type": "ValueError"},
        {"attempt": 2, "started_at": 20.0, "ended_at": 21.0},
    ]
    assert row["result"] == b'{"ok":1}'


async def test_a_final_status_is_kept_against_late_changes(store: StateStore) -> None:
    await store.record_history([queued("a", 1.0), Change("a", "f", 2.0, "cancelled")])
    await store.record_history([Change("a", "f", 3.0, "running", attempt={"attempt": 1}), queued("a", 0.5)])
    row, _ = await store.invocation("a", "destination")
    assert row is not None
    assert (row["status"], row["attempts"]) == ("cancelled", 0)


async def test_listing_is_newest_first_filtered_and_paged(store: StateStore) -> None:
    await store.record_history([queued(f"f-{i}", float(i)) for i in range(5)]
                               + [queued("g-0", 2.5, "g"), Change("f-1", "f", 9.0, "failed")])
    page = await store.invocations(function="f", limit=2)
    assert [r["request_id"] for r in page] == ["f-4", "f-3"]
    last = page[-1]
    rest = await store.invocations(function="f", limit=10, before=(last["started_at"], last["request_id"]))
    assert [r["request_id"] for r in rest] == ["f-2", "f-1", "f-0"]
    assert [r["request_id"] for r in await store.invocations(status="failed")] == ["f-1"]
    assert [r["request_id"] for r in await store.invocations(limit=2)] == ["f-4", "f-3"]
    assert [r["request_id"] for r in await store.invocations(function="g")] == ["g-0"]


async def test_pruning_keeps_the_newest_rows_and_drops_old_ones(store: StateStore) -> None:
    await store.record_history([queued(f"f-{i}", float(i)) for i in range(10)]
                               + [queued(f"g-{i}", float(i), "g") for i in range(3)],
                               prune={"f": (0.0, 4)})
    assert [r["request_id"] for r in await store.invocations(function="f")] == ["f-9", "f-8", "f-7", "f-6"]
    assert await store.prune_history({"g": (1.5, 100)}) == 2  # started before 1.5
    assert [r["request_id"] for r in await store.invocations(function="g")] == ["g-2"]


async def test_a_waiting_event_is_cancelled_with_its_row_in_one_transaction(store: StateStore) -> None:
    await store.enqueue(function="f", request_id="wait", payload=b"{}", source="webhook", route="r", now=1.0)
    await store.enqueue(function="f", request_id="busy", payload=b"{}", source="webhook", route="r", now=1.0)
    row, queue_row = await store.invocation("wait", "destination")
    assert row is None
    assert queue_row is not None
    assert queue_row["attempts"] == 0
    assert queue_row["lease_until"] is None
    claimed = await store.claim("f", 10, now=2.0, lease=60.0)
    for ev in claimed:
        if ev.request_id == "wait":
            await store.release(ev.id)

    change = Change("wait", "f", 3.0, "cancelled", {"route": "r", "source": "webhook", "started_at": 1.0})
    assert await store.cancel_queued("wait", now=3.0, skip_source="destination", change=change) == "cancelled"
    row, queue_row = await store.invocation("wait", "destination")
    assert queue_row is None
    assert row is not None
    assert row["status"] == "cancelled"
    busy = Change("busy", "f", 3.0, "cancelled")
    assert await store.cancel_queued("busy", now=3.0, skip_source="destination", change=busy) == "running"
    assert (await store.invocation("busy", "destination"))[0] is None  # nothing written
    assert await store.cancel_queued("gone", now=3.0, skip_source="destination", change=busy) is None
    # Its lease ran out (a crashed replica): waiting again, so it can be cancelled.
    assert await store.cancel_queued("busy", now=100.0, skip_source="destination", change=busy) == "cancelled"
    assert await store.claim("f", 10, now=200.0, lease=60.0) == []


async def test_a_kept_destination_record_is_not_the_event(store: StateStore) -> None:
    await store.enqueue(function="f", request_id="a", payload=b"{}", source="destination", route=None,
                        now=1.0)
    assert (await store.invocation("a", "destination"))[1] is None
    change = Change("a", "f", 2.0, "cancelled")
    assert await store.cancel_queued("a", now=2.0, skip_source="destination", change=change) is None


async def test_version_3_database_migrates_by_opening(tmp_path: Path) -> None:
    engine = await older_sqlite_database(tmp_path, "sqlite:///old.db", drop=["router_invocations"], version=3)
    engine.dispose()
    store = StateStore.from_url("sqlite:///old.db", tmp_path)
    await store.open()
    try:
        await store.record_history([queued("a", 1.0)])
        assert [r["request_id"] for r in await store.invocations()] == ["a"]
    finally:
        await store.close()
    with engine.begin() as conn:
        version = conn.execute(sa.text("SELECT value FROM router_meta WHERE key = 'schema_version'")).scalar()
    engine.dispose()
    assert version == str(SCHEMA_VERSION) == "5"


async def test_a_whole_row_is_written_without_reading_the_stored_one(store: StateStore) -> None:
    await store.record_history([queued("a", 1.0), Change("a", "f", 2.0, None, update={"logs": "old"})])
    # The changes of "a" make the whole row (its first creates it): what is stored is replaced, not read.
    await store.record_history([], rows=[whole_row([
        Change("a", "f", 5.0, "running", {"route": "r2", "source": "webhook", "started_at": 1.0},
               attempt={"attempt": 1, "started_at": 5.0}),
        Change("a", "f", 6.0, "succeeded", update={"finished_at": 6.0}),
    ])])
    row, _ = await store.invocation("a", "destination")
    assert row is not None
    assert (row["status"], row["route"], row["logs"], row["attempts"]) == ("succeeded", "r2", None, 1)
    # Changes (not a whole row): the stored row is read and merged (the route the row was created with stays).
    await store.record_history([queued("b", 1.0), Change("b", "f", 2.0, None, update={"logs": "kept"})])
    await store.record_history([Change("b", "f", 6.0, "succeeded", {"route": "r2"}, {"finished_at": 6.0})])
    row, _ = await store.invocation("b", "destination")
    assert row is not None
    assert (row["status"], row["route"], row["logs"]) == ("succeeded", "r", "kept")


async def test_the_listing_shows_events_waiting_in_the_queue_that_have_no_row(store: StateStore) -> None:
    for rid, at in (("w1", 10.0), ("w2", 30.0), ("gone", 5.0)):
        await store.enqueue(function="f", request_id=rid, payload=b"{}", source="webhook", route="r", now=at)
    await store.enqueue(function="f", request_id="kept", payload=b"{}", source="destination", route=None,
                        now=40.0)  # a kept destination record: not an event
    await store.enqueue(function="g", request_id="other", payload=b"{}", source="webhook", route="s",
                        now=35.0)
    await store.record_history([queued("h1", 20.0), Change("h1", "f", 21.0, "succeeded")])
    await store.record_history([queued("w2", 30.0), Change("w2", "f", 31.0, "retrying",
                                                          attempt={"attempt": 1, "started_at": 31.0})])
    [gone] = await store.claim("f", 1, now=50.0, lease=60.0)  # the oldest: leased (running) until 110
    assert gone.request_id == "gone"

    rows = await store.invocations(function="f", queued_source="destination", now=60.0)
    assert [(r["request_id"], r["status"]) for r in rows] == [
        ("w2", "retrying"), ("h1", "succeeded"), ("w1", "queued"), ("gone", "running")]
    w1 = rows[2]
    assert (w1["route"], w1["source"], w1["started_at"], w1["invocation_type"]) == (
        "r", "webhook", 10.0, "async")
    # paged by the same cursor as the stored rows; filtered by status and route
    page = await store.invocations(function="f", queued_source="destination", now=60.0, limit=2)
    assert [r["request_id"] for r in page] == ["w2", "h1"]
    rest = await store.invocations(function="f", queued_source="destination", now=60.0,
                                   before=(page[-1]["started_at"], page[-1]["request_id"]))
    assert [r["request_id"] for r in rest] == ["w1", "gone"]
    assert [r["request_id"] for r in await store.invocations(status="queued", queued_source="destination",
                                                             now=60.0)] == ["other", "w1"]
    assert [r["request_id"] for r in await store.invocations(status="running", queued_source="destination",
                                                             now=60.0)] == ["gone"]
    assert [r["request_id"] for r in await store.invocations(status="succeeded", queued_source="destination",
                                                             now=60.0)] == ["h1"]
    assert [r["request_id"] for r in await store.invocations(route="s", queued_source="destination",
                                                             now=60.0)] == ["other"]
    # without queued_source: the stored rows only
    assert [r["request_id"] for r in await store.invocations(function="f")] == ["w2", "h1"]


async def test_a_whole_row_does_not_replace_a_final_one(store: StateStore) -> None:
    await store.record_history([queued("a", 1.0), Change("a", "f", 2.0, "cancelled")])
    await store.record_history([], rows=[whole_row([  # e.g. a replica's late write of what it held in memory
        queued("a", 1.0), Change("a", "f", 3.0, "running", attempt={"attempt": 1})])])
    row, _ = await store.invocation("a", "destination")
    assert row is not None
    assert (row["status"], row["attempts"]) == ("cancelled", 0)


async def test_rows_made_whole_beforehand_are_written_as_they_are(store: StateStore) -> None:
    made = whole_row([
        Change("s", "f", 1.0, "succeeded", {"route": "r", "source": "webhook", "invocation_type": "sync"},
               {"finished_at": 1.5, "result": b"1"}, {"attempt": 1, "started_at": 1.0, "ended_at": 1.5})])
    assert row_dict(made)["attempt_log"] == '[{"attempt":1,"started_at":1.0,"ended_at":1.5}]'  # JSON already
    await store.record_history([], rows=[made])
    row, _ = await store.invocation("s", "destination")
    assert row is not None
    assert (row["status"], row["route"], row["attempts"], row["result"]) == ("succeeded", "r", 1, b"1")
    await store.record_history([queued("c", 1.0), Change("c", "f", 2.0, "cancelled")])
    await store.record_history([], rows=[whole_row([queued("c", 1.0)])])  # a final row stays
    row, _ = await store.invocation("c", "destination")
    assert row is not None
    assert row["status"] == "cancelled"


async def test_changes_in_the_same_batch_as_a_whole_row_apply_after_it(store: StateStore) -> None:
    await store.record_history([Change("w", "f", 2.0, "running", attempt={"attempt": 1, "started_at": 2.0})],
                               rows=[whole_row([queued("w", 1.0)])])
    row, _ = await store.invocation("w", "destination")
    assert row is not None
    assert (row["status"], row["attempts"], row["started_at"], row["updated_at"]) == ("running", 1, 1.0, 2.0)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 10_000), st.floats(), st.floats(), st.sampled_from(["success", "error", "timeout"]),
       st.none() | st.text(max_size=20), st.none() | st.text(max_size=40))
def test_one_attempt_s_log_is_the_json_encoder_s_text(attempt: int, started: float, ended: float,
                                                       outcome: str, error_type: str | None,
                                                       error_message: str | None) -> None:
    entry: dict[str, object] = {"attempt": attempt, "started_at": started, "ended_at": ended,
                                "outcome": outcome}
    if error_type is not None or error_message is not None:
        entry["error_type"], entry["error_message"] = error_type, error_message
    made = attempt_json(attempt, started, ended, outcome, error_type, error_message)
    assert made == json.JSONEncoder(separators=(",", ":")).encode([entry])
