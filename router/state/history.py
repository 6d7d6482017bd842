"""Invocation history as SQL transactions: one row per request id in ``router_invocations``, changed by
batches of ``Change`` (merged into the stored row in Python, written back in the same transaction), read
by id or newest first, pruned by age and count per function; and the cancellation of an async event
still waiting in the state store's queue, with its history row, in one transaction.

``StateStore`` runs these transactions; the recorder that batches the changes is ``router.core.history``.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect

from router import compact_json
from router.state.schema import async_events, invocations

QUEUED, RUNNING, RETRYING = "queued", "running", "retrying"
SUCCEEDED, FAILED, DROPPED, CANCELLED = "succeeded", "failed", "dropped", "cancelled"
STATUSES = (QUEUED, RUNNING, RETRYING, SUCCEEDED, FAILED, DROPPED, CANCELLED)
FINAL = frozenset({SUCCEEDED, FAILED, DROPPED, CANCELLED})
"""Statuses a row keeps: later changes (a replica's late flush) do not move it again."""

_t = invocations
_q = async_events
_COLUMNS = [c.name for c in _t.columns]
_READ_CHUNK = 500  # request ids per SELECT ... IN
_to_json = compact_json.dumps


@dataclass(slots=True)
class Change:
    """One change of an invocation's row, recorded in memory and written in a batch.

    ``create``: columns of a row not stored yet (ignored for a stored one, except those it lacks);
    ``update``: columns overwritten; ``status``: the new status (``queued`` only creates);
    ``attempt``: merged into the ``attempt_log`` entry with the same ``attempt`` number (appended when new).
    """

    request_id: str
    function: str
    at: float
    status: str | None = None
    create: dict[str, Any] = field(default_factory=dict)
    update: dict[str, Any] = field(default_factory=dict)
    attempt: dict[str, Any] | None = None


def new_row(change: Change) -> dict[str, Any]:
    row: dict[str, Any] = {
        "request_id": change.request_id, "function": change.function, "route": None, "source": "",
        "invocation_type": "async", "status": QUEUED, "attempts": 0, "attempt_log": [],
        "started_at": change.at, "updated_at": change.at, "finished_at": None, "duration": None,
        "error_type": None, "error_message": None, "logs": None, "payload": None,
        "payload_truncated": False, "result": None, "result_truncated": False,
    }
    row.update(change.create)
    return row


def merge(row: dict[str, Any] | None, change: Change) -> dict[str, Any]:
    """``row`` (None: not stored yet) with ``change`` applied; a row in a final status is kept as it is.
    The result's ``attempt_log`` is a list (``write`` stores it as JSON)."""
    if row is None:
        row = new_row(change)
    else:
        if row["status"] in FINAL:
            return row
        row = dict(row)
        for key, value in change.create.items():
            if row.get(key) is None:
                row[key] = value
    row.update(change.update)
    if change.status is not None and change.status != QUEUED:
        row["status"] = change.status
    if change.attempt is not None:
        log = attempt_log(row)
        number = change.attempt["attempt"]
        for entry in log:
            if entry.get("attempt") == number:
                entry.update(change.attempt)
                break
        else:
            log.append(dict(change.attempt))
        row["attempt_log"] = log
        row["attempts"] = max(int(row["attempts"]), int(number))
    row["updated_at"] = max(float(row["updated_at"]), change.at)
    return row


def attempt_log(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The row's attempts: a list, whether read from the store (JSON text) or merged already."""
    log = row["attempt_log"]
    if isinstance(log, list):
        return log
    parsed: list[dict[str, Any]] = json.loads(log or "[]")
    return parsed


_SELECT_MANY = sa.select(_t).where(_t.c.request_id.in_(sa.bindparam("p_ids", expanding=True)))
_SELECT_ONE = sa.select(_t).where(_t.c.request_id == sa.bindparam("p_id"))
_QUEUED = (
    sa.select(_q.c.function, _q.c.route, _q.c.source, _q.c.attempts, _q.c.enqueued_at, _q.c.available_at,
              _q.c.lease_until)
    .where(_q.c.request_id == sa.bindparam("p_id"), _q.c.source != sa.bindparam("p_skip"))
    .limit(1)
)
_CANCEL = sa.delete(_q).where(
    _q.c.request_id == sa.bindparam("p_id"), _q.c.source != sa.bindparam("p_skip"),
    sa.or_(_q.c.lease_until.is_(None), _q.c.lease_until <= sa.bindparam("p_now")),
)


def _rows(result: Iterable[Any]) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in result]


Row = tuple[Any, ...]
"""A whole row's values in ``COLUMNS`` order, ``attempt_log`` as JSON text: ready to write. A tuple of
plain values, so that rows held in memory until they are written give the garbage collector nothing to
trace (rows of dicts, held for a flush interval at a few thousand a second, set off collections that
cost a saturated router ~10 % of its throughput; measured)."""

COLUMNS = tuple(_COLUMNS)
if COLUMNS != ("request_id", "function", "route", "source", "invocation_type", "status", "attempts",
               "attempt_log", "started_at", "updated_at", "finished_at", "duration", "error_type",
               "error_message", "logs", "payload", "payload_truncated", "result", "result_truncated"):
    raise AssertionError("router_invocations' columns changed: update sync_row's order")  # pragma: no cover


def sync_row(request_id: str, function: str, route: str | None, source: str, status: str, attempt: int,
             outcome: str, started: float, ended: float, duration: float, error_type: str | None,
             error_message: str | None, logs: str | None, payload: bytes | None, payload_truncated: bool,
             result: bytes, result_truncated: bool) -> Row:
    """The whole row of a sync invocation (one attempt, ended), made directly: the fast path of
    ``whole_row`` for the invocation the router runs most."""
    return (request_id, function, route, source, "sync", status, attempt,
            attempt_json(attempt, started, ended, outcome, error_type, error_message),
            started, ended, ended, duration, error_type, error_message, logs, payload, payload_truncated,
            result, result_truncated)


def attempt_json(attempt: int, started: float, ended: float, outcome: str, error_type: str | None = None,
                 error_message: str | None = None) -> str:
    """The ``attempt_log`` of one attempt, as ``whole_row`` writes it (``outcome``: plain ASCII)."""
    if error_type is None and error_message is None and math.isfinite(started) and math.isfinite(ended):
        # the JSON encoder's own text for these (floats as repr), without making a dict and a list
        return (f'[{{"attempt":{int(attempt)},"started_at":{started!r},"ended_at":{ended!r},'
                f'"outcome":"{outcome}"}}]')
    entry: dict[str, Any] = {"attempt": attempt, "started_at": started, "ended_at": ended, "outcome": outcome}
    if error_type is not None or error_message is not None:
        entry["error_type"], entry["error_message"] = error_type, error_message
    return _to_json([entry])


def row_dict(row: Row) -> dict[str, Any]:
    """A ``Row`` as the column -> value mapping reads give."""
    return dict(zip(COLUMNS, row, strict=True))


def whole_row(changes: Sequence[Change]) -> Row:
    """The row ``changes`` of one invocation make when the first creates it (nothing stored is read),
    ready to write (``write``'s ``rows``): pure, so the recorder makes it where it likes."""
    row: dict[str, Any] | None = None
    for change in changes:
        row = merge(row, change)
    assert row is not None
    if isinstance(row["attempt_log"], list):
        row["attempt_log"] = _to_json(row["attempt_log"])
    return tuple(row[name] for name in COLUMNS)


def write(conn: sa.Connection, changes: Sequence[Change], rows: Sequence[Row] = ()) -> set[str]:
    """Write ``rows`` (whole rows, ``whole_row``/``sync_row``: nothing stored is read for them) and apply
    ``changes`` in order to their rows (read, merged, written back; after the whole row of their
    invocation when ``rows`` has it); the functions touched."""
    made = {r[0] for r in rows}
    ids = [rid for rid in dict.fromkeys(c.request_id for c in changes) if rid not in made]
    stored: dict[str, dict[str, Any]] = {}
    for i in range(0, len(ids), _READ_CHUNK):
        for row in _rows(conn.execute(_SELECT_MANY, {"p_ids": ids[i:i + _READ_CHUNK]})):
            stored[row["request_id"]] = row
    changed = {c.request_id for c in changes}
    merged = {r[0]: row_dict(r) for r in rows if r[0] in changed}  # changes that came after a whole row
    for change in changes:
        rid = change.request_id
        merged[rid] = merge(merged.get(rid, stored.get(rid)), change)
    for row in merged.values():
        if isinstance(row["attempt_log"], list):
            row["attempt_log"] = _to_json(row["attempt_log"])
    values = [r for r in rows if r[0] not in merged]
    values += [tuple(row[name] for name in COLUMNS) for row in merged.values()]
    if values:
        if conn.dialect.name == "sqlite":
            _sqlite_upsert(conn, values)
        else:
            _postgresql_upsert(conn, values)
    return {r[1] for r in values}


SQLITE_ROWS = 100
"""Rows per SQLite statement (19 variables a row; SQLite allows 32,766): binding them holds the GIL, so
a statement of many rows is a long stall for a busy event loop, and one per row a forced switch of it
at every row (executemany; measured)."""


def _upsert_sql(table: str, values: str) -> str:
    """``INSERT ... VALUES values ON CONFLICT`` replacing every column of a row not in a final status."""
    updates = ", ".join(f"{name} = excluded.{name}" for name in _COLUMNS if name != "request_id")
    final = ", ".join(f"'{status}'" for status in sorted(FINAL))
    return (f"INSERT INTO {table} AS t ({', '.join(_COLUMNS)}) VALUES {values} "
            f"ON CONFLICT (request_id) DO UPDATE SET {updates} WHERE t.status NOT IN ({final})")


_SQLITE_GROUP = "(" + ", ".join("?" * len(_COLUMNS)) + ")"
"""One row's parameters in a SQLite upsert's VALUES."""


@functools.lru_cache(maxsize=8)
def sqlite_upsert_sql(rows: int) -> str:
    """The SQLite upsert of ``rows`` whole rows in one statement (``?`` parameters, row after row)."""
    return _upsert_sql(_t.name, ", ".join([_SQLITE_GROUP] * rows))


def _sqlite_upsert(conn: sa.Connection, rows: list[Row]) -> None:
    """The rows in one multi-row statement per ``SQLITE_ROWS``, not one statement per row: Python's
    sqlite3 lets go of the GIL around every statement step, and on a busy router each of those hand-overs
    costs the event loop thread a forced switch (measured: ~100 us of the loop's CPU per row written with
    executemany)."""
    for i in range(0, len(rows), SQLITE_ROWS):
        chunk = rows[i:i + SQLITE_ROWS]
        params = tuple(itertools.chain.from_iterable(chunk))
        conn.exec_driver_sql(sqlite_upsert_sql(len(chunk)), params)


@functools.lru_cache(maxsize=8)
def _postgresql_upsert_sql(table: str) -> str:
    return _upsert_sql(table, "(" + ", ".join(f"${i}" for i in range(1, len(_COLUMNS) + 1)) + ")")


def _postgresql_upsert(conn: sa.Connection, rows: list[Row]) -> None:
    """The rows as asyncpg's executemany of one prepared upsert, their tuples passed as they are: through
    a compiled insert statement every row became a dict that SQLAlchemy turned back into
    positional values, on the event loop (measured: ~3 % of a busy router's loop with history on)."""
    schema = (conn.get_execution_options().get("schema_translate_map") or {}).get(None)
    quote = conn.dialect.identifier_preparer
    table = quote.quote(_t.name) if schema is None else f"{quote.quote_schema(schema)}.{quote.quote(_t.name)}"
    conn.exec_driver_sql(_postgresql_upsert_sql(table), rows)


def get(conn: sa.Connection, request_id: str) -> dict[str, Any] | None:
    """The stored row of ``request_id``, or None."""
    rows = _rows(conn.execute(_SELECT_ONE, {"p_id": request_id}))
    return rows[0] if rows else None


def queued(conn: sa.Connection, request_id: str, skip_source: str) -> dict[str, Any] | None:
    """The state store queue's row of the async event ``request_id`` (not its kept destination record,
    whose source is ``skip_source``), or None when it is not (or no longer) there."""
    rows = _rows(conn.execute(_QUEUED, {"p_id": request_id, "p_skip": skip_source}))
    return rows[0] if rows else None


def lookup(conn: sa.Connection, request_id: str, skip_source: str
           ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The history row and the queue row of ``request_id`` (either may be None), read together."""
    return get(conn, request_id), queued(conn, request_id, skip_source)


def cancel_queued(conn: sa.Connection, request_id: str, *, now: float, skip_source: str,
                  change: Change) -> str | None:
    """Delete the async event ``request_id`` from the queue while no worker holds it, and apply
    ``change`` (its cancellation) to its history row, in this one transaction. ``"cancelled"``, or
    ``"running"`` when a worker holds it now, or None when it is not in the queue."""
    if queued(conn, request_id, skip_source) is None:
        return None
    if conn.execute(_CANCEL, {"p_id": request_id, "p_skip": skip_source, "p_now": now}).rowcount == 0:
        return RUNNING
    write(conn, [change])
    return CANCELLED


def mark(conn: sa.Connection, change: Change) -> dict[str, Any]:
    """Apply one change now (not batched); the row as it is after it."""
    write(conn, [change])
    row = get(conn, change.request_id)
    assert row is not None
    return row


def recent(conn: sa.Connection, *, function: str | None, route: str | None, status: str | None,
           limit: int, before: tuple[float, str] | None, queued_source: str | None = None,
           now: float = 0.0) -> list[dict[str, Any]]:
    """Rows newest first (by ``started_at``, then request id), filtered; ``before``: the cursor of the
    last row of the previous page. ``queued_source`` (the source of the queue's kept destination
    records): also the async events waiting in the state store's queue that have no row yet (their row
    is written once they run), with the status the queue gives them at ``now``."""
    query = sa.select(_t)
    if function is not None:
        query = query.where(_t.c.function == function)
    if route is not None:
        query = query.where(_t.c.route == route)
    if status is not None:
        query = query.where(_t.c.status == status)
    if before is not None:
        at, rid = before
        query = query.where(sa.or_(_t.c.started_at < at,
                                   sa.and_(_t.c.started_at == at, _t.c.request_id < rid)))
    query = query.order_by(_t.c.started_at.desc(), _t.c.request_id.desc()).limit(limit)
    rows = _rows(conn.execute(query))
    if queued_source is None or status not in (None, QUEUED, RUNNING, RETRYING):
        return rows
    waiting = _waiting(conn, function=function, route=route, status=status, limit=limit, before=before,
                       skip_source=queued_source, now=now)
    if not waiting:
        return rows
    both = sorted([*rows, *waiting], key=lambda r: (r["started_at"], r["request_id"]), reverse=True)
    return both[:limit]


def _waiting(conn: sa.Connection, *, function: str | None, route: str | None, status: str | None,
             limit: int, before: tuple[float, str] | None, skip_source: str, now: float
             ) -> list[dict[str, Any]]:
    """The queue's events without a history row, as history rows, newest first (``recent``)."""
    leased = sa.and_(_q.c.lease_until.is_not(None), _q.c.lease_until > now)
    query = (
        sa.select(_q.c.function, _q.c.request_id, _q.c.route, _q.c.source, _q.c.attempts, _q.c.enqueued_at,
                  _q.c.lease_until)
        .where(_q.c.source != skip_source,
               ~sa.exists().where(_t.c.request_id == _q.c.request_id))
    )
    if function is not None:
        query = query.where(_q.c.function == function)
    if route is not None:
        query = query.where(_q.c.route == route)
    if status == RUNNING:
        query = query.where(leased)
    elif status == QUEUED:
        query = query.where(~leased, _q.c.attempts == 0)
    elif status == RETRYING:
        query = query.where(~leased, _q.c.attempts > 0)
    if before is not None:
        at, rid = before
        query = query.where(sa.or_(_q.c.enqueued_at < at,
                                   sa.and_(_q.c.enqueued_at == at, _q.c.request_id < rid)))
    query = query.order_by(_q.c.enqueued_at.desc(), _q.c.request_id.desc()).limit(limit)
    out = []
    for q in _rows(conn.execute(query)):
        row = new_row(Change(q["request_id"], q["function"], q["enqueued_at"], QUEUED, {
            "route": q["route"], "source": q["source"], "invocation_type": "async"}))
        lease = q["lease_until"]
        row["status"] = (RUNNING if lease is not None and lease > now
                         else RETRYING if q["attempts"] > 0 else QUEUED)
        row["attempts"] = q["attempts"]
        out.append(row)
    return out


_PRUNE_BY_AGE = sa.delete(_t).where(_t.c.function == sa.bindparam("p_function"),
                                    _t.c.started_at < sa.bindparam("p_older_than"))
_PRUNE_BY_COUNT = sa.delete(_t).where(
    _t.c.function == sa.bindparam("p_function"),
    _t.c.started_at <= (
        sa.select(_t.c.started_at).where(_t.c.function == sa.bindparam("p_function"))
        .order_by(_t.c.started_at.desc()).limit(sa.literal_column("1"))
        .offset(sa.bindparam("p_keep", type_=sa.Integer))
        .scalar_subquery()
    ),
)


def prune(conn: sa.Connection, function: str, *, older_than: float, keep: int) -> int:
    """Delete the rows of ``function`` started before ``older_than`` and all but its newest ``keep``;
    how many were deleted."""
    deleted = conn.execute(_PRUNE_BY_AGE, {"p_function": function, "p_older_than": older_than}).rowcount
    deleted += conn.execute(_PRUNE_BY_COUNT, {"p_function": function, "p_keep": keep}).rowcount
    return int(deleted)


def sqlite_statements() -> dict[str, Any]:
    """The SQLite text of the whole-row upsert (head, one row's group, tail) and of ``prune``'s two
    statements (named parameters), for a writer that runs them without SQLAlchemy
    (``router.state.history_process``)."""
    head, tail = _upsert_sql(_t.name, "\0").split("\0")
    dialect = sqlite_dialect.dialect(paramstyle="named")
    return {
        "upsert_head": head, "upsert_group": _SQLITE_GROUP,
        "upsert_tail": tail, "rows_per_statement": SQLITE_ROWS,
        "prune_by_age": str(_PRUNE_BY_AGE.compile(dialect=dialect)),
        "prune_by_count": str(_PRUNE_BY_COUNT.compile(dialect=dialect)),
    }
