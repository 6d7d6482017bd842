"""Shard leases of stream routes, as SQL transactions: which replica reads each shard, the way the Kinesis
Client Library keeps them.

One row per (route, shard) being read: ``owner`` (a replica id, NULL when free), ``lease_until`` (epoch
seconds, renewed by the owner), ``counter`` and ``handoff``. ``counter`` grows by one at every change of
owner (taken, released): it is the fencing token. A replica holds a lease as the pair (owner, counter) it
got when it took it; every checkpoint write checks that pair in the same transaction (``hold``), so an
owner whose lease was taken over, even one paused past its expiry that does not know it yet, cannot
write a checkpoint any more. A lease is taken only when free or expired (one conditional UPDATE), never
from a live owner: a replica that wants a live owner's lease asks for it (``handoff``), and the owner
hands it over gracefully (finishes its batches, checkpoints, ``release``); a lease released while asked
for stays reserved for the asker for one lease duration (``reserved``), so that the owner, which does
not count a replica holding nothing among the live owners, does not take it back. A closed shard's lease is
deleted with its ``SHARD_END`` checkpoint. Time is always passed in by the caller; replicas' clocks are
assumed to agree within a small part of the lease duration (NTP).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from router.errors import RouterError
from router.state.schema import dialect_insert, shard_leases


class LeaseLost(RouterError):
    """Raised when a write fenced by a shard lease (a checkpoint, a release) finds the lease no longer held
    by that owner with that counter: another replica took it; the write was not made."""

    def __init__(self, route: str, shard_id: str, token: LeaseToken) -> None:
        self.route = route
        self.shard_id = shard_id
        super().__init__(
            f"route '{route}': shard {shard_id}: the lease of {token.owner} (counter {token.counter}) is "
            "held by another replica now; the checkpoint was not written (the new owner resumes after the "
            "last checkpoint)")


@dataclass(frozen=True, slots=True)
class LeaseToken:
    """What a replica holds: its id and the lease's counter when it took it (the fencing token)."""

    owner: str
    counter: int


@dataclass(frozen=True, slots=True)
class Lease:
    """One lease row as read."""

    shard_id: str
    owner: str | None
    counter: int
    lease_until: float | None
    handoff: str | None = None

    def live(self, now: float) -> bool:
        """Held by an owner whose lease has not run out at ``now``."""
        return self.owner is not None and self.lease_until is not None and self.lease_until > now

    def reserved(self, now: float) -> str | None:
        """The replica a free lease is kept for at ``now`` (released to the one that asked), or None."""
        if self.owner is None and self.handoff is not None and (self.lease_until or 0.0) > now:
            return self.handoff
        return None


_t = shard_leases
_key = (_t.c.route == sa.bindparam("p_route"), _t.c.shard_id == sa.bindparam("p_shard"))
_held = (*_key, _t.c.owner == sa.bindparam("p_owner"), _t.c.counter == sa.bindparam("p_counter"))
_LIST = (
    sa.select(_t.c.shard_id, _t.c.owner, _t.c.counter, _t.c.lease_until, _t.c.handoff)
    .where(_t.c.route == sa.bindparam("p_route")).order_by(_t.c.shard_id)
)
_TAKE = (
    sa.update(_t)
    .where(*_key, _t.c.counter == sa.bindparam("p_counter"),
           sa.or_(_t.c.owner.is_(None), _t.c.lease_until.is_(None),
                  _t.c.lease_until <= sa.bindparam("p_now")))
    .values(owner=sa.bindparam("p_owner"), counter=_t.c.counter + 1, lease_until=sa.bindparam("p_until"),
            handoff=None)
    .returning(_t.c.counter)
)
_RENEW = (
    sa.update(_t)
    .where(_t.c.route == sa.bindparam("p_route"), _t.c.owner == sa.bindparam("p_owner"),
           _t.c.shard_id.in_(sa.bindparam("p_shards", expanding=True)))
    .values(lease_until=sa.bindparam("p_until"))
    .returning(_t.c.shard_id, _t.c.counter, _t.c.handoff)
)
# A no-op write of the row: it takes the row's lock (PostgreSQL) until the transaction ends, so no take
# or release of the lease can commit between this check and the checkpoint written after it.
_HOLD = sa.update(_t).where(*_held).values(lease_until=_t.c.lease_until)
_RELEASE = (
    sa.update(_t).where(*_held)
    .values(owner=None, counter=_t.c.counter + 1, lease_until=sa.case(
        (_t.c.handoff.is_(None), sa.bindparam("p_now", type_=sa.Double())),
        else_=sa.bindparam("p_reserved", type_=sa.Double())))
)
_DROP_HELD = sa.delete(_t).where(*_held)
_DROP = sa.delete(_t).where(*_key)
_ASK = (
    sa.update(_t)
    .where(*_held, _t.c.handoff.is_(None))
    .values(handoff=sa.bindparam("p_asker"))
)
_FREE_ALL = (
    sa.update(_t).where(_t.c.route == sa.bindparam("p_route"), _t.c.owner.is_not(None))
    .values(owner=None, counter=_t.c.counter + 1, lease_until=None, handoff=None)
)
_FORGET = sa.delete(_t).where(_t.c.route == sa.bindparam("p_route"))


def _insert(conn: sa.Connection) -> sa.Insert:
    insert: sa.Insert = dialect_insert(conn.dialect.name)(_t)
    return insert


def ensure(conn: sa.Connection, route: str, shard_ids: list[str]) -> int:
    """Create the free lease of each shard that has none; how many were created."""
    if not shard_ids:
        return 0
    have = {row.shard_id for row in conn.execute(_LIST, {"p_route": route})}
    rows = [{"route": route, "shard_id": s, "owner": None, "counter": 0, "lease_until": None, "handoff": None}
            for s in shard_ids if s not in have]
    if rows:  # another replica may create the same ones at once: the first insert wins
        conn.execute(_insert(conn).on_conflict_do_nothing(), rows)  # type: ignore[attr-defined]
    return len(rows)


def load(conn: sa.Connection, route: str) -> list[Lease]:
    """Every lease of ``route``, by shard id."""
    return [Lease(shard_id=str(r.shard_id), owner=r.owner, counter=int(r.counter),
                  lease_until=None if r.lease_until is None else float(r.lease_until), handoff=r.handoff)
            for r in conn.execute(_LIST, {"p_route": route})]


def take(conn: sa.Connection, route: str, shard_id: str, *, owner: str, seen: int, now: float,
         duration: float) -> LeaseToken | None:
    """Take the lease of ``shard_id`` if it is still free or expired and its counter is still ``seen``;
    the new token, or None when another replica was first (or the owner renewed it meanwhile)."""
    row = conn.execute(_TAKE, {"p_route": route, "p_shard": shard_id, "p_counter": seen, "p_now": now,
                               "p_owner": owner, "p_until": now + duration}).first()
    return None if row is None else LeaseToken(owner, int(row.counter))


def renew(conn: sa.Connection, route: str, held: dict[str, LeaseToken], *, owner: str, now: float,
          duration: float) -> dict[str, str | None]:
    """Extend the leases in ``held`` still held with the same token until ``now + duration``: shard id ->
    the replica that asked for it (``handoff``, or None). A shard missing from the answer is lost."""
    if not held:
        return {}
    rows = conn.execute(_RENEW, {"p_route": route, "p_owner": owner, "p_shards": sorted(held),
                                 "p_until": now + duration}).all()
    return {str(r.shard_id): r.handoff for r in rows if held[str(r.shard_id)].counter == int(r.counter)}


def hold(conn: sa.Connection, route: str, shard_id: str, token: LeaseToken) -> None:
    """Check, and lock until the transaction ends, that ``token`` holds the lease of ``shard_id``;
    raises ``LeaseLost`` (the caller's transaction then rolls back)."""
    params = {"p_route": route, "p_shard": shard_id, "p_owner": token.owner, "p_counter": token.counter}
    if conn.execute(_HOLD, params).rowcount != 1:
        raise LeaseLost(route, shard_id, token)


def release(conn: sa.Connection, route: str, shard_id: str, token: LeaseToken, *, now: float,
            reserve: float = 0.0) -> None:
    """Free the lease (owner NULL, expired now) so another replica takes it at once, or, when a replica
    asked for it, kept for that one until ``now + reserve``; raises ``LeaseLost`` when ``token`` no longer
    holds it."""
    params = {"p_route": route, "p_shard": shard_id, "p_owner": token.owner, "p_counter": token.counter,
              "p_now": now, "p_reserved": now + reserve}
    if conn.execute(_RELEASE, params).rowcount != 1:
        raise LeaseLost(route, shard_id, token)


def finish(conn: sa.Connection, route: str, shard_id: str, token: LeaseToken | None) -> None:
    """Delete the lease of a shard processed to its end (with ``token``: only if it still holds it, else
    ``LeaseLost``; without: whoever holds it)."""
    if token is None:
        conn.execute(_DROP, {"p_route": route, "p_shard": shard_id})
        return
    params = {"p_route": route, "p_shard": shard_id, "p_owner": token.owner, "p_counter": token.counter}
    if conn.execute(_DROP_HELD, params).rowcount != 1:
        raise LeaseLost(route, shard_id, token)


def ask(conn: sa.Connection, route: str, lease: Lease, *, asker: str) -> bool:
    """Ask the owner of ``lease`` (as seen) to hand it over; False when it changed meanwhile or another
    replica asked first."""
    params = {"p_route": route, "p_shard": lease.shard_id, "p_owner": lease.owner,
              "p_counter": lease.counter, "p_asker": asker}
    return bool(conn.execute(_ASK, params).rowcount == 1)


def free_all(conn: sa.Connection, route: str) -> int:
    """Free every lease of ``route`` (a single replica starting: its earlier run's leases are its own);
    how many were held."""
    return int(conn.execute(_FREE_ALL, {"p_route": route}).rowcount)


def forget(conn: sa.Connection, route: str) -> int:
    """Delete every lease of ``route``; how many there were."""
    return int(conn.execute(_FORGET, {"p_route": route}).rowcount)
