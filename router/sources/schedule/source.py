"""The schedule source: cron and rate routes fired by APScheduler, events shaped as EventBridge's.

Each fire sends the EventBridge Scheduled Event (or the route's constant ``input``) to the route's
function: sync routes through ``dispatcher.invoke_waiting`` (waits for a concurrency slot), async routes
through ``dispatcher.submit``. A job never overlaps itself (``max_instances=1``): a tick that comes
while the previous run is still going is skipped and counted as ``missed``, as is a tick that could not
start within its grace time. ``router_schedule_runs_total{outcome}``: ``fired`` when the function ran
fine (sync) or the event was persisted (async), ``error`` when it failed or could not be dispatched.

Every tick is claimed in the state store before it fires (``router_schedule_fires``, one row per route
and nominal time): among replicas sharing a PostgreSQL store exactly one fires it, with no leader. A
store that cannot be reached does not stop the schedule: the tick fires unclaimed (at least once) and the
error is logged and counted. Rate schedules tick at whole multiples of the rate since the Unix epoch
(``rate: 5m`` fires at :00, :05, ... UTC), so every replica and every restart agrees on the ticks.

The source follows ``router.sources.base.Poller``: ``run`` starts the scheduler and fires until ``stop``,
which lets running fires finish within its timeout; ``start``/``close`` are the same two halves for
callers that own no task.

``catch_up`` (rounded up to whole seconds) is APScheduler's ``misfire_grace_time``, with
``coalesce=True`` (missed ticks fire once). ``catch_up: 0`` means "on time only"; a grace of
``MIN_GRACE`` (1 s) is still given so that a busy event loop does not turn a tick into a miss.
Ticks missed while no router ran are found at start from the route's newest claimed tick: those within
``catch_up`` of now fire late, one after the other (at most ``MAX_CATCH_UP``), older ones are counted as
``missed``. A route that never fired has nothing to catch up.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobEvent,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from router import compact_json
from router.clock import Clock, SystemClock
from router.config.cron import cron_trigger, zone
from router.config.models import AwsConfig, RouteConfig, ScheduleSourceConfig
from router.core.controls import HELD_SCHEDULE
from router.core.dispatcher import Dispatch
from router.errors import ConfigError
from router.invocation import Invocation
from router.metrics import Metrics
from router.sources.lifecycle import StopGate

log = logging.getLogger("router.sources.schedule")

TYPE = "schedule"
MIN_GRACE = 1  # seconds; APScheduler takes whole seconds
MAX_CATCH_UP = 100
"""Most missed ticks of one route fired late at start; older ones count as missed."""
KEEP_FIRES = 24 * 3600.0
"""Claimed ticks are kept this long beyond the route's catch-up window, then pruned."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FireClaims(Protocol):
    """Where ticks are claimed (``router.state.store.StateStore``)."""

    async def claim_fire(self, route: str, fire_time: float, *, now: float, keep: float) -> bool: ...

    async def last_fire(self, route: str) -> float | None: ...


def build_trigger(cfg: ScheduleSourceConfig) -> BaseTrigger:
    """The trigger of a schedule: cron (crontab weekdays, see ``router.config.cron``) or rate.

    Raises ``ValueError`` (``CronError``) with a message fit for users."""
    if cfg.rate is not None:
        # Anchored at the epoch: the ticks are the same for every replica and across restarts.
        return IntervalTrigger(seconds=cfg.rate, start_date=EPOCH, timezone=zone(cfg.timezone))
    return cron_trigger(cfg.cron or "", cfg.timezone)


def scheduled_event(route: str, nominal: datetime, aws: AwsConfig) -> dict[str, Any]:
    """EventBridge's Scheduled Event for a tick of ``route`` at ``nominal`` (any tz-aware time)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": aws.account_id,
        "time": nominal.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": aws.region,
        "resources": [f"arn:aws:events:{aws.region}:{aws.account_id}:rule/{route}"],
        "detail": {},
    }


class ScheduleSource:
    """Fires every ``type: schedule`` route in ``routes``; ``run()`` until ``stop(timeout)`` (a
    ``router.sources.base.Poller``), or ``start()`` then ``close()``. ``clock`` gives the wall time of
    ticks and catch-up."""

    def __init__(
        self,
        routes: list[RouteConfig],
        dispatcher: Dispatch,
        metrics: Metrics,
        aws_config: AwsConfig,
        *,
        close_timeout: float = 25.0,
        clock: Clock | None = None,
        claims: FireClaims | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._claims = claims
        self._metrics = metrics
        self._aws = aws_config
        self._close_timeout = close_timeout
        self._clock = clock or SystemClock()
        self._gate = StopGate(self._clock)
        self._routes: dict[str, RouteConfig] = {}
        self._triggers: dict[str, BaseTrigger] = {}
        problems: list[str] = []
        for route in routes:
            if not isinstance(route.source, ScheduleSourceConfig):
                continue
            try:
                self._triggers[route.name] = build_trigger(route.source)
            except ValueError as exc:
                problems.append(f"route '{route.name}': source: {exc}")
                continue
            self._routes[route.name] = route
        if problems:
            raise ConfigError(problems)
        self._scheduler: AsyncIOScheduler | None = None
        self._nominal: dict[str, datetime] = {}  # job id -> nominal time of the run just submitted
        self._running: set[asyncio.Task[Any]] = set()

    @property
    def route_names(self) -> list[str]:
        return list(self._routes)

    async def run(self) -> None:
        """Fire until ``stop`` (or until cancelled): start, wait, then close."""
        with self._gate.run():
            if self._gate.stopping:
                return
            await self.start()
            try:
                await self._gate.stopped.wait()
            finally:
                await self.close()

    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109 (the Poller contract)
        """No new fires; running ones get ``timeout`` to finish, then are cancelled; returns once ``run``
        has ended."""
        self._close_timeout = timeout
        await self._gate.stop(None)  # ``close`` bounds the wait by ``timeout`` itself

    async def start(self) -> None:
        """Start firing. Must run inside the event loop that will own the fires."""
        if self._scheduler is not None:
            raise RuntimeError("schedule source: already started")
        scheduler = AsyncIOScheduler(timezone=UTC)
        scheduler.add_listener(
            self._on_event, EVENT_JOB_SUBMITTED | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
        )
        for name, route in self._routes.items():
            assert isinstance(route.source, ScheduleSourceConfig)
            scheduler.add_job(
                self._fire, self._triggers[name], args=[name], id=name, name=f"route {name}",
                max_instances=1, coalesce=True,
                misfire_grace_time=max(math.ceil(route.source.catch_up), MIN_GRACE),
            )
        scheduler.start()
        self._scheduler = scheduler
        log.info("schedule source started", extra={"event": f"{len(self._routes)} routes"})
        if self._claims is not None:
            for name, route in self._routes.items():
                assert isinstance(route.source, ScheduleSourceConfig)
                if route.source.catch_up > 0:
                    self._spawn(self._catch_up(name, route.source.catch_up), f"{name} catch-up")

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def missed_ticks(self, name: str, after: float, now: float) -> list[datetime]:
        """The nominal ticks of route ``name`` after ``after`` and up to ``now`` (at most 10,000)."""
        trigger = self._triggers[name]
        out: list[datetime] = []
        step = timedelta(microseconds=1)
        at = datetime.fromtimestamp(after, UTC) + step
        for _ in range(10_000):
            # No previous fire: the trigger's own grid (rates anchored at the epoch), from ``at`` on.
            nxt = trigger.get_next_fire_time(None, at)
            if nxt is None or nxt.timestamp() > now:
                break
            out.append(nxt)
            at = nxt + step
        return out

    async def _catch_up(self, name: str, window: float) -> None:
        """Fire, late, the ticks of ``name`` missed while no router ran and younger than ``window``."""
        assert self._claims is not None
        try:
            last = await self._claims.last_fire(name)
        except Exception as exc:
            self._metrics.source_errors.labels(route=name, type=TYPE).inc()
            log.error("schedule: cannot read the last fire from the state store, no catch-up: %s", exc,
                      extra={"route": name})
            return
        if last is None:
            return
        now = self._clock.time()
        ticks = self.missed_ticks(name, last, now)
        late = [t for t in ticks if now - t.timestamp() <= window][-MAX_CATCH_UP:]
        missed = len(ticks) - len(late)
        if missed:
            self._metrics.schedule_runs.labels(route=name, outcome="missed").inc(missed)
            log.warning("schedule: %d ticks missed while no router ran (older than catch_up %gs)", missed,
                        window, extra={"route": name})
        if late:
            log.info("schedule: firing %d missed ticks late (catch_up %gs)", len(late), window,
                     extra={"route": name})
        for tick in late:
            if self._scheduler is None:
                return  # closing
            await self._run(name, tick)

    async def close(self) -> None:
        """Stop firing, let running fires finish within ``close_timeout``, then cancel the rest and
        wait for them: no task is left behind."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is None:
            return
        scheduler.pause()
        if self._running:
            _, pending = await asyncio.wait(set(self._running), timeout=self._close_timeout)
            for task in pending:
                log.warning("schedule: run cancelled at shutdown", extra={"route": task.get_name()})
                task.cancel()
        # AsyncIOScheduler.shutdown runs its work in a loop callback; wait for that callback too.
        scheduler.shutdown(wait=False)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(done.set_result, None)
        await done
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    # --- APScheduler callbacks ----------------------------------------------------------------------

    def _on_event(self, event: JobEvent) -> None:
        name = event.job_id
        if event.code == EVENT_JOB_SUBMITTED and isinstance(event, JobSubmissionEvent):
            # Dispatched right after the run's task was created and before it starts: hand it its time.
            self._nominal[name] = event.scheduled_run_times[-1]
            return
        if event.code == EVENT_JOB_MAX_INSTANCES:
            reason = "the previous run is still running"
        elif event.code == EVENT_JOB_MISSED and isinstance(event, JobExecutionEvent):
            reason = "it could not start within its grace time (source.catch_up)"
        else:
            return
        self._metrics.schedule_runs.labels(route=name, outcome="missed").inc()
        log.warning(f"schedule: tick missed, {reason}", extra={"route": name})

    async def _fire(self, name: str) -> None:
        task = asyncio.current_task()
        if task is not None:
            task.set_name(name)
            self._running.add(task)
        try:
            await self._run(name)
        finally:
            if task is not None:
                self._running.discard(task)

    async def _run(self, name: str, nominal: datetime | None = None) -> None:
        route = self._routes[name]
        now = self._clock.time()
        if nominal is None:
            nominal = self._nominal.pop(name, None) or datetime.fromtimestamp(now, UTC)
        if not await self._claim(name, route, nominal, now):
            return
        if not self._dispatcher.route_enabled(name):  # paused: the tick is skipped (claimed: not caught
            self._dispatcher.held(HELD_SCHEDULE, name)  # up later), and counted
            self._metrics.schedule_runs.labels(route=name, outcome="paused").inc()
            log.info("schedule: route paused, tick skipped", extra={"route": name})
            return
        self._metrics.schedule_lag.labels(route=name).observe(max(0.0, now - nominal.timestamp()))
        self._metrics.source_events.labels(route=name, type=TYPE).inc()
        event = route.input if route.input is not None else scheduled_event(name, nominal, self._aws)
        inv = Invocation(
            function=route.function,
            payload=compact_json.dumpb(event),
            source=TYPE,
            route=name,
            invocation_type=route.invocation_type,
        )
        extra = {"route": name, "function": route.function, "request_id": inv.request_id}
        outcome = "fired"
        try:
            if route.invocation_type == "async":
                await self._dispatcher.submit(inv)
            else:
                result = await self._dispatcher.invoke_waiting(inv)
                if not result.ok:
                    outcome = "error"
                    log.warning("schedule: the function failed",
                                extra={**extra, "error_type": str(result.error_type or "handler")})
        except Exception as exc:
            outcome = "error"
            self._metrics.source_errors.labels(route=name, type=TYPE).inc()
            log.error("schedule: could not dispatch the tick: %s", exc, extra=extra)
        self._metrics.schedule_runs.labels(route=name, outcome=outcome).inc()

    async def _claim(self, name: str, route: RouteConfig, nominal: datetime, now: float) -> bool:
        """Whether this replica fires the tick: it won the claim, or the store could not be asked."""
        if self._claims is None:
            return True
        assert isinstance(route.source, ScheduleSourceConfig)
        try:
            won = await self._claims.claim_fire(name, nominal.timestamp(), now=now,
                                                keep=KEEP_FIRES + route.source.catch_up)
        except Exception as exc:
            self._metrics.source_errors.labels(route=name, type=TYPE).inc()
            log.error("schedule: cannot claim the tick in the state store, firing it anyway "
                      "(another replica may fire it too): %s", exc, extra={"route": name})
            return True
        if not won:
            log.debug("schedule: tick fired by another replica", extra={"route": name})
        return won
