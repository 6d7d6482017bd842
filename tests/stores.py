"""The state stores tests open: ``new_store`` (tests/conftest.py) gives a ``StoreFactory`` that opens stores
on one fresh database of the test's own, SQLite or a PostgreSQL schema, closed and dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import sqlalchemy as sa

from router.state.store import StateStore
from router.state.url import engine_url

SQLITE_URL = "sqlite:///state/router.db"
"""Relative to the test's tmp_path."""

StoreFactory = Callable[[], Awaitable[StateStore]]
"""Opens another state store on the test's one database (the ``new_store`` fixture)."""


@asynccontextmanager
async def store_factory(dialect: str, tmp_path: Path,
                        postgres_dsn: str | None) -> AsyncIterator[StoreFactory]:
    """Open stores on one fresh database of ``dialect`` ("sqlite", "postgres"); close them, drop the
    schema."""
    opened: list[StateStore] = []
    if dialect == "sqlite":
        url, schema = SQLITE_URL, None
    else:
        assert postgres_dsn is not None
        url, schema = postgres_dsn, f"test_{uuid.uuid4().hex[:16]}"

    async def factory() -> StateStore:
        store = StateStore.from_url(url, tmp_path, schema=schema)
        await store.open()
        opened.append(store)
        return store

    try:
        yield factory
    finally:
        for store in opened:
            await store.close()
        if schema is not None:
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()


async def older_sqlite_database(tmp_path: Path, url: str, *, drop: list[str], version: int) -> sa.Engine:
    """A SQLite database at ``url`` as an earlier schema ``version`` left it: created by the store, then
    ``drop`` tables removed and the version put back. Returns a sync engine on it (dispose it)."""
    store = StateStore.from_url(url, tmp_path)
    await store.open()
    await store.close()
    engine = sa.create_engine(engine_url(url, tmp_path).set(drivername="sqlite+pysqlite"))
    with engine.begin() as conn:
        for table in drop:
            conn.execute(sa.text(f"DROP TABLE {table}"))
        conn.execute(sa.text("UPDATE router_meta SET value = :v WHERE key = 'schema_version'"),
                     {"v": str(version)})
    return engine
