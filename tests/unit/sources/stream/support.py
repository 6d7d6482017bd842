"""Support for the stream engine tests: an in-memory ``StreamApi`` for the engine's own logic, a recording
destination, and a harness running a ``StreamSource`` under the real Dispatcher and a real SQLite state
store (its fixture is in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from router.config.models import AwsConfig, RouteConfig
from router.core.dispatcher import Dispatcher
from router.core.failures import FailedEvents
from router.invocation import Invocation, Result
from router.invokers.base import Invoker
from router.metrics import Metrics
from router.queues.sql import SqlQueue
from router.readiness import Readiness
from router.sources.stream.api import IteratorType, RecordsPage, ShardInfo, StreamApi, StreamRecord
from router.sources.stream.engine import ApiFactory, StreamSource
from router.state.store import StateStore
from tests.clocks import WallClock
from tests.unit.core.helpers import make_config
from tests.waiting import until

ARN = "arn:aws:kinesis:eu-west-1:123456789012:stream/clicks"
Handler = Callable[[list[dict[str, Any]]], Awaitable[Result]]


def ok(value: Any = None) -> Result:
    return Result(payload=json.dumps(value).encode())


def fail(message: str = "boom") -> Result:
    return Result.error("ValueError", message)


def data_of(record: dict[str, Any]) -> str:
    return str(record["kinesis"]["data"])


@dataclass
class FakeShard:
    shard_id: str
    parents: tuple[str, ...] = ()
    records: list[StreamRecord] = field(default_factory=list)
    closed: bool = False


class FakeStream:
    """A stream in memory implementing ``StreamApi``; sequence numbers are global counters (as numbers,
    wider than 64 bits, to check they are never compared as text or machine ints)."""

    type = "kinesis"
    batch_info_key = "KinesisBatchInfo"

    def __init__(self, shards: int = 1, *, clock: Callable[[], float] | None = None) -> None:
        self.stream_arn = ARN
        self.shards: dict[str, FakeShard] = {}
        self._seq = 10**30
        self.clock = clock or (lambda: 1_700_000_000.0)
        self.calls: list[str] = []
        self.fail_next: list[BaseException] = []  # raised by the next calls, in order
        for i in range(shards):
            self.add_shard(f"shardId-{i:012d}")

    def add_shard(self, shard_id: str, parents: tuple[str, ...] = ()) -> None:
        self.shards[shard_id] = FakeShard(shard_id, parents)

    def put(self, shard_id: str, data: str, key: str = "k", arrival: float | None = None,
            size: int | None = None) -> str:
        self._seq += 7
        seq = str(self._seq)
        event = {"kinesis": {"data": data, "partitionKey": key, "sequenceNumber": seq},
                 "eventSource": "aws:kinesis", "eventID": f"{shard_id}:{seq}"}
        self.shards[shard_id].records.append(StreamRecord(
            sequence_number=seq, arrival=self.clock() if arrival is None else arrival, key=key,
            size=len(json.dumps(event)) if size is None else size, event=event,
            filter_data={"data": {"v": data}}))
        return seq

    def split(self, shard_id: str, into: tuple[str, str]) -> None:
        self.shards[shard_id].closed = True
        for child in into:
            self.add_shard(child, (shard_id,))

    def _maybe_fail(self, call: str) -> None:
        self.calls.append(call)
        if self.fail_next:
            raise self.fail_next.pop(0)

    async def list_shards(self) -> list[ShardInfo]:
        self._maybe_fail("list_shards")
        return [ShardInfo(s.shard_id, s.parents, ending_sequence=(
            s.records[-1].sequence_number if s.closed and s.records else None)) for s in self.shards.values()]

    async def shard_iterator(self, shard_id: str, kind: IteratorType, *, sequence_number: str | None = None,
                             timestamp: float | None = None) -> str:
        self._maybe_fail(f"shard_iterator {shard_id} {kind}")
        records = self.shards[shard_id].records
        if kind == "TRIM_HORIZON":
            index = 0
        elif kind == "LATEST":
            index = len(records)
        elif kind == "AT_TIMESTAMP":
            assert timestamp is not None
            index = next((i for i, r in enumerate(records) if r.arrival >= timestamp), len(records))
        else:
            assert sequence_number is not None
            index = next((i + 1 for i, r in enumerate(records) if r.sequence_number == sequence_number), 0)
        return f"{shard_id}|{index}"

    async def get_records(self, iterator: str, limit: int) -> RecordsPage:
        shard_id, _, index_text = iterator.partition("|")
        self._maybe_fail(f"get_records {shard_id}")
        shard = self.shards[shard_id]
        index = int(index_text)
        page = shard.records[index:index + limit]
        end = index + len(page)
        done = shard.closed and end >= len(shard.records)
        return RecordsPage(records=list(page), next_iterator=None if done else f"{shard_id}|{end}",
                           millis_behind=0)


class RecordingFunction:
    """An in-process function: ``handler(records) -> Result``; records each batch's data in order."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.handler = handler
        self.batches: list[list[str]] = []
        self.running = 0
        self.max_running = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def invoke(self, invocation: Invocation) -> Result:
        records = json.loads(invocation.payload)["Records"]
        self.batches.append([data_of(r) for r in records])
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            return await self.handler(records) if self.handler is not None else ok(None)
        finally:
            self.running -= 1

    def seen(self) -> list[str]:
        return [d for batch in self.batches for d in batch]


class RecordingDestination:
    """An on_failure destination that keeps what it is sent; fails while ``failing`` is set."""

    kind = "file"

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.failing = False
        self.attempts = 0

    async def send(self, record: dict[str, Any], trace: str | None = None) -> None:
        self.attempts += 1
        if self.failing:
            raise OSError("destination down")
        self.records.append(record)


def fake_api(stream: StreamApi) -> ApiFactory:
    @contextlib.asynccontextmanager
    async def factory() -> AsyncIterator[StreamApi]:
        yield stream

    return factory


class StreamHarness:
    """A real Dispatcher and SQLite state store; ``source()`` runs a StreamSource for a block."""

    def __init__(self, tmp_path: Path, session: aiohttp.ClientSession) -> None:
        self.tmp_path = tmp_path
        self.session = session
        self.metrics = Metrics()
        self.readiness = Readiness()
        self.store: StateStore | None = None
        self._open_lock = asyncio.Lock()
        self.route_name = "clicks"

    async def open_store(self) -> StateStore:
        async with self._open_lock:
            if self.store is None:
                store = StateStore.from_url(f"sqlite:///{self.tmp_path / 'state.db'}", self.tmp_path)
                await store.open()
                self.store = store
        return self.store

    @contextlib.asynccontextmanager
    async def source(
        self, fn: Invoker, *, api: ApiFactory, aws: AwsConfig | None = None,
        stream_arn: str = ARN, source_type: str = "kinesis", concurrency: int | None = None,
        filters: list[dict[str, Any]] | None = None, on_failure: Any = None, stop_timeout: float = 10.0,
        clock: Callable[[], float] | None = None, failures: FailedEvents | None = None, **source: Any,
    ) -> AsyncIterator[StreamSource]:
        store = await self.open_store()
        aws = aws or AwsConfig(region="eu-west-1", account_id="123456789012")
        function: dict[str, Any] = {} if concurrency is None else {"concurrency": concurrency}
        config = make_config({"fn": function}, config_dir=self.tmp_path, aws=aws.model_dump())
        dispatcher = Dispatcher(config=config, invokers={"fn": fn}, queue=SqlQueue(store),
                                metrics=self.metrics)
        source.setdefault("starting_position", "TRIM_HORIZON")
        route = RouteConfig.model_validate({
            "name": self.route_name, "function": "fn", "filters": filters or [],
            "source": {"type": source_type, "stream_arn": stream_arn, **source},
        })
        extra: dict[str, Any] = {} if clock is None else {"clock": WallClock(clock)}
        if failures is not None:
            extra["failures"] = failures
        src = StreamSource(route, dispatcher=dispatcher, metrics=self.metrics, readiness=self.readiness,
                           aws=aws, store=store, on_failure=on_failure, api=api, discover_interval=0.2,
                           poll_interval=0.02, min_call_interval=0.0, backoff=(0.02, 0.1),
                           retry_backoff=(0.01, 0.05), **extra)
        task = asyncio.create_task(src.run())
        try:
            yield src
        finally:
            await src.stop(stop_timeout)
            await task

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def errors(self, source_type: str = "kinesis") -> float:
        return self.metric("router_source_errors_total", route=self.route_name, type=source_type)

    async def checkpoints(self) -> dict[str, str]:
        store = await self.open_store()
        return await store.load_checkpoints(self.route_name)

    async def wait_checkpoints(self, cond: Callable[[dict[str, str]], bool], what: str,
                               deadline: float = 10.0) -> None:
        """Poll the store's checkpoints of the route until ``cond`` holds; fail after ``deadline``."""

        async def holds() -> bool:
            return cond(await self.checkpoints())

        await until(holds, what, deadline=deadline)

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()
