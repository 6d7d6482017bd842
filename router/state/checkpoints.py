"""Stream checkpoints: the last sequence number processed of each (route, shard), as SQL transactions.

A checkpoint is the sequence number of the last record that succeeded, was filtered out, or was given
up after its failure record was delivered; a reader resumes AFTER it. ``SHARD_END`` marks a closed shard
read to its end and processed: its children may start, and its lease is deleted in the same transaction.
A save with a lease token is fenced: it is written only if that token still holds the shard's lease,
checked in the same transaction (``router.state.leases.hold``). ``StateStore`` runs these transactions.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa

from router.state import leases
from router.state.leases import LeaseToken
from router.state.schema import checkpoints, dialect_insert

SHARD_END = "SHARD_END"
"""Checkpoint value of a closed shard that has been read to its end and processed whole."""

_t = checkpoints
_SELECT = sa.select(_t.c.shard_id, _t.c.sequence_number).where(_t.c.route == sa.bindparam("p_route"))
_DELETE = sa.delete(_t).where(_t.c.route == sa.bindparam("p_route"))


@functools.cache  # made at first use: the PostgreSQL one only on PostgreSQL (schema.dialect_insert)
def _upsert(dialect: str) -> Any:
    insert = dialect_insert(dialect)
    stmt = insert(_t).values(
        route=sa.bindparam("p_route"), shard_id=sa.bindparam("p_shard"),
        sequence_number=sa.bindparam("p_seq"), updated_at=sa.bindparam("p_now"),
    )
    return stmt.on_conflict_do_update(
        index_elements=[_t.c.route, _t.c.shard_id],
        set_={"sequence_number": stmt.excluded.sequence_number, "updated_at": stmt.excluded.updated_at},
    )


def load(conn: sa.Connection, route: str) -> dict[str, str]:
    """Every checkpoint of ``route``: shard id -> sequence number (or ``SHARD_END``)."""
    return {str(shard): str(seq) for shard, seq in conn.execute(_SELECT, {"p_route": route})}


def save(conn: sa.Connection, route: str, shard_id: str, sequence_number: str, now: float,
         token: LeaseToken | None = None) -> None:
    """Insert or replace the checkpoint of (``route``, ``shard_id``); with ``token``, only while it holds
    the shard's lease (else ``LeaseLost``, nothing written). ``SHARD_END`` also deletes the lease."""
    if sequence_number == SHARD_END:
        leases.finish(conn, route, shard_id, token)
    elif token is not None:
        leases.hold(conn, route, shard_id, token)
    conn.execute(_upsert(conn.dialect.name), {
        "p_route": route, "p_shard": shard_id, "p_seq": sequence_number, "p_now": now,
    })


def forget(conn: sa.Connection, route: str) -> int:
    """Delete every checkpoint of ``route``; how many there were."""
    return int(conn.execute(_DELETE, {"p_route": route}).rowcount)
