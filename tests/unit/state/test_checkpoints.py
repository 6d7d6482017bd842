"""Stream checkpoints in the state store, against SQLite and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa

from router.state import StateStore
from router.state.checkpoints import SHARD_END
from router.state.schema import SCHEMA_VERSION
from tests.stores import StoreFactory, older_sqlite_database

BIG = "49590338271490256608559692538361571095921575989136588898"  # Kinesis: 56 digits


async def test_save_load_replace(new_store: StoreFactory) -> None:
    store = await new_store()
    assert await store.load_checkpoints("clicks") == {}
    await store.save_checkpoint("clicks", "shardId-000000000000", "1", now=100.0)
    await store.save_checkpoint("clicks", "shardId-000000000000", BIG, now=101.0)
    await store.save_checkpoint("clicks", "shardId-000000000001", SHARD_END, now=102.0)
    await store.save_checkpoint("other", "shardId-000000000000", "7", now=103.0)
    other = await new_store()  # another connection (replica) sees what was committed
    assert await other.load_checkpoints("clicks") == {
        "shardId-000000000000": BIG, "shardId-000000000001": SHARD_END,
    }
    assert await other.load_checkpoints("other") == {"shardId-000000000000": "7"}
    assert await other.forget_checkpoints("clicks") == 2
    assert await store.load_checkpoints("clicks") == {}


async def test_concurrent_saves_of_many_shards(new_store: StoreFactory) -> None:
    store = await new_store()
    await asyncio.gather(*(store.save_checkpoint("r", f"shard-{i}", str(i), now=1.0) for i in range(50)))
    assert await store.load_checkpoints("r") == {f"shard-{i}": str(i) for i in range(50)}


async def test_version_1_database_migrates_by_opening(tmp_path: Path) -> None:
    """A database written by the previous schema (no checkpoints table, version 1) opens and gets both."""
    engine = await older_sqlite_database(tmp_path, "sqlite:///old.db", drop=["router_checkpoints"], version=1)
    store = StateStore.from_url("sqlite:///old.db", tmp_path)
    await store.open()
    try:
        await store.save_checkpoint("r", "s", "5", now=1.0)
        assert await store.load_checkpoints("r") == {"s": "5"}
    finally:
        await store.close()
    with engine.begin() as conn:
        version = conn.execute(sa.text("SELECT value FROM router_meta WHERE key = 'schema_version'")).scalar()
    engine.dispose()
    assert version == str(SCHEMA_VERSION) == "5"
