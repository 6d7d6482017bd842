"""The invocation history's writer process (see ``history_process``, which starts it): reads frames from
stdin (a little-endian 4-byte length, then a pickle): first the SQL to run (a dict of
``history_process.Statements``' fields), then batches ``(rows, prune)``, each written in one transaction
and answered on stdout with ``ok`` or ``error ...``, one line a batch. Ends when its input does.

Stdlib only, and nothing it does not need (run as ``python -I -S history_writer.py``: ~12 MB).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import pickle
import signal
import sqlite3
import struct
import sys

_HEADER = struct.Struct("<I")


def _read_frame(stream: io.BufferedReader) -> object:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(head)
    body = stream.read(size)
    if len(body) < size:
        return None
    return pickle.loads(body)


class _Sql:
    """The statements, from the first frame."""

    def __init__(self, init: dict[str, object]) -> None:
        self.upsert_head = str(init["upsert_head"])
        self.upsert_group = str(init["upsert_group"])
        self.upsert_tail = str(init["upsert_tail"])
        self.rows_per_statement = int(str(init["rows_per_statement"]))
        self.prune_by_age = str(init["prune_by_age"])
        self.prune_by_count = str(init["prune_by_count"])


def _write_batch(db: sqlite3.Connection, sql: _Sql, rows: list[tuple[object, ...]],
                 prune: list[tuple[str, float, int]]) -> None:
    """The rows (upserts of ``rows_per_statement`` rows a statement) and the prunes, in one transaction
    that takes the write lock at its start (it never upgrades a read)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        step = sql.rows_per_statement
        for i in range(0, len(rows), step):
            chunk = rows[i:i + step]
            db.execute(sql.upsert_head + ", ".join([sql.upsert_group] * len(chunk)) + sql.upsert_tail,
                       tuple(itertools.chain.from_iterable(chunk)))
        for function, older_than, keep in prune:
            db.execute(sql.prune_by_age, {"p_function": function, "p_older_than": older_than})
            db.execute(sql.prune_by_count, {"p_function": function, "p_keep": keep})
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


def main() -> int:
    # It runs in a session of its own, so a terminal's Ctrl-C does not reach it; ignored all the same:
    # this process ends when its input does, after the batch it holds (the router sends the last ones
    # as it shuts down).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    assert isinstance(stdin, io.BufferedReader)
    init = _read_frame(stdin)
    if not isinstance(init, dict):
        return 2
    sql = _Sql(init)
    busy_ms = int(init["busy_timeout_ms"])
    db = sqlite3.connect(str(init["database"]), timeout=busy_ms / 1000, isolation_level=None)
    db.execute(f"PRAGMA busy_timeout={busy_ms}")
    db.execute(f"PRAGMA synchronous={init['synchronous']}")
    while True:
        batch = _read_frame(stdin)
        if not isinstance(batch, tuple):
            db.close()
            return 0
        try:
            _write_batch(db, sql, *batch)
        except Exception as exc:
            reply = f"error {type(exc).__name__}: {exc}".replace("\n", " ") + "\n"
            stdout.write(reply.encode("utf-8", "replace"))
        else:
            stdout.write(b"ok\n")
        stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
