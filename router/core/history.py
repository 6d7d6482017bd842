"""The invocation history recorder: what ran, when, how each attempt ended, kept in the state store.

Recording never waits for the store: each call (``accepted``, ``attempt_started``, ...) adds a ``Change``
to its invocation's entry in a bounded in-memory buffer and returns; ``sync_done``, the call the router
makes most, keeps the ended invocation's values as one tuple, whose row is made in the batch it is
written with. One background
task, owned by the recorder (``start`` / ``close``), writes the entries in batches, one transaction per
batch, and prunes each function's rows by age and count (``history:`` of the function) as it writes, and
every ``prune_interval`` all functions. A full buffer drops its oldest entry and counts its changes
(``router_history_dropped_total{reason="buffer_full"}``); a batch the store refuses is dropped and counted
(``reason="store_error"``). ``close`` writes what is buffered, within its grace time.

An invocation is written once where it can be: its entry is held until it is final or ``flush_interval``
old, and an entry that began with the whole row (a sync call, an async event accepted or first attempted
here) is written without reading the stored row back. An async event waiting in the state store's queue
is not written while it only waits: the queue's row says so (``lookup`` and ``invocations`` read it);
its history row is written once it runs (or ends without running). Ended sync invocations beyond their
function's ``max_count`` newest when a batch is taken are let go unwritten (``_retain``): the prune would
delete them as soon as they were written. A busy function (``BUSY`` or more of them pending at a flush)
has its rows written every ``BUSY_EVERY`` seconds, not at every flush: what the history costs is then
bounded by the rows kept, not by the rate (a function saturating its ``max_count`` every half second
would otherwise have each flush's rows pruned by the next). Meanwhile its pending invocations beyond
twice its ``max_count`` are let go as they end (the oldest ended first), and a full buffer first lets go
of the pending invocations beyond their function's ``max_count``: retention, not counted as dropped.

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from router.clock import Clock, SystemClock
from router.config.models import RouterConfig
from router.core.attempt import DELIVERY_SOURCE
from router.invocation import Invocation, Outcome, Result
from router.metrics import Metrics
from router.redaction import redact
from router.state.history import (
    CANCELLED,
    FINAL,
    QUEUED,
    RETRYING,
    RUNNING,
    Change,
    Row,
    merge,
    row_dict,
    sync_row,
    whole_row,
)

if TYPE_CHECKING:
    from router.state.store import StateStore

log = logging.getLogger("router.history")

LOG_TAIL = 4096
"""Bytes (UTF-8) of an invocation's logs kept: the last ones, cut at a character's start."""
RESULT_LIMIT = 64 * 1024
"""Bytes of a function's response kept; a longer one is cut and marked truncated."""
BUFFER = 10_000
"""Invocations held in memory at most before the oldest are dropped."""
BATCH = 500
"""Invocations written in one transaction at most."""
SLICE = 50
"""Whole rows made on the event loop between two yields to it."""
PRUNE_EVERY = 2.0
"""Seconds between two prunes of one function's rows while it is written (a busy function's table holds
at most its ``max_count`` plus what it ran in this time)."""
BUSY = 100
"""Ended sync invocations of one function pending at a flush (or its ``max_count``, if fewer) from which on
it is busy: its rows are then written every ``BUSY_EVERY`` seconds, not at every flush."""
BUSY_EVERY = 5.0
"""Seconds between two writes of a busy function's sync rows (each write holds its newest ``max_count``;
at more than ``max_count`` invocations in this time, what the last write held is pruned by the next)."""


@dataclass(slots=True)
class _Entry:
    """The changes of one invocation not written yet."""

    changes: list[Change]
    since: float  # monotonic time of the first one
    whole: bool  # they make the whole row: the stored one (if any) need not be read
    final: bool  # the invocation has ended: write it at the next flush

    def waits_only(self) -> bool:
        """Nothing but its acceptance: an async event that has not run yet."""
        return all(c.status == QUEUED and c.update == {} and c.attempt is None for c in self.changes)


class HistoryRecorder:
    """Records invocations of the functions whose ``history.enabled`` is true (the default)."""

    def __init__(self, store: StateStore, config: RouterConfig, metrics: Metrics, *,
                 clock: Clock | None = None, capacity: int = BUFFER, batch: int = BATCH,
                 flush_interval: float = 0.5, prune_interval: float = 300.0) -> None:
        self._store = store
        self.reconfigure(config)
        self._metrics = metrics
        self._clock: Clock = clock or SystemClock()
        # request id -> changes not written, oldest first; the ids of those that ended (written next)
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self._ended: dict[str, None] = {}
        # Sync invocations, ended, per function: request id -> what their row is made of, oldest first
        # (written at the next flush; a busy function's every BUSY_EVERY); how many in all
        self._done: dict[str, collections.OrderedDict[str, _Ended]] = {}
        self._done_count = 0
        self._rows_taken_at: dict[str, float] = {}  # function -> when its sync rows were last taken
        self._writing_rows: dict[str, _Ended] = {}
        self._capacity = capacity
        self._batch = batch
        self._flush_interval = flush_interval
        self._prune_interval = prune_interval
        self._writing: dict[str, _Entry] = {}
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
        self._payloads = {name: h.max_payload for name, h in self._history.items() if h.payloads}
        # rows kept per function (the newest by start): more ended sync invocations of a function pending
        # than that are let go at a flush, more than twice that as they end (the oldest ended)
        self._keep = {name: h.max_count for name, h in self._history.items() if h.enabled}
        self._amqp = config.async_queue is not None  # async events go to RabbitMQ

    def enabled(self, function: str) -> bool:
        return function in self._on

    # --- recording (never waits, never raises) ----------------------------------------------------------

    def _add(self, change: Change, *, creates: bool = False) -> None:
        """Add ``change`` to its invocation's entry; ``creates``: it holds the whole row as created."""
        entries = self._entries
        entry = entries.get(change.request_id)
        if entry is None:
            self._make_room(change.function)
            entry = entries[change.request_id] = _Entry([change], self._clock.monotonic(), creates, False)
        else:
            entry.changes.append(change)
        if change.status in FINAL:
            entry.final = True
            self._ended[change.request_id] = None
        if not self._wake.is_set():
            self._wake.set()

    def _make_room(self, function: str) -> None:
        """A full buffer lets go of the ended sync invocations beyond their function's ``max_count``
        (``_retain``: the prune would delete them), else drops an ended sync row (``function``'s oldest,
        else another function's oldest), else its oldest entry, and counts what it drops."""
        entries = self._entries
        if len(entries) + self._done_count < self._capacity:
            return
        for name, pending in self._done.items():
            if len(pending) > self._keep.get(name, len(pending)):
                self._done_count -= _retain(pending, self._keep[name])
                return
        if self._done_count:
            pending = self._done.get(function) or next(p for p in self._done.values() if p)
            pending.popitem(last=False)
            self._done_count -= 1
            self._metrics.history_dropped.labels("buffer_full").inc()
            return
        rid, oldest = entries.popitem(last=False)
        self._ended.pop(rid, None)
        if not (oldest.waits_only() and not self._amqp):  # else the queue's row still says it
            self._metrics.history_dropped.labels("buffer_full").inc(len(oldest.changes))

    def _payload(self, function: str, payload: bytes) -> dict[str, Any]:
        cap = self._payloads.get(function)
        if cap is None:
            return {}
        return {"payload": payload[:cap], "payload_truncated": len(payload) > cap}

    def accepted(self, inv: Invocation) -> None:
        """An async event was accepted (queued). Only recorded when RabbitMQ holds async events: the state
        store's queue holds an event's row from its 202 on, which is its record while it waits."""
        if inv.function not in self._on or not self._amqp:
            return
        create = {"route": inv.route, "source": inv.source, "invocation_type": "async",
                  "started_at": inv.enqueued_at, **self._payload(inv.function, inv.payload)}
        self._add(Change(inv.request_id, inv.function, self._clock.time(), QUEUED, create), creates=True)

    def sync_done(self, inv: Invocation, result: Result, duration: float) -> None:
        """A sync invocation (a caller waiting, or a poller's batch) ended with ``result``. Only its values
        are taken here (``_Ended``: plain values, nothing for the garbage collector to trace); its row is
        made with the others of its batch when they are written (measured: the same work costs a busy
        router several times more done one invocation at a time, between requests, than in a batch)."""
        function = inv.function
        keep = self._keep.get(function)
        if keep is None:  # not recorded
            return
        outcome = result.outcome
        ok = outcome is Outcome.SUCCESS
        if ok:
            error_type = error_message = None
        else:
            error_type, error_message = _error(result)
        max_payload = self._payloads.get(function)
        if len(self._entries) + self._done_count >= self._capacity:
            self._make_room(function)
        pending = self._done.get(function)
        if pending is None:
            pending = self._done[function] = collections.OrderedDict()
        pending[inv.request_id] = (
            inv.request_id, function, inv.route, inv.source, inv.attempt, self._clock.time(), duration, ok,
            outcome._value_,  # the plain str (not the member: a tuple of plain values is not GC-tracked;
            # not ``.value``: a descriptor call, the costliest line here)
            result.payload, result.logs, error_type, error_message,
            None if max_payload is None else inv.payload, max_payload)
        if len(pending) > 2 * keep:  # beyond what a flush keeps: the oldest ended let go
            pending.popitem(last=False)
        else:
            self._done_count += 1
        if not self._wake.is_set():
            self._wake.set()

    def attempt_started(self, inv: Invocation) -> None:
        """An async event's attempt ``inv.attempt`` begins (status running)."""
        if inv.function not in self._on:
            return
        now = self._clock.time()
        create = {"route": inv.route, "source": inv.source, "invocation_type": "async",
                  "started_at": inv.enqueued_at, **self._payload(inv.function, inv.payload)}
        self._add(Change(inv.request_id, inv.function, now, RUNNING, create,
                         attempt={"attempt": inv.attempt, "started_at": now}), creates=inv.attempt == 1)

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

    def finished(self, function: str, request_id: str, status: str, *, route: str | None = None,
                 source: str = "", enqueued_at: float | None = None, payload: bytes = b"") -> None:
        """An async event's end: ``succeeded``, ``failed`` or ``dropped``. ``route`` ... ``payload``: the
        event's, for a row not written yet (an event dropped before it ever ran)."""
        if function in self._on:
            now = self._clock.time()
            create = {"route": route, "source": source, "invocation_type": "async",
                      "started_at": now if enqueued_at is None else enqueued_at,
                      **self._payload(function, payload)}
            self._add(Change(request_id, function, now, status, create, update={"finished_at": now}))

    # --- reading and cancelling -------------------------------------------------------------------------

    def _buffered(self, request_id: str) -> list[Change]:
        changes: list[Change] = []
        for entries in (self._writing, self._entries):
            entry = entries.get(request_id)
            if entry is not None:
                changes += entry.changes
        return changes

    async def lookup(self, request_id: str) -> dict[str, Any] | None:
        """The invocation ``request_id`` as stored, with the changes not written yet and, while it waits
        in the state store's queue, its status there; None when unknown (or pruned)."""
        row, queued = await self._store.invocation(request_id, DELIVERY_SOURCE)
        done = self._writing_rows.get(request_id) or next(
            (pending[request_id] for pending in self._done.values() if request_id in pending), None)
        if done is not None and (row is None or row["status"] not in FINAL):
            row = row_dict(_sync_row(done))
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
        """Stored rows newest first (``StateStore.invocations``), with the async events waiting in the
        state store's queue; changes still buffered are not in it."""
        return await self._store.invocations(**filters, queued_source=DELIVERY_SOURCE,
                                             now=self._clock.time())

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
                while self._entries or self._done_count:
                    await self._flush(everything=True)
        except TimeoutError:
            pass
        if self._entries or self._done_count:
            left = sum(len(e.changes) for e in self._entries.values()) + self._done_count
            self._metrics.history_dropped.labels("shutdown").inc(left)
            log.warning("invocation history: %d changes not written at shutdown", left)
            self._entries.clear()
            self._ended.clear()
            self._done.clear()
            self._done_count = 0

    async def _run(self) -> None:
        next_prune = self._clock.monotonic()
        while True:
            wait = next_prune - self._clock.monotonic()
            if self._done_count:  # ended: written at the next flush (a busy function's, later)
                wait = min(wait, self._flush_interval)
            if self._entries:  # the oldest is written (or let go) when it is flush_interval old
                oldest = next(iter(self._entries.values())).since
                wait = min(wait, oldest + self._flush_interval - self._clock.monotonic())
            self._wake.clear()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
            if self._entries or self._done_count:
                await self._clock.sleep(self._flush_interval)  # gather a batch
                # What is due now, in batches; what arrives meanwhile waits for the next round (one
                # commit per interval, not a stream of small ones).
                while await self._flush() == self._batch:
                    pass
            if self._clock.monotonic() >= next_prune:
                await self._prune_all()
                next_prune = self._clock.monotonic() + self._prune_interval

    def _limits(self, functions: set[str]) -> dict[str, tuple[float, int]]:
        now = self._clock.time()
        return {f: (now - self._history[f].max_age, self._history[f].max_count)
                for f in functions if f in self._history}

    def _take(self, everything: bool) -> tuple[dict[str, _Entry], int]:
        """Up to a batch of the entries due, oldest first: those ``flush_interval`` old (all when
        ``everything``), then the ended ones. An event that only waits in the state store's queue is let
        go unwritten (the queue's row says it waits). Also how many entries left the buffer."""
        entries, ended = self._entries, self._ended
        old = self._clock.monotonic() - self._flush_interval
        skip_waiting = not self._amqp
        taken: dict[str, _Entry] = {}
        removed = 0

        def take(rid: str) -> None:
            nonlocal removed
            removed += 1
            entry = entries.pop(rid)
            ended.pop(rid, None)
            if not (skip_waiting and entry.waits_only()):
                taken[rid] = entry

        while entries and removed < self._batch:
            rid, entry = next(iter(entries.items()))
            if not (everything or entry.since <= old):
                break
            take(rid)
        for rid in list(ended)[:self._batch - removed]:
            take(rid)
        return taken, removed

    async def _flush(self, everything: bool = False) -> int:
        """Write a batch of the entries due in one transaction; how many left the buffer."""
        batch, removed = self._take(everything)
        whole = self._take_rows(everything, self._batch - removed)
        removed += len(whole)
        if not batch and not whole:
            return removed
        self._writing = batch
        self._writing_rows = whole
        try:
            changes: list[Change] = []
            rows: list[Row] = []
            for n, ended in enumerate(whole.values(), 1):
                rows.append(_sync_row(ended))
                if n % SLICE == 0:  # made on the event loop in slices: not held up for a whole batch
                    await asyncio.sleep(0)
            for n, entry in enumerate(batch.values(), 1):
                for change in entry.changes:
                    logs = change.update.get("logs")
                    if logs:
                        change.update["logs"] = tail_bytes(redact(logs))
                if entry.whole:
                    # Made here, on the event loop: in the store's thread this Python work held the GIL
                    # in long stretches that the busy loop stalled on (measured: ~+35 us of the loop's
                    # CPU a sync invocation, against ~6 us for the work itself); made in slices, so the
                    # loop is not held up for a whole batch either.
                    rows.append(whole_row(entry.changes))
                else:
                    changes += entry.changes
                if n % SLICE == 0:
                    await asyncio.sleep(0)
            prune = self._limits(self._due({e.changes[0].function for e in batch.values()}
                                           | {r[1] for r in whole.values()}))
            await self._store.record_history(changes, prune=prune, rows=rows)
        except asyncio.CancelledError:
            for rid, ended in reversed(whole.items()):  # written again by close
                pending = self._done.setdefault(ended[1], collections.OrderedDict())
                pending[rid] = ended
                pending.move_to_end(rid, last=False)
            self._done_count += len(whole)
            for rid, entry in reversed(batch.items()):  # written again by close (rewriting one is harmless)
                newer = self._entries.pop(rid, None)
                if newer is not None:
                    entry.changes += newer.changes
                self._entries[rid] = entry
                self._entries.move_to_end(rid, last=False)
                if entry.final or (newer is not None and newer.final):
                    self._ended[rid] = None
            raise
        except Exception as exc:
            lost = sum(len(entry.changes) for entry in batch.values()) + len(whole)
            self._metrics.history_dropped.labels("store_error").inc(lost)
            if self._clock.monotonic() - self._last_error > 60.0:
                self._last_error = self._clock.monotonic()
                log.error("invocation history: cannot write %d changes, they are dropped: %s", lost, exc)
        finally:
            self._writing = {}
            self._writing_rows = {}
        return removed

    def _take_rows(self, everything: bool, room: int) -> dict[str, _Ended]:
        """Up to ``room`` ended sync invocations to write now, each function's oldest first: all of a
        function's pending ones, but at most its ``max_count`` newest by start (``_retain``); those of a busy
        function only every ``BUSY_EVERY`` seconds (all when ``everything``, or when the buffer is three
        quarters full)."""
        now = self._clock.monotonic()
        pressed = len(self._entries) + self._done_count >= self._capacity * 3 // 4
        whole: dict[str, _Ended] = {}
        for function, pending in self._done.items():
            if room <= 0:
                break
            if not pending:
                continue
            keep = self._keep.get(function, len(pending))
            if (not (everything or pressed) and len(pending) >= min(keep, BUSY)
                    and now - self._rows_taken_at.get(function, -math.inf) < BUSY_EVERY):
                continue
            if len(pending) > keep:
                self._done_count -= _retain(pending, keep)
            if len(pending) <= room:  # all of them (the usual case): the dict itself is taken
                whole.update(pending)
                self._done[function] = collections.OrderedDict()
                self._rows_taken_at[function] = now
                taken = len(pending)
            else:  # the oldest (the rest with the next batch: not held back as busy)
                for _ in range(room):
                    rid, ended = pending.popitem(last=False)
                    whole[rid] = ended
                taken = room
            self._done_count -= taken
            room -= taken
        return whole

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


_Ended = tuple[str, str, str | None, str, int, float, float, bool, str, bytes, str, str | None, str | None,
               bytes | None, int | None]
"""A sync invocation as ``sync_done`` takes it: request id, function, route, source, attempt, ended (epoch
seconds), duration, ok, outcome, response, logs, error type, error message, event payload and its cap
(None: payloads not kept)."""


def _started(ended: _Ended) -> float:
    """When a sync invocation ``sync_done`` took started (epoch seconds): its end less its duration."""
    return ended[5] - ended[6]


def _retain(pending: collections.OrderedDict[str, _Ended], keep: int) -> int:
    """Let go of the ended sync invocations in ``pending`` (one function's) beyond its ``keep`` newest by
    start, as the prune counts them: written, they would be among the rows the next prune deletes. A
    function busier than ``max_count`` invocations a flush (thousands a second with the defaults) then has
    only the rows it keeps written, not every one of them written and deleted again. How many went."""
    extra = len(pending) - keep
    if extra <= 0:
        return 0
    for ended in sorted(pending.values(), key=_started)[:extra]:
        del pending[ended[0]]
    return extra


def tail_bytes(logs: str) -> str:
    """The last ``LOG_TAIL`` bytes of ``logs`` in UTF-8, from the first whole character in them (a lone
    surrogate, which undecodable output can hold, counts as its 3 bytes)."""
    logs = logs[-LOG_TAIL:]  # a character is at least one byte
    if logs.isascii():
        return logs
    tail = logs.encode("utf-8", "surrogatepass")[-LOG_TAIL:]
    start = 0
    while start < len(tail) and tail[start] & 0xC0 == 0x80:  # a continuation byte: a character cut
        start += 1
    return tail[start:].decode("utf-8", "surrogatepass")


def _sync_row(ended: _Ended) -> Row:
    """The row of a sync invocation ``sync_done`` took (``history.sync_row``)."""
    (rid, function, route, source, attempt, at, duration, ok, outcome, out, logs, error_type, error_message,
     payload, max_payload) = ended
    if logs:
        logs = tail_bytes(redact(logs[-2 * LOG_TAIL:]))
    return sync_row(rid, function, route, source, "succeeded" if ok else "failed", attempt, outcome,
                    at - duration, at, duration, error_type, error_message, logs or None,
                    None if payload is None else payload[:max_payload],
                    payload is not None and len(payload) > (max_payload or 0),
                    out[:RESULT_LIMIT], len(out) > RESULT_LIMIT)


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
        out["error_type"], out["error_message"] = _error(result)
    return out


def _error(result: Result) -> tuple[str, str]:
    """A failed result's error type and message, as the history keeps them."""
    body = result._error_object() or {}
    return str(body.get("errorType") or result.outcome.value)[:128], result.error_message(1000)


def _attempt(number: int, started: float, ended: float, result: Result) -> dict[str, Any]:
    entry: dict[str, Any] = {"attempt": number, "started_at": started, "ended_at": ended,
                             "outcome": result.outcome.value}
    if not result.ok:
        entry["error_type"], entry["error_message"] = _error(result)
    return entry
