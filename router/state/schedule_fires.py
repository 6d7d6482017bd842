"""Schedule fires: one row per (route, nominal tick) claimed, so each tick fires once among replicas.

A replica fires a tick only when its INSERT of (route, fire_time) is the one that lands (ON CONFLICT DO
NOTHING): on PostgreSQL the primary key decides between replicas, on SQLite the single writer does.
The newest row of a route tells a starting router which ticks it missed while nobody was running.
Rows older than a day (and older than the route's catch-up window) are pruned as new ones come.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa

from router.state.schema import dialect_insert, schedule_fires

KEEP = 24 * 3600.0
"""Seconds of fires kept beyond the route's catch-up window (for operators reading the table)."""

_t = schedule_fires
_LAST = sa.select(sa.func.max(_t.c.fire_time)).where(_t.c.route == sa.bindparam("p_route"))
_PRUNE = sa.delete(_t).where(_t.c.route == sa.bindparam("p_route"), _t.c.fire_time < sa.bindparam("p_before"))


@functools.cache  # made at first use: the PostgreSQL one only on PostgreSQL (schema.dialect_insert)
def _claim(dialect: str) -> Any:
    insert = dialect_insert(dialect)
    return insert(_t).values(
        route=sa.bindparam("p_route"), fire_time=sa.bindparam("p_fire"), fired_at=sa.bindparam("p_now"),
    ).on_conflict_do_nothing(index_elements=[_t.c.route, _t.c.fire_time])


def claim(conn: sa.Connection, route: str, fire_time: float, now: float, keep: float) -> bool:
    """Claim the tick of ``route`` at ``fire_time``; True when this caller won it. Prunes rows of the
    route older than ``keep`` seconds before ``fire_time`` (never the newest)."""
    won = conn.execute(_claim(conn.dialect.name), {
        "p_route": route, "p_fire": fire_time, "p_now": now}).rowcount == 1
    if won:
        conn.execute(_PRUNE, {"p_route": route, "p_before": fire_time - keep})
    return won


def last(conn: sa.Connection, route: str) -> float | None:
    """The newest claimed tick of ``route`` (epoch seconds), or None when it never fired."""
    value = conn.execute(_LAST, {"p_route": route}).scalar_one_or_none()
    return None if value is None else float(value)
