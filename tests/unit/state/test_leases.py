"""Shard leases in the state store, against SQLite and a real PostgreSQL server: taking, renewing,
hand-over, and the fencing of checkpoint writes by the lease counter."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from router.state import StateStore
from router.state.checkpoints import SHARD_END
from router.state.leases import Lease, LeaseLost, LeaseToken
from router.state.schema import SCHEMA_VERSION
from tests.stores import StoreFactory, older_sqlite_database

R = "clicks"
S0, S1 = "shardId-000000000000", "shardId-000000000001"


async def test_a_stale_owners_checkpoint_is_refused(new_store: StoreFactory) -> None:
    a, b = await new_store(), await new_store()  # two replicas on one database
    assert await a.ensure_leases(R, [S0]) == 1
    [free] = await a.load_leases(R)
    token_a = await a.take_lease(R, S0, owner="a", seen=free.counter, now=100.0, duration=10.0)
    assert token_a == LeaseToken("a", 1)
    await a.save_checkpoint(R, S0, "5", now=101.0, lease=token_a)
    # b cannot take a live lease; once it has run out, b takes it and the counter moves on
    assert await b.take_lease(R, S0, owner="b", seen=1, now=105.0, duration=10.0) is None
    token_b = await b.take_lease(R, S0, owner="b", seen=1, now=111.0, duration=10.0)
    assert token_b == LeaseToken("b", 2)
    # a, paused past its expiry, does not know: its write is refused whole, the checkpoint stays b's view
    with pytest.raises(LeaseLost, match=r"route 'clicks': shard shardId-000000000000: the lease of a "
                                        r"\(counter 1\) is held by another replica now"):
        await a.save_checkpoint(R, S0, "9", now=112.0, lease=token_a)
    assert await a.load_checkpoints(R) == {S0: "5"}
    await b.save_checkpoint(R, S0, "7", now=112.0, lease=token_b)
    assert await a.load_checkpoints(R) == {S0: "7"}
    # nor can a end the shard, renew or release what it lost
    with pytest.raises(LeaseLost):
        await a.save_checkpoint(R, S0, SHARD_END, now=113.0, lease=token_a)
    assert await a.renew_leases(R, {S0: token_a}, owner="a", now=113.0, duration=10.0) == {}
    with pytest.raises(LeaseLost):
        await a.release_lease(R, S0, token_a, now=113.0)
    assert await b.renew_leases(R, {S0: token_b}, owner="b", now=113.0, duration=10.0) == {S0: None}


async def test_take_is_won_by_one_replica(new_store: StoreFactory) -> None:
    stores = [await new_store() for _ in range(4)]
    await stores[0].ensure_leases(R, [S0])
    tokens = await asyncio.gather(*(
        s.take_lease(R, S0, owner=f"r{i}", seen=0, now=50.0, duration=10.0) for i, s in enumerate(stores)))
    won = [t for t in tokens if t is not None]
    assert len(won) == 1
    assert won[0].counter == 1
    [lease] = await stores[0].load_leases(R)
    assert (lease.owner, lease.counter, lease.lease_until) == (won[0].owner, 1, 60.0)


async def test_renew_extends_and_release_frees_at_once(new_store: StoreFactory) -> None:
    store = await new_store()
    assert await store.ensure_leases(R, [S0, S1]) == 2
    assert await store.ensure_leases(R, [S0, S1]) == 0  # idempotent
    t0 = await store.take_lease(R, S0, owner="a", seen=0, now=0.0, duration=10.0)
    t1 = await store.take_lease(R, S1, owner="a", seen=0, now=0.0, duration=10.0)
    assert t0 is not None
    assert t1 is not None
    assert await store.renew_leases(R, {S0: t0, S1: t1}, owner="a", now=8.0, duration=10.0) == {
        S0: None, S1: None}
    assert {lease.shard_id: lease.lease_until for lease in await store.load_leases(R)} == {S0: 18.0, S1: 18.0}
    # a renewed lease cannot be taken at its old expiry
    assert await store.take_lease(R, S0, owner="b", seen=1, now=12.0, duration=10.0) is None
    await store.release_lease(R, S0, t0, now=13.0)
    [released, _] = await store.load_leases(R)
    assert (released.owner, released.counter, released.live(13.0)) == (None, 2, False)
    assert await store.take_lease(R, S0, owner="b", seen=2, now=13.0, duration=10.0) == LeaseToken("b", 3)


async def test_handoff_is_asked_once_and_seen_by_the_owner(new_store: StoreFactory) -> None:
    owner, asker = await new_store(), await new_store()
    await owner.ensure_leases(R, [S0])
    token = await owner.take_lease(R, S0, owner="a", seen=0, now=0.0, duration=10.0)
    assert token is not None
    [lease] = await asker.load_leases(R)
    assert await asker.ask_lease(R, lease, asker="b")
    assert not await asker.ask_lease(R, lease, asker="c")  # asked already
    assert await owner.renew_leases(R, {S0: token}, owner="a", now=3.0, duration=10.0) == {S0: "b"}
    await owner.save_checkpoint(R, S0, "42", now=4.0, lease=token)
    await owner.release_lease(R, S0, token, now=4.0, reserve=10.0)
    [lease] = await asker.load_leases(R)
    assert lease == Lease(S0, None, 2, 14.0, "b")  # free, kept for b until 14
    assert (lease.reserved(4.0), lease.reserved(14.0)) == ("b", None)
    taken = await asker.take_lease(R, S0, owner="b", seen=lease.counter, now=4.5, duration=10.0)
    assert taken == LeaseToken("b", 3)
    [lease] = await asker.load_leases(R)
    assert lease == Lease(S0, "b", 3, 14.5, None)  # the request is cleared by the take


async def test_shard_end_deletes_the_lease_and_free_all_frees_a_route(new_store: StoreFactory) -> None:
    store = await new_store()
    await store.ensure_leases(R, [S0, S1])
    await store.ensure_leases("other", [S0])
    t0 = await store.take_lease(R, S0, owner="a", seen=0, now=0.0, duration=10.0)
    t1 = await store.take_lease(R, S1, owner="a", seen=0, now=0.0, duration=10.0)
    assert t0 is not None
    assert t1 is not None
    await store.save_checkpoint(R, S0, SHARD_END, now=1.0, lease=t0)
    assert [lease.shard_id for lease in await store.load_leases(R)] == [S1]
    assert await store.load_checkpoints(R) == {S0: SHARD_END}
    assert await store.free_leases(R) == 1
    [lease] = await store.load_leases(R)
    assert (lease.owner, lease.counter) == (None, 2)
    with pytest.raises(LeaseLost):  # freeing moved the counter on: the earlier run's token is stale
        await store.save_checkpoint(R, S1, "3", now=2.0, lease=t1)
    assert await store.forget_leases(R) == 1
    assert len(await store.load_leases("other")) == 1


async def test_version_2_database_migrates_by_opening(tmp_path: Path) -> None:
    """A database of the previous schema (no leases table, version 2) opens and gets it."""
    engine = await older_sqlite_database(tmp_path, "sqlite:///old.db", drop=["router_shard_leases"],
                                         version=2)
    engine.dispose()
    store = StateStore.from_url("sqlite:///old.db", tmp_path)
    await store.open()
    try:
        assert await store.ensure_leases(R, [S0]) == 1
    finally:
        await store.close()
    with engine.begin() as conn:
        version = conn.execute(sa.text("SELECT value FROM router_meta WHERE key = 'schema_version'")).scalar()
    engine.dispose()
    assert version == str(SCHEMA_VERSION) == "5"
