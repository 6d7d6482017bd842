"""What the shard workers of one stream route share: its config, services, health and stop, and how
the route reports a fault, a checkpoint not saved and a failure record to deliver."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from router.aws import describe_error
from router.clock import Clock
from router.config.models import DynamodbStreamSourceConfig, KinesisSourceConfig
from router.core.dispatcher import Dispatch
from router.core.failures import FailedEvents
from router.destinations.base import Destination
from router.errors import StateStoreError
from router.filters import Filter
from router.metrics import Metrics
from router.sources.lifecycle import RouteHealth, StopGate, backoff_delay
from router.sources.stream.api import StreamRecord
from router.state.store import StateStore

log = logging.getLogger("router.sources.stream")

AWS_FAULTS: tuple[type[BaseException], ...] = (ClientError, BotoCoreError, OSError, TimeoutError)


@dataclass(slots=True, eq=False)
class ShardContext:
    """One stream route as its shard workers see it (``StreamSource`` builds it once).

    ``poll_interval``: between GetRecords of a caught-up shard; ``min_call_interval``: between GetRecords
    of one shard; ``retry_backoff``: between retries of a failed batch (first, largest)."""

    route_name: str
    function: str
    type: str
    cfg: KinesisSourceConfig | DynamodbStreamSourceConfig
    dispatcher: Dispatch
    store: StateStore
    metrics: Metrics
    health: RouteHealth
    gate: StopGate
    filter: Filter
    on_failure: Destination | None
    function_arn: str
    batch_info_key: str
    poll_interval: float
    min_call_interval: float
    retry_backoff: tuple[float, float]
    failures: FailedEvents | None = None  # given-up batches are kept there (``router failures``)
    clock: Clock = field(init=False)
    extra: dict[str, Any] = field(init=False)
    filtered: int = 0  # records skipped because no filter matched

    def __post_init__(self) -> None:
        self.clock = self.gate.clock
        self.extra = self.health.extra

    def fault(self, exc: BaseException, *, shard: str | None = None) -> None:
        """A fault of the stream: logged (at most once a minute per message), counted, route not ready."""
        message, error_type = describe_error(
            exc, what="stream", hint_not_found="check source.stream_arn and aws.region")
        unexpected = not isinstance(exc, (*AWS_FAULTS, StateStoreError))
        self.health.fault(message, error_type.value, exc_info=exc if unexpected else None,
                          extra=None if shard is None else {"shard": shard})

    def store_fault(self, exc: StateStoreError) -> None:
        """A checkpoint that could not be saved: logged and counted; the route stays ready."""
        self.health.error(f"route '{self.route_name}': cannot save a checkpoint: {exc}; "
                          "a restart may process some records again", "connection")

    def retry_delay(self, failures: int) -> float:
        return backoff_delay(failures, *self.retry_backoff, jitter=False)

    async def deliver_failure(self, record: dict[str, Any], records: Sequence[StreamRecord]) -> bool:
        """Send a failure record to ``source.on_failure``, retrying with backoff while it fails; False
        when the route stops first (the batch is then not checkpointed). An S3 destination also gets the
        batch's ``records`` (``payload: {"Records": [...]}``), as Lambda sends them to S3 only."""
        dest = self.on_failure
        assert dest is not None
        if dest.kind == "s3":
            record = {**record, "payload": {"Records": [r.event for r in records]}}
        failures = 0
        while True:
            try:
                await dest.send(record)
            except Exception as exc:
                failures += 1
                self.metrics.destination_deliveries.labels(self.function, dest.kind, "error").inc()
                self.health.log_limited(
                    f"route '{self.route_name}': cannot deliver a failure record to source.on_failure "
                    f"({dest.kind}): {exc}; retrying, the shard waits", "connection")
                if not await self.health.backoff_pause(failures):
                    return False
                continue
            self.metrics.destination_deliveries.labels(self.function, dest.kind, "success").inc()
            return True
