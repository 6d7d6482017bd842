"""Fixtures of the schedule source tests: ``new_store``, stores on one fresh database (SQLite, and a
PostgreSQL schema of its own where the server is there), as replicas sharing it see it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from router.state.store import StateStore
from tests.unit.sources.schedule.support import StoreFactory


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    opened: list[StateStore] = []
    if request.param == "sqlite":
        url, schema = "sqlite:///state/router.db", None
    else:
        url = request.getfixturevalue("postgres_dsn")
        schema = f"test_{uuid.uuid4().hex[:16]}"

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
