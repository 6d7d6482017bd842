"""Failed events kept for inspection and redrive (``router_failed_events``), as SQL transactions.

A row is an async event whose retries ran out or that grew too old, or a stream batch given up: what
reached ``on_failure`` or was dropped, with its destination record and the payload a redrive invokes the
function with. ``redriven_as`` is the request id of its redrive: set by one UPDATE ... WHERE redriven_as
IS NULL (the claim), so two redrives of one event never both run it; ``redriven_at`` is set once that
redrive was accepted (NULL with ``redriven_as`` set: claimed, not accepted yet). ``StateStore`` runs
these transactions; bounded by ``prune`` (age and count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from router.state.schema import failed_events

_t = failed_events

MAX_PAGE = 1000
"""Most rows one ``select`` returns."""


@dataclass(slots=True)
class FailedEvent:
    """One kept failed event; ``record`` (JSON text) and ``payload`` are empty in a listing."""

    id: int
    function: str
    route: str | None
    source: str
    request_id: str
    condition: str
    failed_at: float
    attempts: int
    error_type: str | None
    error_message: str | None
    redriven_as: str | None
    redriven_at: float | None
    qualifier: str | None = None  # the version or alias it was invoked with (a redrive keeps it)
    record: str = ""
    payload: bytes = b""


@dataclass(slots=True, frozen=True)
class FailureFilter:
    """Which kept events: every field set must match (``since`` <= failed_at < ``until``); ``ids`` alone
    names them; ``before``: ids below it (the next page of a listing, newest first)."""

    function: str | None = None
    route: str | None = None
    condition: str | None = None
    since: float | None = None
    until: float | None = None
    ids: tuple[int, ...] | None = None
    before: int | None = None

    @property
    def empty(self) -> bool:
        """True when it matches every kept event."""
        return all(v is None for v in (self.function, self.route, self.condition, self.since, self.until,
                                       self.ids, self.before))


_SUMMARY = (
    _t.c.id, _t.c.function, _t.c.route, _t.c.source, _t.c.request_id, _t.c.condition, _t.c.failed_at,
    _t.c.attempts, _t.c.error_type, _t.c.error_message, _t.c.redriven_as, _t.c.redriven_at, _t.c.qualifier,
)
_INSERT = sa.insert(_t).returning(_t.c.id)


def _where(f: FailureFilter) -> list[sa.ColumnElement[bool]]:
    cond: list[sa.ColumnElement[bool]] = []
    if f.ids is not None:
        cond.append(_t.c.id.in_(list(f.ids)))
    if f.function is not None:
        cond.append(_t.c.function == f.function)
    if f.route is not None:
        cond.append(_t.c.route == f.route)
    if f.condition is not None:
        cond.append(_t.c.condition == f.condition)
    if f.since is not None:
        cond.append(_t.c.failed_at >= f.since)
    if f.until is not None:
        cond.append(_t.c.failed_at < f.until)
    if f.before is not None:
        cond.append(_t.c.id < f.before)
    return cond


def _row(r: Any, *, whole: bool) -> FailedEvent:
    event = FailedEvent(
        id=int(r.id), function=r.function, route=r.route, source=r.source, request_id=r.request_id,
        condition=r.condition, failed_at=float(r.failed_at), attempts=int(r.attempts),
        error_type=r.error_type, error_message=r.error_message, redriven_as=r.redriven_as,
        redriven_at=None if r.redriven_at is None else float(r.redriven_at), qualifier=r.qualifier,
    )
    if whole:
        event.record, event.payload = str(r.record), bytes(r.payload)
    return event


def insert(conn: sa.Connection, row: dict[str, Any]) -> int:
    """Keep one failed event (``row``: the table's columns but ``id``); its id."""
    return int(conn.execute(_INSERT, row).scalar_one())


def select(conn: sa.Connection, f: FailureFilter, limit: int) -> list[FailedEvent]:
    """The kept events ``f`` matches, newest first, at most ``limit`` (capped at ``MAX_PAGE``), without
    record and payload."""
    stmt = sa.select(*_SUMMARY).where(*_where(f)).order_by(_t.c.id.desc()).limit(min(limit, MAX_PAGE))
    return [_row(r, whole=False) for r in conn.execute(stmt)]


def get(conn: sa.Connection, event_id: int) -> FailedEvent | None:
    """One kept event, whole; None when there is none with that id."""
    r = conn.execute(sa.select(_t).where(_t.c.id == event_id)).one_or_none()
    return None if r is None else _row(r, whole=True)


def redrive_of(conn: sa.Connection, request_id: str) -> FailedEvent | None:
    """The kept event whose redrive is ``request_id`` (``redriven_as``), without record and payload;
    None when ``request_id`` is no redrive, or its event is no longer kept."""
    r = conn.execute(sa.select(*_SUMMARY).where(_t.c.redriven_as == request_id).limit(1)).one_or_none()
    return None if r is None else _row(r, whole=False)


def claim(conn: sa.Connection, f: FailureFilter, limit: int, new_ids: list[str]) -> list[FailedEvent]:
    """Mark up to ``limit`` events ``f`` matches that were never redriven as redriven, each with the next
    of ``new_ids`` (at least ``limit`` of them); those claimed, whole, oldest first. An event already
    claimed (here or by another replica) is left out: ``redriven_as IS NULL`` is checked in the UPDATE."""
    ids = [int(i) for i in conn.execute(
        sa.select(_t.c.id).where(*_where(f), _t.c.redriven_as.is_(None)).order_by(_t.c.id).limit(limit)
    ).scalars()]
    claimed: list[FailedEvent] = []
    for event_id, new_id in zip(ids, new_ids, strict=False):
        r = conn.execute(
            sa.update(_t).where(_t.c.id == event_id, _t.c.redriven_as.is_(None))
            .values(redriven_as=new_id).returning(*_t.c)
        ).one_or_none()
        if r is not None:  # None: another replica claimed it since the SELECT
            claimed.append(_row(r, whole=True))
    return claimed


def accepted(conn: sa.Connection, event_id: int, new_id: str, now: float) -> None:
    """The redrive ``new_id`` of ``event_id`` was accepted (its async event is durable)."""
    conn.execute(sa.update(_t).where(_t.c.id == event_id, _t.c.redriven_as == new_id)
                 .values(redriven_at=now))


def unclaim(conn: sa.Connection, claims: list[tuple[int, str]]) -> int:
    """Undo claims whose redrive was never submitted: ``(event id, redrive id)`` pairs; how many."""
    done = 0
    for event_id, new_id in claims:
        done += int(conn.execute(
            sa.update(_t).where(_t.c.id == event_id, _t.c.redriven_as == new_id, _t.c.redriven_at.is_(None))
            .values(redriven_as=None)
        ).rowcount)
    return done


def delete(conn: sa.Connection, f: FailureFilter) -> int:
    """Delete the kept events ``f`` matches; how many."""
    return int(conn.execute(sa.delete(_t).where(*_where(f))).rowcount)


def prune(conn: sa.Connection, *, older_than: float, keep: int) -> int:
    """Delete the events that failed before ``older_than`` and all but the newest ``keep``; how many."""
    gone = int(conn.execute(sa.delete(_t).where(_t.c.failed_at < older_than)).rowcount)
    cutoff = conn.execute(
        sa.select(_t.c.id).order_by(_t.c.id.desc()).offset(keep).limit(1)
    ).scalar_one_or_none()
    if cutoff is not None:
        gone += int(conn.execute(sa.delete(_t).where(_t.c.id <= cutoff)).rowcount)
    return gone
