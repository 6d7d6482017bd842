"""The kinesis and dynamodb_stream sources: Lambda's event source mapping for streams.

``StreamSource`` discovers the stream's shards (at start, every ``discover_interval`` and as soon as a
shard ends), starts one ``ShardWorker`` per shard whose parents are finished (read to their end and
checkpointed ``SHARD_END``), and resumes each shard after its checkpoint in the state store, else at the
route's ``starting_position`` (children of a shard we read start at TRIM_HORIZON). The worker reads,
batches, invokes and checkpoints (``router.sources.stream.shard``); the service is behind ``StreamApi``.

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

from botocore.exceptions import BotoCoreError, ClientError

from router.aws import create_client, keep_epoch_timestamps, region_of
from router.clock import Clock
from router.config.models import AwsConfig, DynamodbStreamSourceConfig, KinesisSourceConfig, RouteConfig
from router.core.dispatcher import Dispatch
from router.destinations.base import Destination
from router.errors import StateStoreError
from router.filters import compile_filters
from router.metrics import Metrics
from router.readiness import Readiness
from router.sources.lifecycle import BACKOFF, RouteHealth, StopGate, until_set
from router.sources.stream.api import IteratorType, ShardInfo, StreamApi
from router.sources.stream.context import ShardContext
from router.sources.stream.shard import ShardWorker
from router.state.checkpoints import SHARD_END
from router.state.store import StateStore

log = logging.getLogger("router.sources.stream")

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
        self._cfg: KinesisSourceConfig | DynamodbStreamSourceConfig = route.source
        self._type: str = route.source.type
        self._store = store
        self._discover_interval = discover_interval
        self._gate = StopGate(clock)
        self._health = RouteHealth(route, self._type, service="stream", connecting="connecting to the stream",
                                   metrics=metrics, readiness=readiness, logger=log, gate=self._gate,
                                   backoff=backoff)
        self._ctx = ShardContext(
            route_name=route.name, function=route.function, type=self._type, cfg=self._cfg,
            dispatcher=dispatcher, store=store, metrics=metrics, health=self._health, gate=self._gate,
            filter=compile_filters(route.filters),  # the loader has checked the patterns
            on_failure=on_failure, function_arn=dispatcher.arn(route.function),
            batch_info_key=BATCH_INFO[self._type], poll_interval=poll_interval,
            min_call_interval=min_call_interval, retry_backoff=retry_backoff,
        )
        self._extra = self._health.extra
        self._aws = aws
        self._api_factory = api or self._default_api
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
                    self._ctx.fault(exc)
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
                        "they run again after a restart", self.route.name, busy, timeout, extra=self._extra)

        def cancel_all() -> None:
            for worker in list(self._workers.values()):
                worker.cancel()

        await self._gate.stop(timeout, cancel_idle=cancel_idle, cancel_all=cancel_all, timed_out=timed_out)

    @property
    def filtered(self) -> int:
        """Records skipped because no filter matched."""
        return self._ctx.filtered

    @contextlib.asynccontextmanager
    async def _default_api(self) -> AsyncIterator[StreamApi]:
        region = region_of(self._cfg.stream_arn, self._aws.region)
        aws = self._aws.model_copy(update={"region": region})
        async with create_client(SERVICE[self._type], aws, max_pool_connections=64) as client:
            keep_epoch_timestamps(client)
            if self._type == "kinesis":
                from router.sources.stream.kinesis import KinesisApi

                yield KinesisApi(client, self._cfg.stream_arn, region=region,
                                 filter_data=bool(self.route.filters))
            else:
                from router.sources.stream.dynamodb_stream import DynamodbStreamApi

                yield DynamodbStreamApi(client, self._cfg.stream_arn, region=region)

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
                checkpoints = await self._store.load_checkpoints(self.route.name)
                for shard, kind, seq, ts in self._startable(shards, checkpoints):
                    if self._gate.stopping:
                        return
                    if kind is None:  # closed before we started at LATEST: nothing will come
                        await self._store.save_checkpoint(self.route.name, shard.shard_id, SHARD_END,
                                                         now=self._gate.clock.time())
                        self._done.add(shard.shard_id)
                        self._changed.set()
                        continue
                    iterator = await api.shard_iterator(shard.shard_id, kind, sequence_number=seq,
                                                        timestamp=ts)
                    worker = ShardWorker(self._ctx, api, shard.shard_id, iterator, (kind, seq, ts))
                    worker.ending_sequence = shard.ending_sequence
                    self._workers[shard.shard_id] = worker
                    self._read.add(shard.shard_id)
                    log.info("route '%s': reading shard %s from %s%s", self.route.name, shard.shard_id, kind,
                             f" {seq}" if seq else "", extra={**self._extra, "shard": shard.shard_id})
                    tg.create_task(self._run_worker(worker), name=f"stream-shard:{shard.shard_id}")
            except (ClientError, BotoCoreError, OSError, TimeoutError, StateStoreError) as exc:
                failures += 1
                self._ctx.fault(exc)
                if not await self._health.backoff_pause(failures):
                    return
                continue
            failures = 0
            self._health.healthy()
            # The next listing after ``discover_interval``, or at once when a shard ended; stop cuts it short.
            await until_set(self._changed, self._gate.pause(self._discover_interval))

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
            elif self._cfg.starting_position == "LATEST" and shard.ending_sequence is not None:
                out.append((shard, None, None, None))
            elif self._cfg.starting_position == "AT_TIMESTAMP":
                out.append((shard, "AT_TIMESTAMP", None, self._cfg.starting_position_timestamp))
            else:
                out.append((shard, self._cfg.starting_position, None, None))
        return out

    async def _run_worker(self, worker: ShardWorker) -> None:
        await worker.run()
        if worker.finished:
            self._done.add(worker.shard_id)
            self._workers.pop(worker.shard_id, None)
            self._changed.set()
