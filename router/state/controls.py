"""Run-time controls: routes paused, functions' reserved concurrency and event invoke overrides, as SQL.

One row per (kind, name), ``kind`` being ``route`` or ``function``; a NULL column means "as the config
says". A write replaces the whole row (the caller holds the full state of that route or function), so
replicas sharing PostgreSQL converge on the last write; ``load`` reads the whole table (a row per route
or function at most). ``StateStore`` runs these transactions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from router.state.schema import controls, dialect_insert

ROUTE = "route"
FUNCTION = "function"


@dataclass(frozen=True, slots=True)
class ControlRow:
    """One route's or function's run-time settings; None: as the config says."""

    kind: str  # ROUTE or FUNCTION
    name: str
    enabled: bool | None = None
    reserved_concurrency: int | None = None
    maximum_retry_attempts: int | None = None
    maximum_event_age: float | None = None
    updated_at: float = 0.0


_t = controls
_SELECT = sa.select(
    _t.c.kind, _t.c.name, _t.c.enabled, _t.c.reserved_concurrency, _t.c.maximum_retry_attempts,
    _t.c.maximum_event_age, _t.c.updated_at,
)


@functools.cache  # made at first use: the PostgreSQL one only on PostgreSQL (schema.dialect_insert)
def _upsert(dialect: str) -> Any:
    insert = dialect_insert(dialect)
    stmt = insert(_t).values(
        kind=sa.bindparam("p_kind"), name=sa.bindparam("p_name"), enabled=sa.bindparam("p_enabled"),
        reserved_concurrency=sa.bindparam("p_reserved"), maximum_retry_attempts=sa.bindparam("p_retries"),
        maximum_event_age=sa.bindparam("p_age"), updated_at=sa.bindparam("p_now"),
    )
    return stmt.on_conflict_do_update(
        index_elements=[_t.c.kind, _t.c.name],
        set_={c: getattr(stmt.excluded, c) for c in (
            "enabled", "reserved_concurrency", "maximum_retry_attempts", "maximum_event_age", "updated_at")},
    )


def load(conn: sa.Connection) -> list[ControlRow]:
    """Every row, ordered by kind and name."""
    return [
        ControlRow(
            kind=str(r.kind), name=str(r.name), enabled=None if r.enabled is None else bool(r.enabled),
            reserved_concurrency=None if r.reserved_concurrency is None else int(r.reserved_concurrency),
            maximum_retry_attempts=(None if r.maximum_retry_attempts is None
                                    else int(r.maximum_retry_attempts)),
            maximum_event_age=None if r.maximum_event_age is None else float(r.maximum_event_age),
            updated_at=float(r.updated_at),
        )
        for r in conn.execute(_SELECT.order_by(_t.c.kind, _t.c.name))
    ]


def save(conn: sa.Connection, row: ControlRow) -> None:
    """Insert or replace the row of (``row.kind``, ``row.name``)."""
    conn.execute(_upsert(conn.dialect.name), {
        "p_kind": row.kind, "p_name": row.name, "p_enabled": row.enabled,
        "p_reserved": row.reserved_concurrency, "p_retries": row.maximum_retry_attempts,
        "p_age": row.maximum_event_age, "p_now": row.updated_at,
    })
