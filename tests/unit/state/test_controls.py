"""Run-time controls in the state store (routes paused, reserved concurrency), SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from router.state import StateStore
from router.state.controls import FUNCTION, ROUTE, ControlRow
from router.state.schema import SCHEMA_VERSION
from tests.stores import StoreFactory, older_sqlite_database


async def test_save_replace_and_load_from_another_replica(new_store: StoreFactory) -> None:
    store = await new_store()
    assert await store.load_controls() == []
    await store.save_control(ControlRow(ROUTE, "orders", enabled=False, updated_at=1.0))
    await store.save_control(ControlRow(FUNCTION, "resize", reserved_concurrency=0,
                                        maximum_retry_attempts=1, maximum_event_age=120.0, updated_at=2.0))
    other = await new_store()  # another replica sees what was committed
    assert await other.load_controls() == [
        ControlRow(FUNCTION, "resize", reserved_concurrency=0, maximum_retry_attempts=1,
                   maximum_event_age=120.0, updated_at=2.0),
        ControlRow(ROUTE, "orders", enabled=False, updated_at=1.0),
    ]
    # A write replaces the whole row: NULL columns mean "as the config says" again.
    await other.save_control(ControlRow(FUNCTION, "resize", reserved_concurrency=None, updated_at=3.0))
    await other.save_control(ControlRow(ROUTE, "orders", enabled=True, updated_at=4.0))
    assert await store.load_controls() == [
        ControlRow(FUNCTION, "resize", updated_at=3.0),
        ControlRow(ROUTE, "orders", enabled=True, updated_at=4.0),
    ]


async def test_version_3_database_migrates_by_opening(tmp_path: Path) -> None:
    """A database of the previous schema (no controls table, version 3) opens and gets it."""
    engine = await older_sqlite_database(tmp_path, "sqlite:///old.db", drop=["router_controls"], version=3)
    engine.dispose()
    store = StateStore.from_url("sqlite:///old.db", tmp_path)
    await store.open()
    try:
        await store.save_control(ControlRow(ROUTE, "orders", enabled=False, updated_at=1.0))
        assert [r.name for r in await store.load_controls()] == ["orders"]
    finally:
        await store.close()
    with engine.begin() as conn:
        version = conn.execute(sa.text("SELECT value FROM router_meta WHERE key = 'schema_version'")).scalar()
    engine.dispose()
    assert version == str(SCHEMA_VERSION) == "5"
