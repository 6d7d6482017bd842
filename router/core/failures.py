"""Failed events: kept in the state store when an event is given up, pruned by age and count, redriven as
new async invocations at a bounded rate (``router failures``, the admin API's ``/admin/failures``).

Kept: every async event whose end was not a success (its retries ran out, it grew too old; with or
without an ``on_failure`` destination), and every stream batch given up (its failure record went to
``source.on_failure``, or the records were skipped). Keeping never holds up the event's settlement: a
store that cannot keep it within ``state.write_timeout`` is logged and counted
(``router_failed_events_unkept_total``) and the event goes on to its destination or drop.

Redrive claims the events first (one UPDATE ... WHERE redriven_as IS NULL each, with the new request id),
so redriving twice, from two clients or two replicas, runs each event once; then ``run``'s task submits
them one by one at the asked rate, marking each accepted (``redriven_at``). Claims not submitted when the
router stops are handed back (unclaimed) on the way out. A crash between claim and submit leaves the
event claimed and not accepted: it lists with ``redriven_as`` set and ``redriven_at`` empty ("pending"),
is not redriven again (at most once), and ``router failures purge --ids`` clears it; the operator may
invoke its payload by hand.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from router.clock import Clock
from router.errors import RouterError
from router.invocation import Invocation, Result, new_request_id
from router.metrics import Metrics
from router.state.failures import FailedEvent, FailureFilter
from router.state.store import StateStore

log = logging.getLogger("router.failures")

REDRIVE_SOURCE = "redrive"
"""The ``source`` of a redriven event (logs, metrics)."""
DEFAULT_RATE = 10.0
"""Events per second a redrive submits unless asked otherwise."""
MAX_RATE = 1000.0
MAX_REDRIVE = 10_000
"""Most events one redrive request claims."""
PENDING_REDRIVES = 16
"""Redrive requests waiting for their turn at most; more are refused until one is done."""
PRUNE_INTERVAL = 60.0


class RedriveBusy(RouterError):
    """Raised when ``PENDING_REDRIVES`` redrives are waiting already."""


@dataclass(slots=True)
class _Job:
    rate: float
    events: list[FailedEvent]
    done: int = 0  # events of ``events`` submitted (or given up) so far


Submit = Callable[[Invocation], Awaitable[str]]


class FailedEvents:
    """Keeps, prunes and redrives failed events; ``run`` is its task (prune, redrive), cancelled at
    shutdown. ``submit`` is the dispatcher's async path."""

    def __init__(self, store: StateStore, *, metrics: Metrics, clock: Clock, max_age: float, max_count: int,
                 timeout: float, prune_interval: float = PRUNE_INTERVAL) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._max_age = max_age
        self._max_count = max_count
        self._timeout = timeout
        self._prune_interval = prune_interval
        self._submit: Submit | None = None
        self._jobs: asyncio.Queue[_Job] = asyncio.Queue(PENDING_REDRIVES)
        self._current: _Job | None = None

    @property
    def store(self) -> StateStore:
        return self._store

    def set_submit(self, submit: Submit) -> None:
        """Where redrives go (the dispatcher's ``submit``); before the first redrive."""
        self._submit = submit

    # --- keeping ----------------------------------------------------------------------------------------

    async def keep(self, *, function: str, route: str | None, source: str, request_id: str, condition: str,
                   record: dict[str, Any], payload: bytes, attempts: int, result: Result | None,
                   qualifier: str | None = None) -> None:
        """Keep one failed event; never raises but ``CancelledError`` (a failure is logged and counted).
        ``qualifier``: the version or alias the event was invoked with (its redrive is invoked so too)."""
        error_type = error_message = None
        if result is not None and not result.ok:
            error_type = result.error_type.value if result.error_type else result.outcome.value
            error_message = result.error_summary(1000)
        row = {
            "function": function, "route": route, "source": source, "request_id": request_id,
            "condition": condition, "record": json.dumps(record, default=str), "payload": payload,
            "failed_at": self._clock.time(), "attempts": attempts, "error_type": error_type,
            "error_message": error_message, "redriven_as": None, "redriven_at": None, "qualifier": qualifier,
        }
        extra = {"function": function, "route": route, "request_id": request_id}
        try:
            async with asyncio.timeout(self._timeout):
                event_id = await self._store.keep_failure(row)
        except Exception as exc:  # TimeoutError, StateStoreError: keep going without it
            self._metrics.failed_events_unkept.labels(function).inc()
            log.error("cannot keep the failed event (%s) in the state store: %s; it goes on to its "
                      "destination or drop, but `router failures` will not list it",
                      condition, describe(exc), extra=extra)
            return
        self._metrics.failed_events_kept.labels(function, condition).inc()
        log.info("failed event kept as %d (%s)", event_id, condition, extra=extra)

    # --- redrive ----------------------------------------------------------------------------------------

    async def redrive(self, f: FailureFilter, *, rate: float = DEFAULT_RATE) -> list[FailedEvent]:
        """Claim the events of ``f`` never redriven (at most ``MAX_REDRIVE``) and schedule their redrive
        at ``rate`` per second; the claimed events (``redriven_as``: the new request ids). Raises
        ``RedriveBusy`` when too many redrives wait, ``StateStoreError`` when the store fails."""
        if self._jobs.full():
            raise RedriveBusy(f"{PENDING_REDRIVES} redrives are waiting already; try again when they are "
                              "done")
        new_ids = [new_request_id() for _ in range(MAX_REDRIVE if f.ids is None else len(f.ids))]
        claimed = await self._store.claim_failures(f, len(new_ids), new_ids)
        if claimed:
            try:
                self._jobs.put_nowait(_Job(rate, claimed))
            except asyncio.QueueFull:  # filled while claiming
                await self._unclaim(claimed)
                raise RedriveBusy(f"{PENDING_REDRIVES} redrives are waiting already; try again when they "
                                  "are done") from None
        return claimed

    async def _run_job(self, job: _Job) -> None:
        interval = 1.0 / job.rate
        start = self._clock.monotonic()
        for i, event in enumerate(job.events):
            wait = start + i * interval - self._clock.monotonic()
            if wait > 0:
                await self._clock.sleep(wait)
            job.done = i + 1  # before: a redrive cut short by the shutdown stays claimed (at most once)
            await self._redrive_one(event)

    async def _redrive_one(self, event: FailedEvent) -> None:
        new_id = event.redriven_as
        assert new_id is not None
        assert self._submit is not None
        extra = {"function": event.function, "route": event.route, "request_id": new_id}
        inv = Invocation(function=event.function, payload=event.payload, source=REDRIVE_SOURCE,
                         route=event.route, request_id=new_id, invocation_type="async",
                         qualifier=event.qualifier)
        try:
            await self._submit(inv)
        except Exception as exc:
            log.error("cannot redrive failed event %d (request %s): %s; it can be redriven again",
                      event.id, event.request_id, describe(exc), extra=extra)
            await self._unclaim([event])
            return
        self._metrics.failed_events_redriven.labels(event.function).inc()
        log.info("failed event %d (request %s) redriven as request %s", event.id, event.request_id, new_id,
                 extra=extra)
        try:
            await self._store.failure_redriven(event.id, new_id, now=self._clock.time())
        except Exception as exc:  # accepted all the same; it shows as pending
            log.error("redrive of failed event %d accepted as %s, but not marked: %s", event.id, new_id,
                      describe(exc), extra=extra)

    async def _unclaim(self, events: list[FailedEvent]) -> None:
        claims = [(e.id, e.redriven_as) for e in events if e.redriven_as is not None]
        if not claims:
            return
        try:
            await self._store.unclaim_failures(claims)
        except Exception as exc:
            log.error("cannot hand back %d redrive claims: %s; those events show as pending redrives",
                      len(claims), describe(exc))

    # --- the task -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Prune and run redrives until cancelled; then hand back the claims not submitted."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._prune_loop(), name="failures:prune")
                tg.create_task(self._redrive_loop(), name="failures:redrive")
        finally:
            left: list[FailedEvent] = []
            if self._current is not None:
                left += self._current.events[self._current.done:]
            while not self._jobs.empty():
                left += self._jobs.get_nowait().events
            if left:
                await asyncio.shield(self._unclaim(left))
                log.info("%d redrives not submitted before the router stopped were handed back", len(left))

    async def _redrive_loop(self) -> None:
        while True:
            job = await self._jobs.get()
            self._current = job
            await self._run_job(job)
            self._current = None

    async def _prune_loop(self) -> None:
        while True:
            try:
                gone = await self._store.prune_failures(older_than=self._clock.time() - self._max_age,
                                                        keep=self._max_count)
            except Exception as exc:
                log.warning("cannot prune failed events: %s; trying again in %gs", describe(exc),
                            self._prune_interval)
            else:
                if gone:
                    self._metrics.failed_events_pruned.inc(gone)
                    log.info("pruned %d failed events (state.failures max_age, max_count)", gone)
            await self._clock.sleep(self._prune_interval)


def describe(exc: BaseException) -> str:
    """``exc`` in one line for a log."""
    if isinstance(exc, TimeoutError):
        return "timed out (state.write_timeout)"
    return str(exc) or type(exc).__name__
