"""Tables of the state store and their creation at open, with a schema version row for migrations."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.schema import CreateIndex, CreateSchema, CreateTable

from router.errors import StateStoreError

SCHEMA_VERSION = 5
"""Bump when a table changes, and add the migration from the previous version to ``create_tables``.

2: ``router_checkpoints`` (stream checkpoints), ``router_schedule_fires`` (one claim per schedule tick).
   New tables only: ``create_tables`` creates missing tables
   (CREATE TABLE IF NOT EXISTS), so a version-1 database migrates by opening it; the stored version is
   then raised to 2 by ``create_tables``.
3: ``router_shard_leases`` (which replica reads each shard of a stream route). A new table only: a
   version-2 database migrates by opening it, the same way.
4: ``router_failed_events`` (failed events kept for inspection and redrive), ``router_controls``
   (routes paused, functions' reserved concurrency and event invoke overrides set at run time) and
   ``router_invocations`` (invocation history, ``router.state.history``). New tables only: a version-3
   database migrates by opening it, the same way.
5: ``router_function_versions`` (published versions: code zip and config, ``router.state.versions``),
   ``router_async_events.qualifier`` and ``router_failed_events.qualifier`` (the version or alias an
   async event was invoked with, kept for a redrive) and
   ``router_async_events.trace`` (the X-Ray trace header an async event came with: the hop count of
   recursive loop detection, ``router.lineage``). Opening a version-4 database creates the table and adds
   the columns (``_add_missing_columns``).

An index added to an existing table needs no bump: ``create_tables`` creates the missing ones (CREATE
INDEX IF NOT EXISTS) at every open, as ``router_failed_events_redriven_as`` was on schema 5 (the table is
bounded by ``state.failures.max_count``, so the build is short), and an older router ignores it."""

# Any constant: serialises table creation between replicas opening the same PostgreSQL database at once
# (concurrent CREATE TABLE IF NOT EXISTS can fail there on the catalog's unique index).
_PG_CREATE_LOCK = 0x726F75746572  # "router"

metadata = sa.MetaData()

# Epoch seconds are stored as double precision: sub-millisecond resolution well past year 2100.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: INTEGER PRIMARY KEY is the rowid

meta = sa.Table(
    "router_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

async_events = sa.Table(
    "router_async_events",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("function", sa.String(64), nullable=False),
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("payload", sa.LargeBinary(), nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("route", sa.String(128), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False, default=0),
    sa.Column("enqueued_at", sa.Double(), nullable=False),
    sa.Column("available_at", sa.Double(), nullable=False),
    sa.Column("lease_until", sa.Double(), nullable=True),  # NULL: not handed out
    sa.Column("trace", sa.String(512), nullable=True),  # X-Ray trace header (router.lineage); schema 5
    sa.Column("qualifier", sa.String(128), nullable=True),  # a version or alias (NULL: $LATEST); schema 5
    sa.Index("router_async_events_claim", "function", "available_at"),
)
_leased = async_events.c.lease_until.is_not(None)
_LEASED_INDEX = sa.Index(  # only the leased rows (few: those in flight), for when the next lease runs out
    "router_async_events_leased",
    async_events.c.function, async_events.c.lease_until, async_events.c.available_at,  # covering
    sqlite_where=_leased,  # postgresql_where: set by create_tables (see there)
)

checkpoints = sa.Table(  # stream routes: the last sequence number processed of each shard (or SHARD_END)
    "router_checkpoints",
    metadata,
    sa.Column("route", sa.String(128), primary_key=True),
    sa.Column("shard_id", sa.String(256), primary_key=True),
    sa.Column("sequence_number", sa.String(128), nullable=False),
    sa.Column("updated_at", sa.Double(), nullable=False),
)

schedule_fires = sa.Table(  # schedule routes: one row per nominal tick fired (claimed by one replica)
    "router_schedule_fires",
    metadata,
    sa.Column("route", sa.String(128), primary_key=True),
    sa.Column("fire_time", sa.Double(), primary_key=True),  # the tick's nominal time, epoch seconds
    sa.Column("fired_at", sa.Double(), nullable=False),
)

shard_leases = sa.Table(  # stream routes: which replica reads each shard (``router.state.leases``)
    "router_shard_leases",
    metadata,
    sa.Column("route", sa.String(128), primary_key=True),
    sa.Column("shard_id", sa.String(256), primary_key=True),
    sa.Column("owner", sa.String(256), nullable=True),  # the replica id; NULL: free to take
    sa.Column("counter", sa.BigInteger(), nullable=False),  # +1 at every change of owner: the fencing token
    sa.Column("lease_until", sa.Double(), nullable=True),  # epoch seconds; the owner renews it
    sa.Column("handoff", sa.String(256), nullable=True),  # a replica that asked the owner to hand it over
)

failed_events = sa.Table(  # async events and stream records given up, kept to inspect and redrive
    "router_failed_events",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("function", sa.String(64), nullable=False),
    sa.Column("route", sa.String(128), nullable=True),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("request_id", sa.String(64), nullable=False),  # the original invocation's
    sa.Column("condition", sa.String(64), nullable=False),  # RetriesExhausted, EventAgeExceeded, ...
    sa.Column("record", sa.Text(), nullable=False),  # the destination / failure record as JSON
    sa.Column("payload", sa.LargeBinary(), nullable=False),  # what a redrive invokes the function with
    sa.Column("failed_at", sa.Double(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("error_type", sa.String(128), nullable=True),
    sa.Column("error_message", sa.Text(), nullable=True),
    sa.Column("redriven_as", sa.String(64), nullable=True),  # the redrive's request id; NULL: not redriven
    sa.Column("redriven_at", sa.Double(), nullable=True),  # when the redrive was accepted (NULL: pending)
    sa.Column("qualifier", sa.String(128), nullable=True),  # the version or alias it ran as; schema 5
    sa.Index("router_failed_events_failed_at", "failed_at"),
    sa.Index("router_failed_events_function", "function", "failed_at"),
    sa.Index("router_failed_events_redriven_as", "redriven_as"),  # a redrive's event: GET /invocations/{id}
)


controls = sa.Table(  # what operators changed at run time (``router.state.controls``); NULL: as the config
    "router_controls",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),  # "route" or "function"
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("enabled", sa.Boolean(), nullable=True),  # routes: False while paused
    sa.Column("reserved_concurrency", sa.Integer(), nullable=True),  # functions: 0 pauses
    sa.Column("maximum_retry_attempts", sa.Integer(), nullable=True),  # functions: async retries
    sa.Column("maximum_event_age", sa.Double(), nullable=True),  # functions: seconds
    sa.Column("updated_at", sa.Double(), nullable=False),
)

invocations = sa.Table(  # invocation history: one row per request id (``router.state.history``)
    "router_invocations",
    metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("function", sa.String(64), nullable=False),
    sa.Column("route", sa.String(128), nullable=True),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("invocation_type", sa.String(8), nullable=False),  # sync | async
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("attempt_log", sa.Text(), nullable=False),  # JSON list: each attempt's times and error
    sa.Column("started_at", sa.Double(), nullable=False),  # accepted (async) or started (sync), epoch s
    sa.Column("updated_at", sa.Double(), nullable=False),
    sa.Column("finished_at", sa.Double(), nullable=True),
    sa.Column("duration", sa.Double(), nullable=True),  # seconds, the last attempt's
    sa.Column("error_type", sa.String(128), nullable=True),
    sa.Column("error_message", sa.Text(), nullable=True),
    sa.Column("logs", sa.Text(), nullable=True),  # the last 4 KB, redacted
    sa.Column("payload", sa.LargeBinary(), nullable=True),  # only with history.payloads
    sa.Column("payload_truncated", sa.Boolean(), nullable=False, default=False),
    sa.Column("result", sa.LargeBinary(), nullable=True),  # the response, capped
    sa.Column("result_truncated", sa.Boolean(), nullable=False, default=False),
    sa.Index("router_invocations_recent", "function", "started_at"),
    # No index on started_at alone: every row written pays for each index, and only the unfiltered
    # newest-first list (bounded by retention) would use it.
)


function_versions = sa.Table(  # published versions (``router.state.versions``): immutable once written
    "router_function_versions",
    metadata,
    sa.Column("function", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),  # 1, 2, ...
    sa.Column("code_sha256", sa.String(64), nullable=False),  # base64 SHA-256 of ``code`` (CodeSha256)
    sa.Column("code_size", sa.Integer(), nullable=False),
    sa.Column("config", sa.Text(), nullable=False),  # the function's config as JSON, at publish time
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("code", sa.LargeBinary(), nullable=False),  # the deterministic zip of the code directory
    sa.Column("published_at", sa.Double(), nullable=False),
)


def create_tables(conn: sa.Connection, *, schema: str | None, where: str) -> None:
    """Create missing tables in one transaction and check or write the schema version.

    ``conn`` must be inside a transaction; ``where`` prefixes error messages.
    """
    if conn.dialect.name == "postgresql":
        # Given here, not where the index is defined: a postgresql_* argument loads SQLAlchemy's
        # PostgreSQL dialect, ~2 MB of a router on SQLite's idle memory.
        _LEASED_INDEX.dialect_kwargs["postgresql_where"] = _leased
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_CREATE_LOCK)))
        if schema is not None:
            conn.execute(CreateSchema(schema, if_not_exists=True))
    for table in metadata.sorted_tables:
        conn.execute(CreateTable(table, if_not_exists=True))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            conn.execute(CreateIndex(index, if_not_exists=True))
    insert = dialect_insert(conn.dialect.name)
    conn.execute(
        insert(meta).values(key="schema_version", value=str(SCHEMA_VERSION)).on_conflict_do_nothing()
    )
    stored = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar_one()
    if not stored.isdigit() or int(stored) > SCHEMA_VERSION:
        raise StateStoreError(
            f"{where}: schema version {stored} is newer than this router understands "
            f"({SCHEMA_VERSION}); upgrade the router or point state: at another database"
        )
    if int(stored) < SCHEMA_VERSION:  # the missing tables were created above: that is the migration
        _add_missing_columns(conn, schema)
        conn.execute(
            sa.update(meta).where(meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION))
        )


_ADDED_COLUMNS = ((async_events, "qualifier"), (async_events, "trace"), (failed_events, "qualifier"))
"""Columns added to existing tables after their creation (schema 5): added when missing."""


def _add_missing_columns(conn: sa.Connection, schema: str | None) -> None:
    """ALTER TABLE ... ADD COLUMN for each of ``_ADDED_COLUMNS`` a table of an older schema lacks."""
    inspector = sa.inspect(conn)
    quote = conn.dialect.identifier_preparer
    for table, name in _ADDED_COLUMNS:
        have = {c["name"] for c in inspector.get_columns(table.name, schema=schema)}
        if name in have:
            continue
        kind = table.c[name].type.compile(dialect=conn.dialect)
        where = quote.quote(table.name)
        if schema is not None:
            where = f"{quote.quote_schema(schema)}.{where}"
        conn.execute(sa.text(f"ALTER TABLE {where} ADD COLUMN {quote.quote(name)} {kind}"))


def dialect_insert(dialect: str) -> Any:
    """The dialect's INSERT construct (it has ``on_conflict_do_nothing`` and ``on_conflict_do_update``).
    PostgreSQL's is imported when it is asked for: a router on SQLite never loads that dialect (~2 MB of
    its idle memory)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert

        return insert
    return sqlite_insert
