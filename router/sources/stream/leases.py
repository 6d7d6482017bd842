"""The shard leases one replica holds for one stream route, and how it balances them with the others.

Kinesis Client Library semantics over the state store's lease rows (``router.state.leases``): the owner
renews its leases every third of the lease duration; each cycle a replica counts the live owners (itself
included), aims at ``ceil(leases / owners)``, takes free or expired leases first (shuffled, so replicas do
not all race for the same one), and when none is free asks the most loaded owner for one lease (KCL's
rule: that owner holds more than the target, or as many and this replica needs more than one). Unlike
KCL's steal, the asked owner hands the lease over itself at its next renewal: it lets its batches
finish, checkpoints and releases it, reserved for the asker for one lease duration, so two replicas
never read one shard at once while both are alive.
A replica that dies stops renewing: its leases expire and are taken as expired ones.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from prometheus_client import Gauge

from router.errors import StateStoreError
from router.state.leases import Lease, LeaseLost, LeaseToken
from router.state.store import StateStore

log = logging.getLogger("router.sources.stream")


def default_replica_id() -> str:
    """``hostname-pid-random``: unique per process, readable in the lease table and the logs."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class Plan:
    """What one taking cycle does: take these free or expired leases, or ask for this live one."""

    take: list[Lease]
    ask: Lease | None = None


def plan(leases: list[Lease], me: str, now: float, *, busy: Collection[str] = (), room: int | None = None,
         rng: random.Random | None = None) -> Plan:
    """The leases ``me`` should take or ask for now (pure). ``busy``: shards ``me`` still runs a worker
    for (never taken again until it ends); ``room``: how many more shards ``me`` may read at most."""
    if not leases:
        return Plan([])
    rng = rng or random.Random()
    counts: dict[str, int] = {me: 0}
    for lease in leases:
        if lease.live(now):
            assert lease.owner is not None
            counts[lease.owner] = counts.get(lease.owner, 0) + 1
    target = math.ceil(len(leases) / len(counts))
    needed = target - counts[me]
    if room is not None:
        needed = min(needed, room)
    if needed <= 0:
        return Plan([])
    available = [lease for lease in leases if not lease.live(now) and lease.shard_id not in busy
                 and lease.reserved(now) in (None, me)]
    if available:
        rng.shuffle(available)
        return Plan(available[:needed])
    if any(lease.handoff == me for lease in leases if lease.live(now) and lease.owner != me):
        return Plan([])  # one request at a time: wait for the one asked already
    others = [(count, owner) for owner, count in counts.items() if owner != me]
    if not others:
        return Plan([])
    count, most = max(others)
    if count > target or (count == target and needed > 1):
        candidates = [lease for lease in leases
                      if lease.owner == most and lease.live(now) and lease.handoff is None]
        if candidates:
            return Plan([], rng.choice(candidates))
    return Plan([])


class ShardLeases:
    """The leases of one route this replica holds: renew them, take more, release them.

    ``held`` maps shard id -> token; ``until`` is this replica's own view of when each runs out (the last
    renewal that succeeded + the duration), so a replica that cannot reach the store stops reading a shard
    before another one may take it."""

    def __init__(self, store: StateStore, route: str, *, owner: str, duration: float, gauge: Gauge,
                 extra: dict[str, Any]) -> None:
        self.store = store
        self.route = route
        self.owner = owner
        self.duration = duration
        self.held: dict[str, LeaseToken] = {}
        self.until: dict[str, float] = {}
        self._gauge = gauge
        self._extra = extra
        gauge.set(0)

    def _count(self) -> None:
        self._gauge.set(len(self.held))

    async def renew(self, now: float) -> tuple[list[str], dict[str, str]]:
        """Renew every held lease: the shards lost (another replica holds them now) and those a replica
        asked for (shard -> asker). Raises ``StateStoreError`` (then see ``expired``)."""
        held = dict(self.held)
        if not held:
            return [], {}
        renewed = await self.store.renew_leases(self.route, held, owner=self.owner, now=now,
                                                duration=self.duration)
        lost: list[str] = []
        asked: dict[str, str] = {}
        for shard_id, token in held.items():
            if self.held.get(shard_id) != token:
                continue  # released or dropped meanwhile
            if shard_id not in renewed:
                lost.append(shard_id)
                self.drop(shard_id)
                log.warning("route '%s': shard %s: lease lost (another replica holds it now); the shard "
                            "stops here without checkpointing further", self.route, shard_id,
                            extra={**self._extra, "shard": shard_id})
                continue
            self.until[shard_id] = now + self.duration
            asker = renewed[shard_id]
            if asker is not None and asker != self.owner:
                asked[shard_id] = asker
        return lost, asked

    def expired(self, now: float) -> list[str]:
        """The held leases whose last renewal ran out by ``now`` (renewals failed): dropped, and logged
        as lost; another replica may hold them now."""
        gone = [s for s, until in self.until.items() if until <= now]
        for shard_id in gone:
            self.drop(shard_id)
            log.warning("route '%s': shard %s: lease lost (not renewed within %gs: the state store did not "
                        "answer); the shard stops here without checkpointing further", self.route, shard_id,
                        self.duration, extra={**self._extra, "shard": shard_id})
        return gone

    async def take(self, now: float, *, known: set[str], busy: set[str], room: int) -> list[tuple[str, int]]:
        """One taking cycle: take free or expired leases of ``known`` shards up to this replica's share,
        or ask a loaded owner for one. The shards taken, each with the counter it had (for the log)."""
        leases = [lease for lease in await self.store.load_leases(self.route) if lease.shard_id in known]
        decided = plan(leases, self.owner, now, busy=busy | set(self.held), room=room)
        taken: list[tuple[str, int]] = []
        for lease in decided.take:
            token = await self.store.take_lease(self.route, lease.shard_id, owner=self.owner,
                                                seen=lease.counter, now=now, duration=self.duration)
            if token is None:
                continue  # another replica was first
            self.held[lease.shard_id] = token
            self.until[lease.shard_id] = now + self.duration
            taken.append((lease.shard_id, lease.counter))
            how = (f"expired, was {lease.owner}'s" if lease.owner not in (None, self.owner) else "free")
            log.info("route '%s': shard %s: lease taken (%s; counter %d)", self.route, lease.shard_id, how,
                     token.counter, extra={**self._extra, "shard": lease.shard_id})
        if decided.ask is not None and await self.store.ask_lease(self.route, decided.ask, asker=self.owner):
            log.info("route '%s': shard %s: asked %s to hand its lease over (it holds more than its share)",
                     self.route, decided.ask.shard_id, decided.ask.owner,
                     extra={**self._extra, "shard": decided.ask.shard_id})
        self._count()
        return taken

    def drop(self, shard_id: str) -> None:
        """Forget a lease that is no longer held (lost, or deleted with its SHARD_END checkpoint)."""
        self.held.pop(shard_id, None)
        self.until.pop(shard_id, None)
        self._count()

    async def release(self, shard_id: str, now: float, *, why: str) -> None:
        """Free a held lease after the shard's last checkpoint, so another replica takes it at once.
        Never raises: a lease that cannot be released runs out instead."""
        token = self.held.get(shard_id)
        self.drop(shard_id)
        if token is None:
            return
        try:
            await self.store.release_lease(self.route, shard_id, token, now=now, reserve=self.duration)
        except LeaseLost:
            return
        except StateStoreError as exc:
            log.warning("route '%s': shard %s: cannot release the lease (%s); it runs out within %gs",
                        self.route, shard_id, exc, self.duration, extra={**self._extra, "shard": shard_id})
            return
        log.info("route '%s': shard %s: lease released (%s)", self.route, shard_id, why,
                 extra={**self._extra, "shard": shard_id})
