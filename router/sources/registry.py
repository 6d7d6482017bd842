"""Which source type is built by what: the app's one way to turn routes into running sources.

Each source module is imported only when a route uses it (botocore costs ~8 MB of idle memory).
Webhook routes are not here: the HTTP front serves them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
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

    def all(self) -> list[tuple[str, Poller]]:
        return [("schedule", self.schedule), *self.pollers]

    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109 (the shutdown contract)
        """The schedule first (no new fires), then every poller at once, each given ``timeout``."""
        await self.schedule.stop(timeout)
        await asyncio.gather(*(p.stop(timeout) for _, p in self.pollers))


def build_sources(parts: SourceParts) -> Sources:
    """The schedule source of every schedule route, and a poller per polling route. Raises
    ``ConfigError`` for a schedule that cannot be built."""
    from router.sources.schedule.source import ScheduleSource

    routes = parts.config.routes
    schedule = ScheduleSource([r for r in routes if r.source.type == "schedule"], parts.dispatcher,
                              parts.metrics, parts.config.aws,
                              close_timeout=parts.config.server.shutdown_timeout, claims=parts.store)
    pollers = [(f"{r.source.type}:{r.name}", POLLERS[r.source.type](r, parts))
               for r in routes if r.source.type in POLLERS]
    return Sources(schedule, pollers)
