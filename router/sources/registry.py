"""Which source type is built by what: the app's one way to turn routes into running sources.

Each source module is imported only when a route uses it (botocore costs ~8 MB of idle memory).
Webhook routes are not here: the HTTP front serves them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from router.sources.base import Poller

if TYPE_CHECKING:
    from router.config.models import RouteConfig, RouterConfig
    from router.core.dispatcher import Dispatch
    from router.core.failures import FailedEvents
    from router.destinations.base import Destination
    from router.metrics import Metrics
    from router.readiness import Readiness
    from router.state.store import StateStore


@dataclass(frozen=True, slots=True)
class SourceParts:
    """What sources are built from; ``on_failure``: the stream routes' failure destinations by route."""

    config: RouterConfig
    dispatcher: Dispatch
    metrics: Metrics
    readiness: Readiness
    store: StateStore
    on_failure: Mapping[str, Destination] = field(default_factory=dict)
    failures: FailedEvents | None = None  # where failed events are kept (``router failures``)


def _sqs(route: RouteConfig, parts: SourceParts) -> Poller:
    from router.sources.sqs.source import SqsSource

    return SqsSource(route, dispatcher=parts.dispatcher, metrics=parts.metrics, readiness=parts.readiness,
                     aws=parts.config.aws)


def _amqp(route: RouteConfig, parts: SourceParts) -> Poller:
    from router.sources.amqp.source import AmqpSource

    return AmqpSource(route, dispatcher=parts.dispatcher, metrics=parts.metrics, readiness=parts.readiness,
                      aws=parts.config.aws, max_body=parts.config.server.max_body)


def _stream(route: RouteConfig, parts: SourceParts) -> Poller:
    from router.sources.stream.engine import StreamSource

    return StreamSource(route, dispatcher=parts.dispatcher, metrics=parts.metrics, readiness=parts.readiness,
                        aws=parts.config.aws, store=parts.store, on_failure=parts.on_failure.get(route.name),
                        lease_duration=parts.config.state.shard_lease_duration,
                        replica_id=parts.config.state.replica_id, failures=parts.failures)


POLLERS: dict[str, Callable[[RouteConfig, SourceParts], Poller]] = {
    "sqs": _sqs,
    "amqp": _amqp,
    "kinesis": _stream,
    "dynamodb_stream": _stream,
}
"""Polling source type -> the factory of one route's poller."""


@dataclass(slots=True)
class Sources:
    """The running sources of a config, each with its task name; ``stop`` ends them in order."""

    schedule: Poller
    pollers: list[tuple[str, Poller]]
    _schedule_routes: set[str] = field(default_factory=set)
    _schedule_stopped: bool = False

    def all(self) -> list[tuple[str, Poller]]:
        return [("schedule", self.schedule), *self.pollers]

    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109 (the shutdown contract)
        """The schedule first (no new fires), then every poller at once, each given ``timeout``."""
        await self.schedule.stop(timeout)
        await asyncio.gather(*(p.stop(timeout) for _, p in self.pollers))

    async def stop_routes(self, routes: Iterable[str], new: RouterConfig,
                          timeout: float) -> None:  # noqa: ASYNC109 (the shutdown contract)
        """A reload, first half: stop the pollers of ``routes`` gracefully (each given ``timeout``; what
        they took finishes); the schedule source too when one of them is a schedule route, before or in
        ``new``."""
        touched = set(routes)
        new_schedules = {r.name for r in new.routes if r.source.type == "schedule"}
        stopping = [p for name, p in self.pollers if name.partition(":")[2] in touched]
        self.pollers = [(name, p) for name, p in self.pollers if name.partition(":")[2] not in touched]
        self._schedule_stopped = bool(touched & (self._schedule_routes | new_schedules))
        if self._schedule_stopped:
            await self.schedule.stop(timeout)
        await asyncio.gather(*(p.stop(timeout) for p in stopping))

    def start_routes(self, parts: SourceParts, routes: Iterable[str],
                     start: Callable[[str, Poller], None]) -> None:
        """A reload, second half: build the pollers of those of ``routes`` in ``parts.config`` and start
        each with ``start(task name, poller)``; the schedule source again when ``stop_routes`` stopped it
        (its ticks are claimed in the state store: none fires twice, missed ones are caught up). Other
        routes' pollers are not touched."""
        new_routes = {r.name: r for r in parts.config.routes}
        touched = set(routes)
        for name in sorted(touched):
            route = new_routes.get(name)
            if route is not None and route.source.type in POLLERS:
                poller = POLLERS[route.source.type](route, parts)
                task = f"{route.source.type}:{route.name}"
                self.pollers.append((task, poller))
                start(task, poller)
        if self._schedule_stopped:
            self.schedule, self._schedule_routes = _schedule_source(parts)
            start("schedule", self.schedule)
            self._schedule_stopped = False


class _NoSchedules:
    """The schedule source of a config without schedule routes: nothing fires, and APScheduler is not
    loaded (~0.6 MB of idle memory); a reload that adds a schedule route replaces it (``start_routes``)."""

    def __init__(self) -> None:
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        await self._stopped.wait()

    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109 (the shutdown contract)
        self._stopped.set()


def _schedule_source(parts: SourceParts) -> tuple[Poller, set[str]]:
    routes = [r for r in parts.config.routes if r.source.type == "schedule"]
    if not routes:
        return _NoSchedules(), set()
    from router.sources.schedule.source import ScheduleSource

    source = ScheduleSource(routes, parts.dispatcher, parts.metrics, parts.config.aws,
                            close_timeout=parts.config.server.shutdown_timeout, claims=parts.store)
    return source, {r.name for r in routes}


def build_sources(parts: SourceParts) -> Sources:
    """The schedule source of every schedule route, and a poller per polling route. Raises
    ``ConfigError`` for a schedule that cannot be built."""
    schedule, schedule_routes = _schedule_source(parts)
    pollers = [(f"{r.source.type}:{r.name}", POLLERS[r.source.type](r, parts))
               for r in parts.config.routes if r.source.type in POLLERS]
    return Sources(schedule, pollers, schedule_routes)
