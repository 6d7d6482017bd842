"""The floor of the invocation history's writes on SQLite: CPU per row of bare ``sqlite3`` against the
router's own write path, outside a busy router.

Usage: ``.venv/bin/python -m bench.history_floor [--rows N]``

Rows are sync invocations' rows as the router makes them (``state.history.sync_row``), written the way
the router writes them (WAL, ``synchronous=FULL``, the router's multi-row upsert, ``BATCH`` rows a
transaction, each function pruned to ``max_count`` every ``PRUNE_EVERY`` seconds of rows at ~2,900 rows
a second: scenario 1's rate):

- **bare sqlite3**: the same table, index, statements and transactions from the standard library's
  ``sqlite3`` with nothing around them: what SQLite itself costs a row (B-tree inserts into the table,
  its request-id index and its (function, started_at) index, the WAL's page writes, the prune's deletes);
- the same with one transaction per 1,500 rows (one flush of scenario 1) and without the prune;
- **router**: ``StateStore.record_history`` (SQLAlchemy, the store's thread) with the same batches.

CPU is the writing thread's own (``time.thread_time``; for the router, the process's, the event loop
idle). What a busy router pays on top (the store's thread sharing the GIL with the event loop) is
measured in the router itself, not here (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.schema import CreateIndex, CreateTable

from router.core.history import BATCH, PRUNE_EVERY
from router.state import history
from router.state.schema import invocations
from router.state.store import StateStore

RATE = 2_900  # rows a second: scenario 1's sync invocations
KEEP = 1_000  # history.max_count's default


def make_rows(count: int) -> list[history.Row]:
    start = time.time()
    rows = []
    for i in range(count):
        at = start + i / RATE
        rows.append(history.sync_row(
            str(uuid.uuid4()), "ok", "ok", "webhook", "succeeded", 1, "success", at, at + 0.0003, 0.0003,
            None, None, None, None, False, b'{"statusCode":200,"body":"ok"}', False))
    return rows


def bare(path: Path, rows: list[history.Row], per_commit: int, prune: bool) -> float:
    """CPU seconds per row of writing ``rows`` with bare sqlite3."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    dialect = sqlite_dialect.dialect()
    conn.execute(str(CreateTable(invocations).compile(dialect=dialect)))
    for index in invocations.indexes:
        conn.execute(str(CreateIndex(index).compile(dialect=dialect)))
    prune_first = ("DELETE FROM router_invocations WHERE function = ? AND started_at < ?")
    prune_count = ("DELETE FROM router_invocations WHERE function = ? AND started_at <= (SELECT started_at "
                   "FROM router_invocations WHERE function = ? ORDER BY started_at DESC LIMIT 1 OFFSET ?)")
    statement = history.sqlite_upsert_sql(history.SQLITE_ROWS)
    every = int(PRUNE_EVERY * RATE)
    pruned_at = 0
    started = time.thread_time()
    for first in range(0, len(rows), per_commit):
        batch = rows[first:first + per_commit]
        conn.execute("BEGIN")
        for i in range(0, len(batch), history.SQLITE_ROWS):
            chunk = batch[i:i + history.SQLITE_ROWS]
            sql = statement if len(chunk) == history.SQLITE_ROWS else history.sqlite_upsert_sql(len(chunk))
            conn.execute(sql, tuple(itertools.chain.from_iterable(chunk)))
        if prune and first + len(batch) - pruned_at >= every:
            pruned_at = first + len(batch)
            conn.execute(prune_first, ("ok", batch[-1][8] - 86_400))
            conn.execute(prune_count, ("ok", "ok", KEEP))
        conn.execute("COMMIT")
    spent = time.thread_time() - started
    conn.close()
    return spent / len(rows)


async def through_store(path: Path, rows: list[history.Row]) -> float:
    """CPU seconds per row of ``StateStore.record_history`` with the router's batches."""
    store = StateStore.from_url(f"sqlite:///{path}", path.parent)
    await store.open()
    every = int(PRUNE_EVERY * RATE)
    pruned_at = 0
    try:
        started = time.process_time()
        for first in range(0, len(rows), BATCH):
            batch = rows[first:first + BATCH]
            prune = None
            if first + len(batch) - pruned_at >= every:
                pruned_at = first + len(batch)
                prune = {"ok": (time.time() - 86_400, KEEP)}
            await store.record_history([], prune=prune, rows=batch)
        spent = time.process_time() - started
    finally:
        await store.close()
    return spent / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="history-floor-") as tmp:
        work = Path(tmp)
        cases = [
            (f"bare sqlite3, {BATCH} rows a commit, pruned", lambda p, r: bare(p, r, BATCH, True)),
            ("bare sqlite3, 1,500 rows a commit, pruned", lambda p, r: bare(p, r, 1_500, True)),
            (f"bare sqlite3, {BATCH} rows a commit, not pruned", lambda p, r: bare(p, r, BATCH, False)),
            (f"router StateStore.record_history, {BATCH} rows a call, pruned",
             lambda p, r: asyncio.run(through_store(p, r))),
        ]
        for n, (label, run) in enumerate(cases):
            rows = make_rows(args.rows)
            per_row = run(work / f"case{n}.db", rows)
            print(f"{label:<60} {per_row * 1e6:6.1f} us CPU a row")


if __name__ == "__main__":
    main()
