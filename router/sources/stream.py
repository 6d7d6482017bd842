"""The kinesis and dynamodb_stream sources: Lambda's event source mapping for streams.

``StreamSource`` discovers the stream's shards (at start, every ``discover_interval`` and as soon as a
shard ends), starts one ``ShardWorker`` per shard whose parents are finished (read to their end and
checkpointed ``SHARD_END``), and resumes each shard after its checkpoint in the state store, else at the
route's ``starting_position`` (children of a shard we read start at TRIM_HORIZON). The worker reads,
batches, invokes and checkpoints (``router.sources.stream_shard``); the service is behind ``StreamApi``.

Faults (stream not found, credentials, throttling, network, an endpoint restart) are logged at most once
a minute per message, counted in ``router_source_errors_total``, mark the route not ready in ``/readyz``
and are retried with exponential backoff until the stream answers again. ``stop`` stops reading, lets the
batches being invoked finish within the timeout and checkpoints them; nothing unfinished is checkpointed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from router.aws import create_client, describe_error, keep_epoch_timestamps, region_of
from router.clock import Clock
from router.config.models import AwsConfig, DynamodbStreamSourceConfig, KinesisSourceConfig, RouteConfig
from router.core.dispatcher import Dispatch
from router.destinations.base import Destination
from router.errors import StateStoreError
from router.filters import compile_filters
from router.metrics import Metrics
from router.readiness import Readiness
from router.sources.lifecycle import BACKOFF, RouteHealth, StopGate, backoff_delay, until_set
from router.sources.stream_api import IteratorType, ShardInfo, StreamApi
from router.sources.stream_shard import ShardWorker
from router.state.checkpoints import SHARD_END
from router.state.store import StateStore

log = logging.getLogger("router.sources.stream")

AWS_FAULTS: tuple[type[BaseException], ...] = (ClientError, BotoCoreError, OSError, TimeoutError)
MAX_SHARDS = 1000  # shard workers of one route at once; more wait for the next discovery
BATCH_INFO = {"kinesis": "KinesisBatchInfo", "dynamodb_stream": "DDBStreamBatchInfo"}
SERVICE = {"kinesis": "kinesis", "dynamodb_stream": "dynamodbstreams"}

ApiFactory = Callable[[], AbstractAsyncContextManager[StreamApi]]


class StreamSource:
    """One ``type: kinesis`` or ``type: dynamodb_stream`` route; implements ``router.sources.base.Poller``.

    Hidden knobs for tests (not config): ``api`` builds the ``StreamApi`` (default: an aiobotocore client
    and the service's adapter); ``discover_interval`` between shard listings; ``poll_interval`` between
    GetRecords of a caught-up shard (Lambda: 1 s); ``min_call_interval`` between GetRecords of one shard
    (Kinesis allows 5 a second); ``backoff`` after faults and ``retry_backoff`` between retries of a
    failed batch (first, largest); ``clock`` gives epoch seconds (record ages, timestamps), durations and
    pauses.
    """

    def __init__(
        self,
        route: RouteConfig,
        *,
        dispatcher: Dispatch,
        metrics: Metrics,
        readiness: Readiness,
        aws: AwsConfig,
        store: StateStore,
        on_failure: Destination | None = None,
        api: ApiFactory | None = None,
        discover_interval: float = 30.0,
        poll_interval: float = 1.0,
        min_call_interval: float = 0.2,
        backoff: tuple[float, float] = BACKOFF,
        retry_backoff: tuple[float, float] = (0.2, 10.0),
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(route.source, KinesisSourceConfig | DynamodbStreamSourceConfig):
            raise TypeError(f"StreamSource: route '{route.name}' is not a kinesis or dynamodb_stream route")
        self.route = route
        self.cfg: KinesisSourceConfig | DynamodbStreamSourceConfig = route.source
        self.type: str = route.source.type
        self.batch_info_key = BATCH_INFO[self.type]
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.store = store
        self.on_failure = on_failure
        self.function_arn = dispatcher.arn(route.function)
        self.filter = compile_filters(route.filters)  # the loader has checked the patterns
        self.aws_faults = AWS_FAULTS
        self.discover_interval = discover_interval
        self.poll_interval = poll_interval
        self.min_call_interval = min_call_interval
        self._gate = StopGate(clock)
        self.clock = self._gate.clock
        self._health = RouteHealth(route, self.type, service="stream", connecting="connecting to the stream",
                                   metrics=metrics, readiness=readiness, logger=log, gate=self._gate,
                                   backoff=backoff)
        self.extra = self._health.extra
        self.filtered = 0
        self._aws = aws
        self._api_factory = api or self._default_api
        self._retry_backoff = retry_backoff
        self._changed = asyncio.Event()  # a shard ended: discover again now
        self._workers: dict[str, ShardWorker] = {}
        self._done: set[str] = set()  # shards processed to their end (SHARD_END)
        self._read: set[str] = set()  # shards this route has read (children start at TRIM_HORIZON)
        self._tg: asyncio.TaskGroup | None = None
        self._discovery: asyncio.Task[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Read the stream until ``stop``; faults are retried with backoff, never raised."""
        with self._gate.run():
            while not self._gate.stopping:
                self._workers.clear()
                self._done.clear()
                self._read.clear()
                try:
                    async with self._api_factory() as api, asyncio.TaskGroup() as tg:
                        self._tg = tg
                        self._discovery = tg.create_task(self._discover(api),
                                                         name=f"stream-discover:{self.route.name}")
                except Exception as exc:  # a client that cannot be built, or a bug: start afresh
                    self._tg = None
                    self.fault(exc)
                    await self._health.backoff_pause()
                finally:
                    self._tg = None
                    self._discovery = None

    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109 (the Poller contract)
        """Stop reading; batches being invoked get ``timeout`` to finish and be checkpointed."""

        def cancel_idle() -> None:
            if self._discovery is not None:  # it starts shards; nothing of it needs finishing
                self._discovery.cancel()
            for worker in list(self._workers.values()):
                worker.stop()

        def timed_out() -> None:
            busy = sum(w.busy_batches for w in self._workers.values())
            log.warning("route '%s': %d batches did not finish within %gs: cancelled, not checkpointed; "
                        "they run again after a restart", self.route.name, busy, timeout, extra=self.extra)

        def cancel_all() -> None:
            for worker in list(self._workers.values()):
                worker.cancel()

        await self._gate.stop(timeout, cancel_idle=cancel_idle, cancel_all=cancel_all, timed_out=timed_out)

    @property
    def stopping(self) -> bool:
        return self._gate.stopping

    @contextlib.asynccontextmanager
    async def _default_api(self) -> AsyncIterator[StreamApi]:
        region = region_of(self.cfg.stream_arn, self._aws.region)
        aws = self._aws.model_copy(update={"region": region})
        async with create_client(SERVICE[self.type], aws, max_pool_connections=64) as client:
            keep_epoch_timestamps(client)
            if self.type == "kinesis":
                from router.sources.kinesis_api import KinesisApi

                yield KinesisApi(client, self.cfg.stream_arn, region=region,
                                 filter_data=bool(self.route.filters))
            else:
                from router.sources.dynamodb_stream_api import DynamodbStreamApi

                yield DynamodbStreamApi(client, self.cfg.stream_arn, region=region)

    # --- shard discovery ---------------------------------------------------------------------------

    async def _discover(self, api: StreamApi) -> None:
        """List the shards now and then; start those whose turn has come."""
        assert self._tg is not None
        tg = self._tg
        failures = 0
        while not self._gate.stopping:
            self._changed.clear()
            try:
                shards = await api.list_shards()
                checkpoints = await self.store.load_checkpoints(self.route.name)
                for shard, kind, seq, ts in self._startable(shards, checkpoints):
                    if self._gate.stopping:
                        return
                    if kind is None:  # closed before we started at LATEST: nothing will come
                        await self.store.save_checkpoint(self.route.name, shard.shard_id, SHARD_END,
                                                         now=self.clock.time())
                        self._done.add(shard.shard_id)
                        self._changed.set()
                        continue
                    iterator = await api.shard_iterator(shard.shard_id, kind, sequence_number=seq,
                                                        timestamp=ts)
                    worker = ShardWorker(self, api, shard.shard_id, iterator, (kind, seq, ts))
                    worker.ending_sequence = shard.ending_sequence
                    self._workers[shard.shard_id] = worker
                    self._read.add(shard.shard_id)
                    log.info("route '%s': reading shard %s from %s%s", self.route.name, shard.shard_id, kind,
                             f" {seq}" if seq else "", extra={**self.extra, "shard": shard.shard_id})
                    tg.create_task(self._run_worker(worker), name=f"stream-shard:{shard.shard_id}")
            except (ClientError, BotoCoreError, OSError, TimeoutError, StateStoreError) as exc:
                failures += 1
                self.fault(exc)
                if not await self._health.backoff_pause(failures):
                    return
                continue
            failures = 0
            self.healthy()
            # The next listing after ``discover_interval``, or at once when a shard ended; stop cuts it short.
            await until_set(self._changed, self._gate.pause(self.discover_interval))

    def _startable(
        self, shards: list[ShardInfo], checkpoints: dict[str, str],
    ) -> list[tuple[ShardInfo, IteratorType | None, str | None, float | None]]:
        """The shards to start now, each with how to position its iterator (kind None: closed and
        nothing new can come, mark it done). Parents first: a shard waits until its listed parents are
        done; a parent the service no longer lists has aged out and counts as done."""
        listed = {s.shard_id for s in shards}
        for shard in shards:
            worker = self._workers.get(shard.shard_id)
            if worker is not None and shard.ending_sequence is not None:
                worker.ending_sequence = shard.ending_sequence
        for shard_id, seq in checkpoints.items():
            if seq == SHARD_END and shard_id not in self._done:  # read to its end by an earlier run
                self._done.add(shard_id)
                self._read.add(shard_id)
        out: list[tuple[ShardInfo, IteratorType | None, str | None, float | None]] = []
        for shard in shards:
            sid = shard.shard_id
            if sid in self._workers or sid in self._done:
                continue
            if len(self._workers) >= MAX_SHARDS:
                break
            parents = [p for p in shard.parent_ids if p in listed]
            if any(p not in self._done for p in parents):
                continue
            checkpoint = checkpoints.get(sid)
            if checkpoint is not None:
                out.append((shard, "AFTER_SEQUENCE_NUMBER", checkpoint, None))
            elif any(p in self._read for p in shard.parent_ids):
                out.append((shard, "TRIM_HORIZON", None, None))
            elif self.cfg.starting_position == "LATEST" and shard.ending_sequence is not None:
                out.append((shard, None, None, None))
            elif self.cfg.starting_position == "AT_TIMESTAMP":
                out.append((shard, "AT_TIMESTAMP", None, self.cfg.starting_position_timestamp))
            else:
                out.append((shard, self.cfg.starting_position, None, None))
        return out

    async def _run_worker(self, worker: ShardWorker) -> None:
        await worker.run()
        if worker.finished:
            self._done.add(worker.shard_id)
            self._workers.pop(worker.shard_id, None)
            self._changed.set()

    # --- health, faults, waiting -------------------------------------------------------------------

    def healthy(self) -> None:
        self._health.healthy()

    def fault(self, exc: BaseException, *, shard: str | None = None) -> None:
        """Log (at most once a minute per message), count, and mark the route not ready."""
        message, error_type = describe_error(
            exc, what="stream", hint_not_found="check source.stream_arn and aws.region")
        unexpected = not isinstance(exc, (*AWS_FAULTS, StateStoreError))
        self._health.fault(message, error_type.value, exc_info=exc if unexpected else None,
                           extra=None if shard is None else {"shard": shard})

    def store_fault(self, exc: StateStoreError) -> None:
        """A checkpoint that could not be saved: logged and counted; the route stays ready."""
        self._health.error(f"route '{self.route.name}': cannot save a checkpoint: {exc}; "
                           "a restart may process some records again", "connection")

    def backoff_delay(self, failures: int) -> float:
        return self._health.backoff(failures)

    def retry_delay(self, failures: int) -> float:
        return backoff_delay(failures, *self._retry_backoff, jitter=False)

    async def pause(self, delay: float) -> bool:
        """Sleep ``delay`` seconds unless the route stops first; False when it stops."""
        return await self._gate.pause(delay)

    async def deliver_failure(self, record: dict[str, Any]) -> bool:
        """Send a failure record to ``source.on_failure``, retrying with backoff while it fails; False
        when the route stops first (the batch is then not checkpointed)."""
        dest = self.on_failure
        assert dest is not None
        failures = 0
        while True:
            try:
                await dest.send(record)
            except Exception as exc:
                failures += 1
                self.metrics.destination_deliveries.labels(self.route.function, dest.kind, "error").inc()
                self._health.log_limited(
                    f"route '{self.route.name}': cannot deliver a failure record to source.on_failure "
                    f"({dest.kind}): {exc}; retrying, the shard waits", "connection")
                if not await self._health.backoff_pause(failures):
                    return False
                continue
            self.metrics.destination_deliveries.labels(self.route.function, dest.kind, "success").inc()
            return True
