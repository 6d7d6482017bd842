"""The kinesis and dynamodb_stream sources: Lambda's event source mapping for streams.

``StreamSource`` discovers the stream's shards (at start, every ``discover_interval`` and as soon as a
shard ends) and creates a lease in the state store for each shard whose parents are finished (read to
their end and checkpointed ``SHARD_END``). Replicas sharing the store balance these leases
(``router.sources.stream.leases``, the Kinesis Client Library's way); this one starts a ``ShardWorker``
for each lease it takes and resumes the shard after its checkpoint, else at the route's
``starting_position`` (children of a shard read start at TRIM_HORIZON). The worker reads, batches, invokes
and checkpoints (``router.sources.stream.shard``), each checkpoint fenced by the lease; the service is
behind ``StreamApi``. A worker stops when its lease is lost, or is handed over when another replica asks
for it: it finishes its batches, checkpoints, then the lease is released. On a single SQLite replica
(``exclusive``) the same code runs with one owner, which frees its earlier run's leases at start.

Faults (stream not found, credentials, throttling, network, an endpoint restart) are logged at most once
a minute per message, counted in ``router_source_errors_total``, mark the route not ready in ``/readyz``
and are retried with exponential backoff until the stream answers again. ``stop`` stops reading, lets the
batches being invoked finish within the timeout and checkpoints them (leases are renewed meanwhile), then
releases the leases so other replicas take them at once; nothing unfinished is checkpointed.
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
from router.core.failures import FailedEvents
from router.destinations.base import Destination
from router.errors import StateStoreError
from router.filters import compile_filters
from router.metrics import Metrics
from router.readiness import Readiness
from router.sources.lifecycle import BACKOFF, RouteHealth, StopGate, until_set
from router.sources.stream.api import IteratorType, ShardInfo, StreamApi
from router.sources.stream.batch import DYNAMODB_BATCH_INFO
from router.sources.stream.context import ShardContext
from router.sources.stream.leases import ShardLeases, default_replica_id
from router.sources.stream.shard import ShardWorker
from router.state.checkpoints import SHARD_END
from router.state.leases import LeaseLost, LeaseToken
from router.state.store import StateStore

log = logging.getLogger("router.sources.stream")

MAX_SHARDS = 1000  # shard workers of one route at once; more wait for the next discovery
BATCH_INFO = {"kinesis": "KinesisBatchInfo", "dynamodb_stream": DYNAMODB_BATCH_INFO}
SERVICE = {"kinesis": "kinesis", "dynamodb_stream": "dynamodbstreams"}

ApiFactory = Callable[[], AbstractAsyncContextManager[StreamApi]]
Position = tuple[IteratorType | None, str | None, float | None]
"""How to position a shard's iterator: kind (None: closed and nothing new can come), sequence, timestamp."""
LEASE_DURATION = 10.0
"""Seconds a shard lease lasts unless renewed (renewed every third of it): a dead replica's shards move
to the others within about this long."""


class StreamSource:
    """One ``type: kinesis`` or ``type: dynamodb_stream`` route; implements ``router.sources.base.Poller``.

    Hidden knobs for tests (not config): ``api`` builds the ``StreamApi`` (default: an aiobotocore client
    and the service's adapter); ``discover_interval`` between shard listings; ``poll_interval`` between
    GetRecords of a caught-up shard (Lambda: 1 s); ``min_call_interval`` between GetRecords of one shard
    (Kinesis allows 5 a second); ``backoff`` after faults and ``retry_backoff`` between retries of a
    failed batch (first, largest); ``clock`` gives epoch seconds (record ages, timestamps), durations and
    pauses. ``lease_duration`` and ``replica_id`` come from ``state.shard_lease_duration`` and
    ``state.replica_id``; ``exclusive`` (default: a SQLite store, one replica) frees the route's leases at
    start.
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
        lease_duration: float = LEASE_DURATION,
        replica_id: str | None = None,
        exclusive: bool | None = None,
        failures: FailedEvents | None = None,
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
            min_call_interval=min_call_interval, retry_backoff=retry_backoff, failures=failures,
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
        self._leasing: asyncio.Task[None] | None = None
        self._exclusive = exclusive  # None: decided at run, by the store's dialect
        self._renew_interval = lease_duration / 3
        self._leases = ShardLeases(store, route.name, owner=replica_id or default_replica_id(),
                                   duration=lease_duration, gauge=metrics.shard_leases.labels(route.name),
                                   extra=self._extra)
        self._known: dict[str, ShardInfo] = {}  # shards that may be leased now (parents done, not done)
        self._lease_wake = asyncio.Event()  # leases to create, or a worker ended: take leases now
        self._handing: set[str] = set()  # shards being handed over (stopping) on request
        self._renew_wake = asyncio.Event()  # stopping, or a worker ended: check whether renewing is over

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
                        self._leasing = tg.create_task(self._lease(api),
                                                       name=f"stream-lease:{self.route.name}")
                except Exception as exc:  # a client that cannot be built, or a bug: start afresh
                    self._tg = None
                    self._ctx.fault(exc)
                    await self._health.backoff_pause()
                finally:
                    self._tg = None
                    self._discovery = None
                    self._leasing = None

    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109 (the Poller contract)
        """Stop reading; batches being invoked get ``timeout`` to finish and be checkpointed."""

        def cancel_idle() -> None:
            if self._discovery is not None:  # it lists shards; nothing of it needs finishing
                self._discovery.cancel()
            self._lease_wake.set()
            self._renew_wake.set()
            for worker in list(self._workers.values()):
                worker.stop()

        def timed_out() -> None:
            busy = sum(w.busy_batches for w in self._workers.values())
            log.warning("route '%s': %d batches did not finish within %gs: cancelled, not checkpointed; "
                        "they run again after a restart", self.route.name, busy, timeout, extra=self._extra)

        def cancel_all() -> None:
            if self._leasing is not None:
                self._leasing.cancel()
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
        """List the shards now and then; create the leases of those whose turn has come."""
        failures = 0
        while not self._gate.stopping:
            self._changed.clear()
            try:
                shards = await api.list_shards()
                checkpoints = await self._store.load_checkpoints(self.route.name)
                known: dict[str, ShardInfo] = {}
                for shard in self._leasable(shards, checkpoints):
                    if self._gate.stopping:
                        return
                    checkpoint = checkpoints.get(shard.shard_id)
                    if self._position(shard, checkpoint)[0] is None and shard.shard_id not in self._workers:
                        # closed before we started at LATEST: nothing will come
                        await self._store.save_checkpoint(self.route.name, shard.shard_id, SHARD_END,
                                                         now=self._gate.clock.time())
                        self._done.add(shard.shard_id)
                        self._changed.set()
                        continue
                    known[shard.shard_id] = shard
                self._known = known
                await self._store.ensure_leases(self.route.name, sorted(known))
                self._lease_wake.set()
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

    def _leasable(self, shards: list[ShardInfo], checkpoints: dict[str, str]) -> list[ShardInfo]:
        """The shards that may be read now: not done, parents first (a shard waits until its listed
        parents are done; a parent the service no longer lists has aged out and counts as done)."""
        listed = {s.shard_id for s in shards}
        for shard in shards:
            worker = self._workers.get(shard.shard_id)
            if worker is not None and shard.ending_sequence is not None:
                worker.ending_sequence = shard.ending_sequence
        for shard_id, seq in checkpoints.items():
            if seq == SHARD_END and shard_id not in self._done:  # read to its end earlier, or elsewhere
                self._done.add(shard_id)
                self._read.add(shard_id)
        out: list[ShardInfo] = []
        for shard in shards:
            if shard.shard_id in self._done:
                continue
            if any(p not in self._done for p in shard.parent_ids if p in listed):
                continue
            out.append(shard)
        return out

    def _position(self, shard: ShardInfo, checkpoint: str | None) -> Position:
        """Where a shard's reading starts: after its checkpoint, else at TRIM_HORIZON when a parent was
        read, else at the route's starting position (kind None: closed before we started at LATEST)."""
        if checkpoint is not None:
            return ("AFTER_SEQUENCE_NUMBER", checkpoint, None)
        if any(p in self._read for p in shard.parent_ids):
            return ("TRIM_HORIZON", None, None)
        if self._cfg.starting_position == "LATEST" and shard.ending_sequence is not None:
            return (None, None, None)
        if self._cfg.starting_position == "AT_TIMESTAMP":
            return ("AT_TIMESTAMP", None, self._cfg.starting_position_timestamp)
        return (self._cfg.starting_position, None, None)

    # --- leases ------------------------------------------------------------------------------------

    async def _lease(self, api: StreamApi) -> None:
        """Renew the leases held every third of their duration and stop the shards whose lease is lost
        or hand over those asked for; beside it, take this replica's share. While stopping, only renew,
        until every shard has stopped (its last checkpoint needs the lease)."""
        assert self._tg is not None
        tg = self._tg
        leases, clock = self._leases, self._gate.clock
        for shard_id in list(leases.held):  # a restart of ``run``: its workers are gone
            await leases.release(shard_id, clock.time(), why="the route's reader restarted")
        if self._store.dialect == "sqlite" if self._exclusive is None else self._exclusive:
            await self._free_earlier_leases()
        taking = tg.create_task(self._take_loop(api, tg), name=f"stream-take:{self.route.name}")
        try:
            while not self._gate.stopping or self._workers:
                self._renew_wake.clear()
                await self._renew()
                await until_set(self._renew_wake, clock.sleep(self._renew_interval))
        finally:
            taking.cancel()

    async def _renew(self) -> None:
        leases, clock = self._leases, self._gate.clock
        try:
            lost, asked = await leases.renew(clock.time())
        except StateStoreError as exc:
            lost, asked = leases.expired(clock.time()), {}
            self._ctx.store_fault(exc)
        for shard_id in lost:
            if (worker := self._workers.get(shard_id)) is not None:
                worker.lose()
        for shard_id, asker in asked.items():
            worker = self._workers.get(shard_id)
            if worker is None or self._gate.stopping or shard_id in self._handing:
                continue
            self._handing.add(shard_id)
            log.info("route '%s': shard %s: handing the lease over to %s (asked for it): the batches running "
                     "finish and are checkpointed first", self.route.name, shard_id, asker,
                     extra={**self._extra, "shard": shard_id})
            worker.stop()

    async def _take_loop(self, api: StreamApi, tg: asyncio.TaskGroup) -> None:
        """Take this replica's share every renewal interval, and at once when leases were created or a
        shard stopped here."""
        failures = 0
        while not self._gate.stopping:
            self._lease_wake.clear()
            try:
                await self._take(api, tg)
                failures = 0
            except (ClientError, BotoCoreError, OSError, TimeoutError, StateStoreError) as exc:
                failures += 1
                self._ctx.fault(exc)
            delay = self._renew_interval if not failures else min(self._renew_interval,
                                                                   self._health.backoff(failures))
            await until_set(self._lease_wake, self._gate.pause(delay))

    async def _free_earlier_leases(self) -> None:
        """A single replica (SQLite): the leases left by its earlier run are its own; free them now rather
        than wait for them to run out. Retried until the store answers or the route stops."""
        failures = 0
        while not self._gate.stopping:
            try:
                freed = await self._store.free_leases(self.route.name)
            except StateStoreError as exc:
                failures += 1
                self._ctx.fault(exc)
                if not await self._health.backoff_pause(failures):
                    return
                continue
            if freed:
                log.info("route '%s': freed %d shard leases of an earlier run", self.route.name, freed,
                         extra=self._extra)
            return

    async def _take(self, api: StreamApi, tg: asyncio.TaskGroup) -> None:
        """Take this replica's share of the leases and start a worker for each lease taken."""
        room = MAX_SHARDS - len(self._workers)
        taken = await self._leases.take(self._gate.clock.time(), known=set(self._known),
                                        busy=set(self._workers), room=room)
        if not taken:
            return
        checkpoints = await self._store.load_checkpoints(self.route.name)  # the last owner's, if any
        for shard_id, _ in taken:
            token = self._leases.held.get(shard_id)
            shard = self._known.get(shard_id)
            if token is None:
                continue
            if shard is None or self._gate.stopping:  # ended meanwhile, or the route stops
                await self._leases.release(shard_id, self._gate.clock.time(), why="not read after all")
                continue
            try:
                await self._start(api, tg, shard, token, checkpoints.get(shard_id))
            except BaseException:
                await self._leases.release(shard_id, self._gate.clock.time(), why="could not start reading")
                raise

    async def _start(self, api: StreamApi, tg: asyncio.TaskGroup, shard: ShardInfo, token: LeaseToken,
                     checkpoint: str | None) -> None:
        kind, seq, ts = self._position(shard, checkpoint)
        sid = shard.shard_id
        if checkpoint == SHARD_END or kind is None:  # processed to its end meanwhile, or nothing to read
            with contextlib.suppress(LeaseLost):
                await self._store.save_checkpoint(self.route.name, sid, SHARD_END,
                                                  now=self._gate.clock.time(), lease=token)
            self._leases.drop(sid)
            self._done.add(sid)
            self._changed.set()
            return
        iterator = await api.shard_iterator(sid, kind, sequence_number=seq, timestamp=ts)
        worker = ShardWorker(self._ctx, api, sid, iterator, (kind, seq, ts), lease=token)
        worker.ending_sequence = shard.ending_sequence
        self._workers[sid] = worker
        self._read.add(sid)
        log.info("route '%s': reading shard %s from %s%s", self.route.name, sid, kind,
                 f" {seq}" if seq else "", extra={**self._extra, "shard": sid})
        tg.create_task(self._run_worker(worker), name=f"stream-shard:{sid}")

    async def _run_worker(self, worker: ShardWorker) -> None:
        await worker.run()
        sid = worker.shard_id
        self._workers.pop(sid, None)
        self._handing.discard(sid)
        if worker.finished:  # its SHARD_END checkpoint deleted the lease
            self._done.add(sid)
            self._leases.drop(sid)
            self._changed.set()
        elif worker.lost:
            self._leases.drop(sid)
        else:  # stopped or handed over: its last checkpoint is written, another replica may go on
            why = "the route stops" if self._gate.stopping else "handed over"
            await self._leases.release(sid, self._gate.clock.time(), why=why)
        self._lease_wake.set()
        self._renew_wake.set()
