"""Published versions and the qualifier of async events in the state store, SQLite and PostgreSQL; a
schema-4 database migrates by opening it."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa

from router.state import StateStore
from router.state.schema import SCHEMA_VERSION
from tests.stores import StoreFactory, older_sqlite_database


async def test_versions_are_numbered_and_shared_by_replicas(new_store: StoreFactory) -> None:
    store = await new_store()
    row, created = await store.publish_version(function="f", code=b"zip1", code_sha256="h1", config="{}",
                                               description="one", now=1.0)
    assert (row.version, created) == (1, True)
    same, created = await store.publish_version(function="f", code=b"zip1", code_sha256="h1", config="{}",
                                                description="ignored", now=2.0)
    assert (same.version, same.description, created) == (1, "one", False)
    row, created = await store.publish_version(function="f", code=b"zip2", code_sha256="h2", config="{}",
                                               description="", now=3.0)
    assert (row.version, created) == (2, True)
    await store.publish_version(function="g", code=b"z", code_sha256="hg", config="{}", description="",
                                now=4.0)
    other = await new_store()
    assert [(r.function, r.version) for r in await other.list_versions()] == [("f", 1), ("f", 2), ("g", 1)]
    assert [r.version for r in await other.list_versions("f")] == [1, 2]
    got = await other.get_version("f", 2)
    assert got is not None
    assert (got.code_sha256, got.code_size) == ("h2", 4)
    assert await other.version_code("f", 1) == b"zip1"
    assert await other.get_version("f", 3) is None
    assert await other.version_code("f", 3) is None


async def test_async_events_keep_their_qualifier(new_store: StoreFactory) -> None:
    store = await new_store()
    await store.enqueue(function="f", request_id="a", payload=b"{}", source="test", route=None, now=1.0,
                        qualifier="prod")
    await store.enqueue(function="f", request_id="b", payload=b"{}", source="test", route=None, now=2.0)
    claimed = await store.claim("f", 10, now=3.0, lease=30.0)
    assert [(e.request_id, e.qualifier) for e in claimed] == [("a", "prod"), ("b", None)]


async def test_version_4_database_migrates_by_opening(tmp_path: Path) -> None:
    """A database of the previous schema (no versions table, no qualifier column) opens and gets both."""
    engine = await older_sqlite_database(tmp_path, "sqlite:///old.db", drop=["router_function_versions"],
                                         version=4)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE router_async_events DROP COLUMN qualifier"))
        conn.execute(sa.text(
            "INSERT INTO router_async_events (function, request_id, payload, source, attempts, enqueued_at, "
            "available_at) VALUES ('f', 'old', x'7b7d', 'test', 0, 1.0, 1.0)"))
    engine.dispose()
    store = StateStore.from_url("sqlite:///old.db", tmp_path)
    await store.open()
    try:
        await store.enqueue(function="f", request_id="new", payload=b"{}", source="test", route=None, now=2.0,
                            qualifier="3")
        claimed = await store.claim("f", 10, now=3.0, lease=30.0)
        assert [(e.request_id, e.qualifier) for e in claimed] == [("old", None), ("new", "3")]
        row, _ = await store.publish_version(function="f", code=b"z", code_sha256="h", config="{}",
                                             description="", now=4.0)
        assert row.version == 1
    finally:
        await store.close()
    with engine.begin() as conn:
        version = conn.execute(sa.text("SELECT value FROM router_meta WHERE key = 'schema_version'")).scalar()
    engine.dispose()
    assert version == str(SCHEMA_VERSION) == "5"


@pytest.mark.postgres
async def test_version_4_postgres_schema_migrates_by_opening(tmp_path: Path, postgres_dsn: str) -> None:
    """The same on PostgreSQL, in a schema of the test's own (the ALTER TABLE names the schema)."""
    schema = f"test_{uuid.uuid4().hex[:16]}"
    store = StateStore.from_url(postgres_dsn, tmp_path, schema=schema)
    await store.open()
    await store.close()
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(f'ALTER TABLE "{schema}".router_async_events DROP COLUMN qualifier')
        await conn.execute(f'DROP TABLE "{schema}".router_function_versions')
        await conn.execute(f"UPDATE \"{schema}\".router_meta SET value = '4' WHERE key = 'schema_version'")
        store = StateStore.from_url(postgres_dsn, tmp_path, schema=schema)
        await store.open()
        try:
            await store.enqueue(function="f", request_id="new", payload=b"{}", source="test", route=None,
                                now=2.0, qualifier="prod")
            claimed = await store.claim("f", 10, now=3.0, lease=30.0)
            assert [(e.request_id, e.qualifier) for e in claimed] == [("new", "prod")]
            row, _ = await store.publish_version(function="f", code=b"z", code_sha256="h", config="{}",
                                                 description="", now=4.0)
            assert row.version == 1
        finally:
            await store.close()
        stored = await conn.fetchval(
            f"SELECT value FROM \"{schema}\".router_meta WHERE key = 'schema_version'")
        assert stored == "5"
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
