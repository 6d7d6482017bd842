"""The async queue keeps each event's trace header (recursive loop detection); a version-4 database,
written before the column existed, gains it by being opened."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from router.state.schema import SCHEMA_VERSION
from router.state.store import StateStore
from tests.stores import older_sqlite_database

TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0;Lineage=12326a9d:3"


async def _round_trip(store: StateStore) -> None:
    await store.enqueue(function="f", request_id="a", payload=b"{}", source="function", route=None, now=1.0,
                        trace=TRACE)
    await store.enqueue(function="f", request_id="b", payload=b"{}", source="webhook", route=None, now=1.0)
    claimed = {e.request_id: e.trace for e in await store.claim("f", 10, now=2.0, lease=60.0)}
    assert claimed == {"a": TRACE, "b": None}


async def test_an_event_keeps_its_trace_header(tmp_path: Path) -> None:
    store = StateStore.from_url("sqlite:///new.db", tmp_path)
    await store.open()
    try:
        await _round_trip(store)
    finally:
        await store.close()


async def test_version_4_database_gains_the_trace_column(tmp_path: Path) -> None:
    engine = await older_sqlite_database(tmp_path, "sqlite:///old.db", drop=[], version=4)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE router_async_events DROP COLUMN trace"))
    store = StateStore.from_url("sqlite:///old.db", tmp_path)
    await store.open()
    try:
        await _round_trip(store)
    finally:
        await store.close()
    with engine.begin() as conn:
        version = conn.execute(sa.text("SELECT value FROM router_meta WHERE key = 'schema_version'")).scalar()
        columns = {c["name"] for c in sa.inspect(conn).get_columns("router_async_events")}
    engine.dispose()
    assert version == str(SCHEMA_VERSION) == "5"
    assert "trace" in columns


async def test_version_4_postgres_schema_gains_the_trace_column(tmp_path: Path, postgres_dsn: str) -> None:
    import uuid

    import asyncpg

    schema = f"test_{uuid.uuid4().hex[:16]}"
    store = StateStore.from_url(postgres_dsn, tmp_path, schema=schema)
    await store.open()
    await store.close()
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(f'ALTER TABLE "{schema}".router_async_events DROP COLUMN trace')
        await conn.execute(f"UPDATE \"{schema}\".router_meta SET value = '4' WHERE key = 'schema_version'")
        store = StateStore.from_url(postgres_dsn, tmp_path, schema=schema)
        await store.open()
        try:
            await _round_trip(store)
        finally:
            await store.close()
        assert await conn.fetchval(
            f"SELECT value FROM \"{schema}\".router_meta WHERE key = 'schema_version'") == "5"
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
