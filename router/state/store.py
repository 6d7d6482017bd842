"""The SQL state store (SQLite by default, PostgreSQL for several replicas): the durable async queue."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL

from router.errors import StateStoreError
from router.state import checkpoints, controls, failures, history, leases, schedule_fires
from router.state.errors import describe
from router.state.failures import FailedEvent, FailureFilter
from router.state.history_process import HistoryProcess, HistoryProcessFailed, Statements
from router.state.leases import Lease, LeaseToken
from router.state.runner import AsyncEngineRunner, Runner, SqliteRunner, Transaction, Undo
from router.state.schema import async_events, create_tables
from router.state.url import POSTGRESQL, SQLITE, dialect_of, engine_url, redact
from router.state.versions import VersionRow
from router.state.writer import GroupCommitWriter, Seal

log = logging.getLogger("router.state")

T = TypeVar("T")

_SQLITE_BUSY_TIMEOUT = 30.0  # seconds a connection waits for another's write lock before failing
_PING_TIMEOUT = 5.0
_MIN_CONNECT_TIMEOUT = 5.0
DEFAULT_WRITE_TIMEOUT = 5.0
_SYNCHRONOUS = {"fsync": "FULL", "normal": "NORMAL"}


@dataclass(slots=True)
class QueuedEvent:
    id: int  # store-assigned
    function: str
    request_id: str  # the invocation's id, same across retries
    payload: bytes  # event JSON bytes
    source: str  # metric label (webhook, schedule, invoke_api, function, ...)
    route: str | None
    attempts: int  # attempts already made (0 when new)
    enqueued_at: float  # epoch seconds of first acceptance (for max_event_age)
    available_at: float  # epoch seconds when it may be claimed
    trace: str | None = None  # the X-Ray trace header it came with (router.lineage)
    qualifier: str | None = None  # the version or alias it was invoked with (None: $LATEST)


_t = async_events
_EVENT_COLUMNS = (
    _t.c.id, _t.c.function, _t.c.request_id, _t.c.payload, _t.c.source, _t.c.route, _t.c.attempts,
    _t.c.enqueued_at, _t.c.available_at, _t.c.trace, _t.c.qualifier,
)

# Statements are built once, with bound parameters: each call only looks up the compiled form.
_INSERT = sa.insert(_t)
_CLAIMABLE = (
    sa.select(_t.c.id)
    .where(
        _t.c.function == sa.bindparam("p_function"),
        _t.c.available_at <= sa.bindparam("p_now"),
        sa.or_(_t.c.lease_until.is_(None), _t.c.lease_until <= sa.bindparam("p_now")),
    )
    .order_by(_t.c.available_at, _t.c.id)
    .limit(sa.bindparam("p_limit", type_=sa.Integer()))
    .with_for_update(skip_locked=True)  # rendered on PostgreSQL only
)
_CLAIM = (
    sa.update(_t).where(_t.c.id.in_(_CLAIMABLE)).values(lease_until=sa.bindparam("p_lease_until"))
    .returning(*_EVENT_COLUMNS)
)
_COMPLETE = sa.delete(_t).where(_t.c.id == sa.bindparam("p_event_id"))
_RETRY_LATER = (
    sa.update(_t).where(_t.c.id == sa.bindparam("p_event_id"))
    .values(lease_until=None, available_at=sa.bindparam("p_available_at"),
            attempts=sa.bindparam("p_attempts"))
)
_RELEASE = sa.update(_t).where(_t.c.id == sa.bindparam("p_event_id")).values(lease_until=None)
_RELEASE_MANY = (
    sa.update(_t).where(_t.c.id.in_(sa.bindparam("p_event_ids", expanding=True))).values(lease_until=None)
)
_RELEASE_ALL = sa.update(_t).where(_t.c.lease_until.is_not(None)).values(lease_until=None)
_DEPTH = (
    sa.select(_t.c.function, sa.func.count()).where(_t.c.lease_until.is_(None)).group_by(_t.c.function)
)
# When an event is next claimable: the earliest unleased one (the claim index finds it at once) or the
# earliest lease to run out (the partial index holds only leased rows), never a scan of the backlog.
_unleased = (
    sa.select(sa.func.min(_t.c.available_at).label("at"))
    .where(_t.c.function == sa.bindparam("p_function"), _t.c.lease_until.is_(None))
)
_leased = (
    sa.select(sa.func.min(sa.case(
        (_t.c.lease_until > _t.c.available_at, _t.c.lease_until), else_=_t.c.available_at,
    )).label("at"))
    .where(_t.c.function == sa.bindparam("p_function"), _t.c.lease_until.is_not(None))
)
_either = sa.union_all(_unleased, _leased).subquery()
_NEXT_AVAILABLE = sa.select(sa.func.min(_either.c.at))
_PING = sa.text("SELECT 1")


class StateStore:
    """Durable async event queue in SQLite or PostgreSQL; time is always passed in by the caller.

    ``open()`` connects, creates the tables and starts the group-commit writer; ``close()`` commits or
    fails pending enqueues and disconnects. Safe for many concurrent callers in one event loop. On
    SQLite every transaction runs whole in one thread that owns the connection (see ``runner``).
    """

    def __init__(
        self, url: URL, *, schema: str | None = None, close_timeout: float = 10.0, shown: str | None = None,
        durability: str = "fsync", write_timeout: float = DEFAULT_WRITE_TIMEOUT,
    ) -> None:
        """``url`` is an async engine URL; ``shown`` is how messages name it (default: ``url``).

        ``durability`` (SQLite): ``fsync`` commits with synchronous=FULL, ``normal`` with NORMAL.
        ``write_timeout``: longest ``enqueue`` waits for its commit before ``StateStoreUnavailable``.
        """
        self._url = url
        self._dialect = dialect_of(url)
        self._where = f"state {redact(shown or url)}"
        if schema is not None and self._dialect != POSTGRESQL:
            raise StateStoreError(f"{self._where}: a schema applies to PostgreSQL only")
        if durability not in _SYNCHRONOUS:
            raise StateStoreError(f"{self._where}: durability must be fsync or normal, got {durability!r}")
        self._schema = schema
        self._close_timeout = close_timeout
        self._synchronous = _SYNCHRONOUS[durability]
        self._write_timeout = write_timeout
        self._runner: Runner | None = None
        self._writer: GroupCommitWriter | None = None
        self._history_process: HistoryProcess | None = None
        # The SQLite file another process can open for the history's writes (not an in-memory database)
        database = url.database or ""
        self._history_file = (os.path.abspath(database) if self._dialect == SQLITE and database
                              and database != ":memory:" and not database.startswith("file:") else None)

    @classmethod
    def from_url(
        cls, url: str, base_dir: Path, *, schema: str | None = None, durability: str = "fsync",
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
    ) -> StateStore:
        """``sqlite:///rel/path`` (relative to ``base_dir``), ``sqlite:////abs/path``, ``postgresql://...``.

        ``schema`` (PostgreSQL only) keeps the tables in that schema, created when missing.
        Raises ``StateStoreError`` for a URL it cannot use.
        """
        try:
            return cls(engine_url(url, base_dir), schema=schema, shown=url, durability=durability,
                       write_timeout=write_timeout)
        except ValueError as exc:
            raise StateStoreError(str(exc)) from None

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._dialect

    @property
    def shared(self) -> bool:
        """Whether other routers may write to this store (replicas on PostgreSQL). A SQLite file serves
        one router (``replica_lock``): what is in it, this process wrote."""
        return self._dialect != SQLITE

    # --- lifecycle ------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, create missing tables and start the writer; raises ``StateStoreError``."""
        if self._runner is not None:
            return
        runner = await self._create_runner()
        schema, where = self._schema, self._where
        try:
            await runner.transact(lambda conn: create_tables(conn, schema=schema, where=where))
        except BaseException as exc:  # also on cancellation: never leave the pool or thread behind
            await runner.close()
            if isinstance(exc, Exception) and not isinstance(exc, StateStoreError):
                raise StateStoreError(
                    f"{self._where}: cannot open ({describe(exc)}); {self._hint()}"
                ) from exc
            raise
        self._runner = runner
        def insert(rows: list[dict[str, Any]], seal: Seal) -> Awaitable[None]:
            def transaction(conn: sa.Connection) -> None:
                conn.execute(_INSERT, rows)
                seal()  # after the insert, before the commit: withdrawn rows are never committed

            return runner.transact(transaction)

        self._writer = GroupCommitWriter(insert, where=self._where, timeout=self._write_timeout)
        self._writer.start()
        if self._history_file is not None:
            self._history_process = HistoryProcess(Statements(
                database=self._history_file, synchronous=self._synchronous,
                busy_timeout_ms=int(_SQLITE_BUSY_TIMEOUT * 1000), **history.sqlite_statements(),
            ), where=self._where)

    async def close(self, *, grace: float | None = None) -> None:
        """Commit queued enqueues and disconnect.

        Enqueues not committed within ``grace`` seconds (default: the store's ``close_timeout``) fail
        with ``StateStoreError``; no caller is left waiting.
        """
        runner, self._runner = self._runner, None
        writer, self._writer = self._writer, None
        history_process, self._history_process = self._history_process, None
        try:
            if writer is not None:
                await writer.stop(self._close_timeout if grace is None else grace)
        finally:
            try:
                if history_process is not None:
                    await history_process.close(self._close_timeout if grace is None else grace)
            finally:
                if runner is not None:
                    await runner.close()

    async def ping(self) -> bool:
        """True when the database answers a trivial query (for /readyz)."""
        if self._runner is None:
            return False
        try:
            async with asyncio.timeout(_PING_TIMEOUT):
                await self._runner.transact(lambda conn: conn.execute(_PING).all())
        except Exception as exc:
            log.warning("%s: ping failed (%s)", self._where, describe(exc))
            return False
        return True

    # --- the async queue ------------------------------------------------------------------------------

    async def enqueue(
        self, *, function: str, request_id: str, payload: bytes, source: str, route: str | None,
        now: float, trace: str | None = None, qualifier: str | None = None,
    ) -> None:
        """Persist one new event; durable (committed) when this returns. Raises ``StateStoreError``:
        ``StateStoreUnavailable`` when it was not committed within ``write_timeout`` (it was then
        withdrawn: not accepted), could not be written, or the store is closing."""
        if self._writer is None:
            raise StateStoreError(f"{self._where}: the store is not open; the event was not accepted")
        await self._writer.submit({
            "function": function, "request_id": request_id, "payload": payload, "source": source,
            "route": route, "attempts": 0, "enqueued_at": now, "available_at": now, "lease_until": None,
            "trace": trace,
            "qualifier": qualifier,
        })

    async def claim(self, function: str, limit: int, now: float, lease: float) -> list[QueuedEvent]:
        """Lease up to ``limit`` claimable events of ``function`` until ``now + lease``, oldest first.

        One UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING statement: on PostgreSQL the SELECT
        has FOR UPDATE SKIP LOCKED, so concurrent replicas never claim the same row; on SQLite the
        statement takes the database's single write lock when it starts (what BEGIN IMMEDIATE would do),
        so two processes serialise instead of both reading the same rows. On SQLite a claim whose caller
        is cancelled after it started is handed back (its leases released) once it commits.
        """
        if limit <= 0:
            return []
        params = {"p_function": function, "p_now": now, "p_limit": limit, "p_lease_until": now + lease}

        def claim(conn: sa.Connection) -> list[QueuedEvent]:
            return [
                QueuedEvent(
                    id=int(r.id), function=r.function, request_id=r.request_id, payload=bytes(r.payload),
                    source=r.source, route=r.route, attempts=int(r.attempts),
                    enqueued_at=float(r.enqueued_at), available_at=float(r.available_at),
                    trace=r.trace, qualifier=r.qualifier,
                )
                for r in conn.execute(_CLAIM, params)
            ]

        events = await self._transact("claim", claim, undo=_release_claimed)
        events.sort(key=lambda e: (e.available_at, e.id))  # RETURNING has no defined order
        return events

    async def complete(self, event_id: int) -> None:
        """Delete a delivered (or dead-lettered) event."""
        await self._transact("complete", lambda conn: conn.execute(_COMPLETE, {"p_event_id": event_id}))

    async def retry_later(self, event_id: int, *, available_at: float, attempts: int) -> None:
        """Unlease an event and make it claimable again at ``available_at`` with ``attempts`` recorded."""
        params = {"p_event_id": event_id, "p_available_at": available_at, "p_attempts": attempts}
        await self._transact("retry", lambda conn: conn.execute(_RETRY_LATER, params))

    async def release(self, event_id: int) -> None:
        """Unlease an event without counting an attempt (handed back on shutdown)."""
        await self._transact("release", lambda conn: conn.execute(_RELEASE, {"p_event_id": event_id}))

    async def release_all_leases(self) -> int:
        """Unlease every event; returns how many were leased. For the start of a single SQLite replica."""
        return await self._transact("release leases", lambda conn: int(conn.execute(_RELEASE_ALL).rowcount))

    async def depth(self) -> dict[str, int]:
        """Unleased events per function; functions with none are absent."""
        return await self._transact(
            "depth", lambda conn: {function: int(count) for function, count in conn.execute(_DEPTH)}
        )

    async def next_available_at(self, function: str) -> float | None:
        """When an event of ``function`` is next claimable; None when it has none.

        An unleased event is claimable at its ``available_at``; a leased one when its lease runs out (a
        crashed replica's events come back then), so a worker that sleeps until this time misses none.
        """
        value = await self._transact(
            "next available",
            lambda conn: conn.execute(_NEXT_AVAILABLE, {"p_function": function}).scalar_one_or_none(),
        )
        return None if value is None else float(value)

    # --- schedule fires --------------------------------------------------------------------------------

    async def claim_fire(self, route: str, fire_time: float, *, now: float, keep: float) -> bool:
        """Claim the tick of schedule ``route`` at ``fire_time``: True for exactly one caller among all
        replicas sharing this store. Rows older than ``keep`` seconds before the tick are pruned."""
        return await self._transact(
            "claim schedule fire", lambda conn: schedule_fires.claim(conn, route, fire_time, now, keep))

    async def last_fire(self, route: str) -> float | None:
        """The newest tick of schedule ``route`` fired by any replica, or None when it never fired."""
        return await self._transact("last schedule fire", lambda conn: schedule_fires.last(conn, route))

# --- internals ------------------------------------------------------------------------------------

    async def _transact(self, what: str, fn: Transaction[T], *, undo: Undo[T] | None = None) -> T:
        """Run ``fn`` in one transaction; database errors become ``StateStoreError``."""
        if self._runner is None:
            raise StateStoreError(f"{self._where}: {what}: the store is not open")
        try:
            return await self._runner.transact(fn, undo=undo)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise StateStoreError(f"{self._where}: {what}: {describe(exc)}") from exc

    def _hint(self) -> str:
        if self._dialect == SQLITE:
            return f"check that {self._url.database} is a writable SQLite database"
        return "check that PostgreSQL is running and the URL's host, port, user and database are right"

    async def _create_runner(self) -> Runner:
        options: dict[str, Any] = {"hide_parameters": True}  # errors never echo event payloads
        if self._schema is not None:
            options["execution_options"] = {"schema_translate_map": {None: self._schema}}
        if self._dialect != SQLITE:
            # A stalled connection fails each statement after the write timeout (asyncpg cancels it),
            # and the server aborts a transaction left idle that long, so a COMMIT delayed past the
            # caller's deadline is not applied late (see ``writer``).
            timeout = self._write_timeout
            options["connect_args"] = {
                "command_timeout": timeout, "timeout": max(timeout, _MIN_CONNECT_TIMEOUT),
                "server_settings": {"idle_in_transaction_session_timeout": str(math.ceil(timeout * 1000))},
            }
            return AsyncEngineRunner(self._url, pool_size=10, **options)
        path = Path(self._url.database or "")
        try:
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateStoreError(
                f"{self._where}: cannot create directory {path.parent} ({describe(exc)})"
            ) from exc
        runner = SqliteRunner(
            self._url, where=self._where, connect_args={"timeout": _SQLITE_BUSY_TIMEOUT}, **options
        )
        synchronous = self._synchronous
        sa.event.listen(runner.engine, "connect",
                        lambda conn, record: _sqlite_pragmas(conn, record, synchronous))
        return runner

    # --- stream checkpoints ---------------------------------------------------------------------------

    async def load_checkpoints(self, route: str) -> dict[str, str]:
        """Every checkpoint of ``route``: shard id -> last processed sequence number, or ``SHARD_END``."""
        return await self._transact("load checkpoints", lambda conn: checkpoints.load(conn, route))

    async def save_checkpoint(self, route: str, shard_id: str, sequence_number: str, *, now: float,
                              lease: LeaseToken | None = None) -> None:
        """Record that ``shard_id`` of ``route`` is processed up to ``sequence_number`` (or ``SHARD_END``,
        which also deletes the shard's lease); committed when this returns. With ``lease``, fenced: written
        only while that token holds the shard's lease, checked in the same transaction; raises
        ``router.state.leases.LeaseLost`` (nothing written) when another replica holds it now."""
        await self._transact(
            "save checkpoint",
            lambda conn: checkpoints.save(conn, route, shard_id, sequence_number, now, lease),
        )

    async def forget_checkpoints(self, route: str) -> int:
        """Delete every checkpoint of ``route`` (the stream was deleted and created anew); how many."""
        return await self._transact("forget checkpoints", lambda conn: checkpoints.forget(conn, route))

    # --- shard leases (``router.state.leases``) ----------------------------------------------------------

    async def ensure_leases(self, route: str, shard_ids: list[str]) -> int:
        """Create a free lease for each of ``shard_ids`` that has none; how many were created."""
        return await self._transact("create shard leases", lambda conn: leases.ensure(conn, route, shard_ids))

    async def load_leases(self, route: str) -> list[Lease]:
        """Every shard lease of ``route``."""
        return await self._transact("load shard leases", lambda conn: leases.load(conn, route))

    async def take_lease(self, route: str, shard_id: str, *, owner: str, seen: int, now: float,
                         duration: float) -> LeaseToken | None:
        """Take a free or expired lease whose counter is still ``seen``; its token, or None when another
        replica was first."""
        return await self._transact("take shard lease", lambda conn: leases.take(
            conn, route, shard_id, owner=owner, seen=seen, now=now, duration=duration))

    async def renew_leases(self, route: str, held: dict[str, LeaseToken], *, owner: str, now: float,
                           duration: float) -> dict[str, str | None]:
        """Extend the leases of ``held`` still held; shard id -> who asked for it (or None). A shard
        missing from the answer was lost."""
        return await self._transact("renew shard leases", lambda conn: leases.renew(
            conn, route, held, owner=owner, now=now, duration=duration))

    async def release_lease(self, route: str, shard_id: str, token: LeaseToken, *, now: float,
                            reserve: float = 0.0) -> None:
        """Free a held lease so another replica takes it at once (one that asked for it: kept for that
        one ``reserve`` seconds); ``LeaseLost`` when no longer held."""
        await self._transact("release shard lease", lambda conn: leases.release(
            conn, route, shard_id, token, now=now, reserve=reserve))

    async def ask_lease(self, route: str, lease: Lease, *, asker: str) -> bool:
        """Ask the live owner of ``lease`` to hand it over; False when it changed or was asked already."""
        return await self._transact("ask for a shard lease",
                                    lambda conn: leases.ask(conn, route, lease, asker=asker))

    async def free_leases(self, route: str) -> int:
        """Free every lease of ``route`` (a single SQLite replica starting); how many were held."""
        return await self._transact("free shard leases", lambda conn: leases.free_all(conn, route))

    async def forget_leases(self, route: str) -> int:
        """Delete every lease of ``route``; how many there were."""
        return await self._transact("forget shard leases", lambda conn: leases.forget(conn, route))

    # --- failed events (``router.state.failures``; issue 12: failed events, redrive) -----------------------

    async def keep_failure(self, row: dict[str, Any]) -> int:
        """Keep one failed event (the columns of ``router_failed_events`` but ``id``); its id."""
        return await self._transact("keep a failed event", lambda conn: failures.insert(conn, row))

    async def list_failures(self, f: FailureFilter, limit: int) -> list[FailedEvent]:
        """Kept failed events matching ``f``, newest first, without record and payload."""
        return await self._transact("list failed events", lambda conn: failures.select(conn, f, limit))

    async def get_failure(self, event_id: int) -> FailedEvent | None:
        """One kept failed event, whole."""
        return await self._transact("read a failed event", lambda conn: failures.get(conn, event_id))

    async def failure_redriven_as(self, request_id: str) -> FailedEvent | None:
        """The kept failed event redriven as ``request_id``, without record and payload; None: none."""
        return await self._transact("read a redriven failed event",
                                    lambda conn: failures.redrive_of(conn, request_id))

    async def claim_failures(self, f: FailureFilter, limit: int, new_ids: list[str]) -> list[FailedEvent]:
        """Claim failed events never redriven for a redrive (``redriven_as`` = the next of ``new_ids``)."""
        return await self._transact("claim failed events for a redrive",
                                    lambda conn: failures.claim(conn, f, limit, new_ids))

    async def failure_redriven(self, event_id: int, new_id: str, *, now: float) -> None:
        """The redrive ``new_id`` of failed event ``event_id`` was accepted."""
        await self._transact("mark a failed event redriven",
                             lambda conn: failures.accepted(conn, event_id, new_id, now))

    async def unclaim_failures(self, claims: list[tuple[int, str]]) -> int:
        """Undo redrive claims never submitted (``(event id, redrive id)`` pairs); how many."""
        return await self._transact("release redrive claims", lambda conn: failures.unclaim(conn, claims))

    async def purge_failures(self, f: FailureFilter) -> int:
        """Delete the kept failed events matching ``f``; how many."""
        return await self._transact("purge failed events", lambda conn: failures.delete(conn, f))

    async def prune_failures(self, *, older_than: float, keep: int) -> int:
        """Delete failed events older than ``older_than`` and beyond the newest ``keep``; how many."""
        return await self._transact("prune failed events",
                                    lambda conn: failures.prune(conn, older_than=older_than, keep=keep))
    # --- run-time controls (issue 12, pause/resume and Lambda's control API: ``router.state.controls``) ---

    async def load_controls(self) -> list[controls.ControlRow]:
        """Every route's and function's run-time settings stored."""
        return await self._transact("load controls", controls.load)

    async def save_control(self, row: controls.ControlRow) -> None:
        """Insert or replace one route's or function's run-time settings; committed when this returns."""
        await self._transact("save controls", lambda conn: controls.save(conn, row))


    # --- published function versions (issue 13: ``router.state.versions``) ---------------------------

    async def publish_version(self, *, function: str, code: bytes, code_sha256: str, config: str,
                              description: str, now: float) -> tuple[VersionRow, bool]:
        """Store the next version of ``function`` (or return the latest, unchanged); (row, created)."""
        from router.state import versions

        return await self._transact("publish a version", lambda conn: versions.publish(
            conn, function=function, code=code, code_sha256=code_sha256, config=config,
            description=description, now=now))

    async def list_versions(self, function: str | None = None) -> list[VersionRow]:
        """The published versions of ``function`` (of every function when None), oldest first."""
        from router.state import versions

        return await self._transact("list versions", lambda conn: versions.list_versions(conn, function))

    async def get_version(self, function: str, version: int) -> VersionRow | None:
        from router.state import versions

        return await self._transact("read a version", lambda conn: versions.get(conn, function, version))

    async def version_code(self, function: str, version: int) -> bytes | None:
        """The code zip of a version, or None when there is none."""
        from router.state import versions

        return await self._transact("read a version's code",
                                    lambda conn: versions.code(conn, function, version))

    # --- invocation history (issue 12, part h1: ``router.state.history``) -------------------------------

    async def record_history(self, changes: list[history.Change],
                             prune: dict[str, tuple[float, int]] | None = None,
                             rows: Sequence[history.Row] = ()) -> set[str]:
        """Write ``rows`` (whole rows made already) and apply ``changes`` to their history rows in one
        transaction (``history.write``), then prune the functions in ``prune`` (name -> (older than,
        rows kept)); the functions touched.

        On SQLite, a batch of whole rows and prunes alone goes to the history's own writer process
        (``history_process``: no GIL shared with the event loop); written here when that process
        cannot take it."""
        if self._history_process is not None and not changes:
            try:
                await self._history_process.write(
                    rows, [(f, older, keep) for f, (older, keep) in (prune or {}).items()])
            except HistoryProcessFailed:
                pass  # written below (a whole row's upsert is idempotent)
            else:
                return {r[1] for r in rows}

        def transaction(conn: sa.Connection) -> set[str]:
            touched = history.write(conn, changes, rows)
            for function, (older_than, keep) in (prune or {}).items():
                history.prune(conn, function, older_than=older_than, keep=keep)
            return touched

        return await self._transact("record invocation history", transaction)

    async def prune_history(self, limits: dict[str, tuple[float, int]]) -> int:
        """Prune each function's history rows (name -> (older than, rows kept)); how many were deleted."""
        return await self._transact("prune invocation history", lambda conn: sum(
            history.prune(conn, f, older_than=o, keep=k) for f, (o, k) in limits.items()))

    async def invocation(self, request_id: str, skip_source: str
                         ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The history row and the async queue row of ``request_id`` (either may be None)."""
        return await self._transact("read an invocation",
                                    lambda conn: history.lookup(conn, request_id, skip_source))

    async def invocations(self, *, function: str | None = None, route: str | None = None,
                          status: str | None = None, limit: int = 50,
                          before: tuple[float, str] | None = None, queued_source: str | None = None,
                          now: float | None = None) -> list[dict[str, Any]]:
        """History rows newest first, filtered and paged, with the queue's waiting events when
        ``queued_source`` is given (``history.recent``)."""
        at = time.time() if now is None else now
        return await self._transact("list invocations", lambda conn: history.recent(
            conn, function=function, route=route, status=status, limit=limit, before=before,
            queued_source=queued_source, now=at))

    async def cancel_queued(self, request_id: str, *, now: float, skip_source: str,
                            change: history.Change) -> str | None:
        """Cancel a waiting async event of the state store's queue with its history row, atomically:
        ``"cancelled"``, ``"running"`` (a worker holds it) or None (not in the queue)."""
        return await self._transact("cancel an async event", lambda conn: history.cancel_queued(
            conn, request_id, now=now, skip_source=skip_source, change=change))

    async def mark_invocation(self, change: history.Change) -> dict[str, Any]:
        """Apply one history change at once (not batched); the row after it."""
        return await self._transact("mark an invocation", lambda conn: history.mark(conn, change))


def _release_claimed(events: list[QueuedEvent]) -> Transaction[object] | None:
    """The transaction that hands back a claim whose caller went away (``undo`` of ``claim``)."""
    if not events:
        return None
    ids = [e.id for e in events]
    return lambda conn: conn.execute(_RELEASE_MANY, {"p_event_ids": ids})


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, synchronous: str) -> None:
    # WAL: readers never block the writer and vice versa. synchronous=FULL (durability: fsync) fsyncs
    # the WAL at every commit, so an accepted event survives an OS crash or power loss; NORMAL
    # (durability: normal) leaves the commit in the OS page cache: it survives the process being
    # SIGKILLed, but an OS crash or power loss can undo the last commits.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={int(_SQLITE_BUSY_TIMEOUT * 1000)}")
    finally:
        cursor.close()

