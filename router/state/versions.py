"""Published function versions as SQL: one immutable row per (function, version number).

``publish`` numbers a new version ``max + 1`` in the same transaction that reads the latest one, and
returns the latest instead when its code hash and config are the same (Lambda publishes nothing then).
Rows are never updated. ``StateStore`` runs these transactions.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from router.state.schema import function_versions

_t = function_versions


@dataclass(frozen=True, slots=True)
class VersionRow:
    """One published version, without its code (``code`` read by ``code`` alone)."""

    function: str
    version: int
    code_sha256: str
    code_size: int
    config: str  # JSON
    description: str
    published_at: float


_COLUMNS = (_t.c.function, _t.c.version, _t.c.code_sha256, _t.c.code_size, _t.c.config, _t.c.description,
            _t.c.published_at)


def _row(r: sa.Row[tuple[object, ...]]) -> VersionRow:
    return VersionRow(function=str(r.function), version=int(r.version), code_sha256=str(r.code_sha256),
                      code_size=int(r.code_size), config=str(r.config), description=str(r.description),
                      published_at=float(r.published_at))


def publish(conn: sa.Connection, *, function: str, code: bytes, code_sha256: str, config: str,
            description: str, now: float) -> tuple[VersionRow, bool]:
    """Insert the next version of ``function``, or return the latest when code and config are the same.
    Returns (row, created)."""
    latest = conn.execute(
        sa.select(*_COLUMNS).where(_t.c.function == function).order_by(_t.c.version.desc()).limit(1)
    ).first()
    if latest is not None and latest.code_sha256 == code_sha256 and latest.config == config:
        return _row(latest), False
    number = 1 if latest is None else int(latest.version) + 1
    conn.execute(sa.insert(_t).values(
        function=function, version=number, code_sha256=code_sha256, code_size=len(code), config=config,
        description=description, code=code, published_at=now))
    return VersionRow(function, number, code_sha256, len(code), config, description, now), True


def list_versions(conn: sa.Connection, function: str | None = None) -> list[VersionRow]:
    """The versions of ``function`` (every function's when None), by function and number."""
    query = sa.select(*_COLUMNS).order_by(_t.c.function, _t.c.version)
    if function is not None:
        query = query.where(_t.c.function == function)
    return [_row(r) for r in conn.execute(query)]


def get(conn: sa.Connection, function: str, version: int) -> VersionRow | None:
    r = conn.execute(sa.select(*_COLUMNS).where(_t.c.function == function, _t.c.version == version)).first()
    return None if r is None else _row(r)


def code(conn: sa.Connection, function: str, version: int) -> bytes | None:
    """The zip of a version's code, or None when there is no such version."""
    value = conn.execute(
        sa.select(_t.c.code).where(_t.c.function == function, _t.c.version == version)).scalar()
    return None if value is None else bytes(value)
