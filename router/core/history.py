"""The invocation history recorder: what ran, when, how each attempt ended, kept in the state store.

Recording never waits for the store: each call (``accepted``, ``sync_done``, ``attempt_started``, ...)
appends a ``Change`` to a bounded in-memory buffer and returns. One background task, owned by the
recorder (``start`` / ``close``), writes the buffer in batches, one transaction per batch, and prunes
each function's rows by age and count (``history:`` of the function) as it writes, and every
``prune_interval`` all functions. A full buffer drops its oldest change and counts it
(``router_history_dropped_total{reason="buffer_full"}``); a batch the store refuses is dropped and counted
(``reason="store_error"``). ``close`` writes what is buffered, within its grace time.

Reads (``lookup``) go through the buffer: a change not written yet is already visible on this replica.
An async event still in the state store's queue is visible to every replica sharing the store, from the
moment its 202 is sent (its queue row is read with its history row).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
from typing import TYPE_CHECKING, Any

from router.clock import Clock, SystemClock
from router.config.models import RouterConfig
from router.core.attempt import DELIVERY_SOURCE
from router.invocation import Invocation, Result
from router.metrics import Metrics
from router.redaction import redact
from router.state.history import (
    CANCELLED,
    FINAL,
    QUEUED,
    RETRYING,
    RUNNING,
    Change,
    merge,
)

if TYPE_CHECKING:
    from router.state.store import StateStore

log = logging.getLogger("router.history")

LOG_TAIL = 4096
"""Characters of an invocation's logs kept: the last ones."""
RESULT_LIMIT = 64 * 1024
"""Bytes of a function's response kept; a longer one is cut and marked truncated."""
BUFFER = 10_000
"""Changes held in memory at most before the oldest are dropped."""
BATCH = 500
"""Changes written in one transaction at most."""
PRUNE_EVERY = 2.0
"""Seconds between two prunes of one function's rows while it is written (a busy function's table holds
at most its ``max_count`` plus what it ran in this time)."""


class HistoryRecorder:
    """Records invocations of the functions whose ``history.enabled`` is true (the default)."""

    def __init__(self, store: StateStore, config: RouterConfig, metrics: Metrics, *,
                 clock: Clock | None = None, capacity: int = BUFFER, batch: int = BATCH,
                 flush_interval: float = 0.5, prune_interval: float = 300.0) -> None:
        self._store = store
        self.reconfigure(config)
        self._metrics = metrics
        self._clock: Clock = clock or SystemClock()
        self._buffer: collections.deque[Change] = collections.deque()
        self._capacity = capacity
        self._batch = batch
        self._flush_interval = flush_interval
        self._prune_interval = prune_interval
        self._writing: list[Change] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Cancelled on this replica, newest last, at most BUFFER (RabbitMQ: the worker skips them; the
        # store answers for the others).
        self._cancelled: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._last_error = -math.inf  # when the last write error was logged (at most one a minute)
        self._pruned_at: dict[str, float] = {}  # function -> when its rows were last pruned (monotonic)

    def reconfigure(self, config: RouterConfig) -> None:
        """Take the functions' ``history:`` settings of ``config`` (at start, and at a reload)."""
        self._history = {name: fn.history for name, fn in config.functions.items()}
        self._on = {name for name, h in self._history.items() if h.enabled}
        self._amqp = config.async_queue is not None  # async events go to RabbitMQ

    def enabled(self, function: str) -> bool:
        return function in self._on

    # --- recording (never waits, never raises) ----------------------------------------------------------

    def _add(self, change: Change) -> None:
        if len(self._buffer) >= self._capacity:
            self._buffer.popleft()
            self._metrics.history_dropped.labels("buffer_full").inc()
        self._buffer.append(change)
        if not self._wake.is_set():
            self._wake.set()

    def _payload(self, function: str, payload: bytes) -> dict[str, Any]:
        h = self._history[function]
        if not h.payloads:
            return {}
        return {"payload": payload[:h.max_payload], "payload_truncated": len(payload) > h.max_payload}

    def accepted(self, inv: Invocation) -> None:
        """An async event was accepted (queued)."""
        if inv.function not in self._on:
            return
        create = {"route": inv.route, "source": inv.source, "invocation_type": "async",
                  "started_at": inv.enqueued_at, **self._payload(inv.function, inv.payload)}
        self._add(Change(inv.request_id, inv.function, self._clock.time(), QUEUED, create))

    def sync_done(self, inv: Invocation, result: Result, duration: float) -> None:
        """A sync invocation (a caller waiting, or a poller's batch) ended with ``result``."""
        if inv.function not in self._on:
            return
        ended = self._clock.time()
        started = ended - duration
        create = {"route": inv.route, "source": inv.source, "invocation_type": "sync", "started_at": started,
                  **self._payload(inv.function, inv.payload)}
        change = Change(inv.request_id, inv.function, ended, _final(result), create,
                        {"finished_at": ended, **_outcome(result, duration)},
                        _attempt(inv.attempt, started, ended, result), whole=True)
        self._add(change)

    def attempt_started(self, inv: Invocation) -> None:
        """An async event's attempt ``inv.attempt`` begins (status running)."""
        if inv.function not in self._on:
            return
        now = self._clock.time()
        create = {"route": inv.route, "source": inv.source, "invocation_type": "async",
                  "started_at": inv.enqueued_at, **self._payload(inv.function, inv.payload)}
        self._add(Change(inv.request_id, inv.function, now, RUNNING, create,
                         attempt={"attempt": inv.attempt, "started_at": now}))

    def attempt_ended(self, inv: Invocation, result: Result, duration: float) -> None:
        """An async event's attempt ended; its status follows with ``retrying`` or ``finished``."""
        if inv.function not in self._on:
            return
        now = self._clock.time()
        self._add(Change(inv.request_id, inv.function, now, None,
                         update=_outcome(result, duration),
                         attempt=_attempt(inv.attempt, now - duration, now, result)))

    def retrying(self, function: str, request_id: str) -> None:
        if function in self._on:
            self._add(Change(request_id, function, self._clock.time(), RETRYING))

    def finished(self, function: str, request_id: str, status: str) -> None:
        """An async event's end: ``succeeded``, ``failed`` or ``dropped``."""
        if function in self._on:
            now = self._clock.time()
            self._add(Change(request_id, function, now, status, update={"finished_at": now}))

    # --- reading and cancelling -------------------------------------------------------------------------

    def _buffered(self, request_id: str) -> list[Change]:
        return [c for c in (*self._writing, *self._buffer) if c.request_id == request_id]

    async def lookup(self, request_id: str) -> dict[str, Any] | None:
        """The invocation ``request_id`` as stored, with the changes not written yet and, while it waits
        in the state store's queue, its status there; None when unknown (or pruned)."""
        row, queued = await self._store.invocation(request_id, DELIVERY_SOURCE)
        for change in self._buffered(request_id):
            row = merge(row, change)
        if queued is not None and (row is None or row["status"] not in FINAL):
            if row is None:
                row = merge(None, Change(request_id, queued["function"], queued["enqueued_at"], QUEUED, {
                    "route": queued["route"], "source": queued["source"], "invocation_type": "async",
                    "started_at": queued["enqueued_at"]}))
            lease = queued["lease_until"]
            row["status"] = (RUNNING if lease is not None and lease > self._clock.time()
                             else RETRYING if queued["attempts"] > 0 else QUEUED)
            row["attempts"] = max(row["attempts"], queued["attempts"])
        return row

    async def invocations(self, **filters: Any) -> list[dict[str, Any]]:
        """Stored rows newest first (``StateStore.invocations``); changes still buffered are not in it."""
        return await self._store.invocations(**filters)

    async def cancel(self, request_id: str) -> tuple[str, dict[str, Any] | None]:
        """Cancel a queued or retrying async event: ``("cancelled", row)``; ``("running", row)`` or
        ``("finished", row)`` when it cannot be; ``("unknown", None)``."""
        row = await self.lookup(request_id)
        if row is None:
            return "unknown", None
        if row["status"] in FINAL:
            return "finished", row
        now = self._clock.time()
        change = Change(request_id, row["function"], now, CANCELLED, dict(row), {"finished_at": now})
        outcome = await self._store.cancel_queued(request_id, now=now, skip_source=DELIVERY_SOURCE,
                                                  change=change)
        if outcome == RUNNING:
            return "running", await self.lookup(request_id)
        if outcome is None:  # not in the state store's queue: in RabbitMQ, or just taken by a worker
            if not self._amqp or row["status"] == RUNNING:
                return ("running", row) if row["status"] == RUNNING else ("finished", row)
            self._cancelled[request_id] = None
            if len(self._cancelled) > BUFFER:
                self._cancelled.popitem(last=False)
            await self._store.mark_invocation(change)
        return "cancelled", await self.lookup(request_id)

    async def is_cancelled(self, request_id: str) -> bool:
        """Whether ``request_id`` was cancelled (RabbitMQ's events: checked before each attempt)."""
        if self._cancelled.pop(request_id, False) is None:  # taken now: the worker completes it
            return True
        row = (await self._store.invocation(request_id, DELIVERY_SOURCE))[0]
        return row is not None and row["status"] == CANCELLED

    # --- writing ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer task (owned here: ``close`` ends it)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="history-writer")

    async def close(self, grace: float = 5.0) -> None:
        """Stop the writer, then write what is buffered within ``grace`` seconds (the rest is dropped and
        counted)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            async with asyncio.timeout(grace):
                while self._buffer:
                    await self._flush()
        except TimeoutError:
            pass
        if self._buffer:
            self._metrics.history_dropped.labels("shutdown").inc(len(self._buffer))
            log.warning("invocation history: %d changes not written at shutdown", len(self._buffer))
            self._buffer.clear()

    async def _run(self) -> None:
        next_prune = self._clock.monotonic()
        while True:
            if not self._buffer:
                self._wake.clear()
                wait = max(0.0, next_prune - self._clock.monotonic())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
            if self._buffer:
                await self._clock.sleep(self._flush_interval)  # gather a batch
                # What is there now, in batches; what arrives meanwhile waits for the next round (one
                # commit per interval, not a stream of small ones).
                left = len(self._buffer)
                while left > 0 and self._buffer:
                    left -= await self._flush()
            if self._clock.monotonic() >= next_prune:
                await self._prune_all()
                next_prune = self._clock.monotonic() + self._prune_interval

    def _limits(self, functions: set[str]) -> dict[str, tuple[float, int]]:
        now = self._clock.time()
        return {f: (now - self._history[f].max_age, self._history[f].max_count)
                for f in functions if f in self._history}

    async def _flush(self) -> int:
        """Write the oldest changes (one batch) in one transaction; how many were taken."""
        batch = [self._buffer.popleft() for _ in range(min(self._batch, len(self._buffer)))]
        for change in batch:
            logs = change.update.get("logs")
            if logs:
                change.update["logs"] = redact(logs)[-LOG_TAIL:]
        self._writing = batch
        try:
            prune = self._limits(self._due({c.function for c in batch}))
            await self._store.record_history(batch, prune=prune)
        except asyncio.CancelledError:
            self._buffer.extendleft(reversed(batch))  # written again by close (rewriting one is harmless)
            raise
        except Exception as exc:
            self._metrics.history_dropped.labels("store_error").inc(len(batch))
            if self._clock.monotonic() - self._last_error > 60.0:
                self._last_error = self._clock.monotonic()
                log.error("invocation history: cannot write %d changes, they are dropped: %s",
                          len(batch), exc)
        finally:
            self._writing = []
        return len(batch)

    def _due(self, functions: set[str]) -> set[str]:
        """Those of ``functions`` not pruned in the last ``PRUNE_EVERY`` seconds: a busy function's rows
        are pruned as they are written, but not at every flush (a prune costs about a flush's writes)."""
        now = self._clock.monotonic()
        due = {f for f in functions if now - self._pruned_at.get(f, -math.inf) >= PRUNE_EVERY}
        for f in due:
            self._pruned_at[f] = now
        return due

    async def _prune_all(self) -> None:
        try:
            await self._store.prune_history(self._limits(set(self._on)))
        except Exception as exc:
            log.warning("invocation history: cannot prune: %s", exc)


def _final(result: Result) -> str:
    return "succeeded" if result.ok else "failed"


def _outcome(result: Result, duration: float) -> dict[str, Any]:
    """The columns one ended attempt sets: duration, logs tail, response or error."""
    payload = result.payload
    out: dict[str, Any] = {
        "duration": duration, "result": payload[:RESULT_LIMIT],
        "result_truncated": len(payload) > RESULT_LIMIT,
        "error_type": None, "error_message": None,
    }
    if result.logs:
        out["logs"] = result.logs[-2 * LOG_TAIL:]  # redacted, then cut to LOG_TAIL, when written
    if not result.ok:
        body = result._error_object() or {}
        out["error_type"] = str(body.get("errorType") or result.outcome.value)[:128]
        out["error_message"] = result.error_message(1000)
    return out


def _attempt(number: int, started: float, ended: float, result: Result) -> dict[str, Any]:
    entry: dict[str, Any] = {"attempt": number, "started_at": started, "ended_at": ended,
                             "outcome": result.outcome.value}
    if not result.ok:
        body = result._error_object() or {}
        entry["error_type"] = str(body.get("errorType") or result.outcome.value)[:128]
        entry["error_message"] = result.error_message(1000)
    return entry
