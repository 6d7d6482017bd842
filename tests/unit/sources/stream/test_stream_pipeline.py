"""The stream engine's pipeline: the reader reads the next page while batches run (bounded), and lanes do
not wait for checkpoint writes (coalesced, the last one saved at stop). In-memory ``StreamApi``, the real
Dispatcher and a real SQLite state store; the timestamp parser against moto_server."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from router.aws import create_client, keep_epoch_timestamps
from router.config.models import AwsConfig
from router.invocation import Result
from router.sources.stream.api import RecordsPage
from router.sources.stream.engine import StreamSource
from router.state.leases import LeaseToken
from router.state.store import StateStore
from tests.unit.sources.stream.support import (
    FakeStream,
    RecordingFunction,
    StreamHarness,
    fake_api,
    ok,
)
from tests.waiting import until

S0 = "shardId-000000000000"


class WatchedStream(FakeStream):
    """Records, at each GetRecords, how many records waited in the shard's lanes (the read-ahead)."""

    def __init__(self) -> None:
        super().__init__(1)
        self.source: StreamSource | None = None
        self.waiting_at_call: list[int] = []

    async def get_records(self, iterator: str, limit: int) -> RecordsPage:
        assert self.source is not None
        worker = self.source._workers[S0]
        self.waiting_at_call.append(worker.waiting)
        assert worker.waiting + limit <= worker.read_ahead, "a page was requested that does not fit"
        return await super().get_records(iterator, limit)


async def test_reader_reads_the_next_page_while_a_batch_runs_and_stays_bounded(
    stream_harness: StreamHarness,
) -> None:
    stream = WatchedStream()
    for i in range(2000):  # 4 pages of 500 (GetRecords' Limit for batch_size 100)
        stream.put(S0, f"r{i}")
    release = asyncio.Event()

    async def handler(records: list[dict[str, Any]]) -> Result:
        await release.wait()
        return ok(None)

    fn = RecordingFunction(handler)
    async with stream_harness.source(fn, api=fake_api(stream), batch_size=100) as src:
        stream.source = src
        try:
            await until(lambda: fn.running == 1, what="the first batch running")
            # Pages 1 and 2 fit in the read-ahead (1,000); page 3 waits until the lanes take page 1.
            await until(lambda: len(stream.waiting_at_call) == 2, what="page 2 read during batch 1")
            worker = src._workers[S0]
            await until(lambda: worker.waiting == 900, what="page 2 in the lanes")
            assert len(fn.batches) == 1
            assert fn.running == 1
        finally:
            release.set()
        await until(lambda: len(fn.seen()) == 2000, what="every record")
    assert fn.seen() == [f"r{i}" for i in range(2000)]
    assert all(len(b) <= 100 for b in fn.batches)
    assert stream.waiting_at_call[:2] == [0, 500]  # page 2 asked for at once: it fits


class GatedStore:
    """Holds checkpoint writes of the real store until ``release`` is set; counts them."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.release = asyncio.Event()
        self.writing = asyncio.Event()  # a write is held
        self.saves: list[str] = []
        self._save = store.save_checkpoint

    async def save_checkpoint(self, route: str, shard_id: str, sequence_number: str, *, now: float,
                              lease: LeaseToken | None = None) -> None:
        self.saves.append(sequence_number)
        self.writing.set()
        await self.release.wait()
        await self._save(route, shard_id, sequence_number, now=now, lease=lease)


async def test_lanes_do_not_wait_for_checkpoint_writes_which_are_coalesced(
    stream_harness: StreamHarness,
) -> None:
    stream = FakeStream(1)
    seqs = [stream.put(S0, f"r{i}") for i in range(50)]
    store = await stream_harness.open_store()
    gate = GatedStore(store)
    store.save_checkpoint = gate.save_checkpoint  # type: ignore[method-assign]

    async def handler(records: list[dict[str, Any]]) -> Result:
        if records[0]["kinesis"]["data"] != "r0":
            await gate.writing.wait()  # batch 1's checkpoint is being written (and held)
        return ok(None)

    fn = RecordingFunction(handler)
    async with stream_harness.source(fn, api=fake_api(stream), batch_size=10):
        try:
            await until(lambda: len(fn.batches) == 5 and fn.running == 0,
                        what="every batch while the first write waits")
            assert gate.saves == [seqs[9]]  # one write at a time
        finally:
            gate.release.set()
        await stream_harness.wait_checkpoints(lambda cps: cps.get(S0) == seqs[-1], what="last checkpoint")
    assert gate.saves == [seqs[9], seqs[-1]]  # batches 2-5 in one write


async def test_stop_saves_the_checkpoint_reached_during_a_write(stream_harness: StreamHarness) -> None:
    stream = FakeStream(1)
    seqs = [stream.put(S0, f"r{i}") for i in range(30)]
    store = await stream_harness.open_store()
    gate = GatedStore(store)
    store.save_checkpoint = gate.save_checkpoint  # type: ignore[method-assign]
    fn = RecordingFunction()
    async with stream_harness.source(fn, api=fake_api(stream), batch_size=10) as src:
        try:
            await until(lambda: len(fn.batches) == 3 and len(gate.saves) == 1, what="writes held")
            stopping = asyncio.create_task(src.stop(10))
            done, _ = await asyncio.wait({stopping}, timeout=0.05)
            assert not done  # stop waits for the checkpoint write
        finally:
            gate.release.set()
        await stopping
    assert (await stream_harness.checkpoints())[S0] == seqs[-1]


async def test_timestamps_stay_epoch_numbers(moto_server: str) -> None:
    aws = AwsConfig(region="eu-west-1", endpoint_url=moto_server, account_id="123456789012")
    async with create_client("kinesis", aws) as plain, create_client("kinesis", aws) as fast:
        keep_epoch_timestamps(fast)
        name = f"ts-{id(plain)}"
        await plain.create_stream(StreamName=name, ShardCount=1)
        arn = (await plain.describe_stream_summary(StreamName=name))["StreamDescriptionSummary"]["StreamARN"]
        await plain.put_record(StreamARN=arn, Data=b"{}", PartitionKey="k")
        shard = (await plain.list_shards(StreamARN=arn))["Shards"][0]["ShardId"]
        pages = []
        for client in (plain, fast):
            it = (await client.get_shard_iterator(StreamARN=arn, ShardId=shard,
                                                  ShardIteratorType="TRIM_HORIZON"))["ShardIterator"]
            pages.append(await client.get_records(ShardIterator=it, StreamARN=arn))
        parsed = pages[0]["Records"][0]["ApproximateArrivalTimestamp"]
        raw = pages[1]["Records"][0]["ApproximateArrivalTimestamp"]
        assert isinstance(parsed, dt.datetime)
        assert isinstance(raw, float)
        assert abs(raw - parsed.timestamp()) < 0.001
        other = (await fast.describe_stream_summary(StreamName=name))["StreamDescriptionSummary"]
        assert isinstance(other["StreamCreationTimestamp"], float)  # every timestamp of this client


async def test_a_paused_route_makes_no_get_records_until_resumed(
    stream_harness: StreamHarness, monkeypatch: Any,
) -> None:
    from router.sources.stream import shard

    monkeypatch.setattr(shard, "PAUSED_CHECK", 0.005)
    stream = FakeStream(1)
    stream.put(S0, "before")
    fn = RecordingFunction()
    paused = {"on": False, "checks": 0}

    def route_enabled(route: str) -> bool:
        if paused["on"]:
            paused["checks"] += 1
        return not paused["on"]

    async with stream_harness.source(fn, api=fake_api(stream), batch_size=10) as src:
        src._ctx.dispatcher.route_enabled = route_enabled  # type: ignore[method-assign]
        await until(lambda: fn.seen() == ["before"], what="the first record")
        paused["on"] = True
        await until(lambda: paused["checks"] >= 2, what="the reader seeing the pause")
        calls = len([c for c in stream.calls if c.startswith("get_records")])
        stream.put(S0, "while paused")
        await until(lambda: paused["checks"] >= 50, what="50 more looks at the paused route")
        assert len([c for c in stream.calls if c.startswith("get_records")]) == calls
        assert fn.seen() == ["before"]
        paused["on"] = False
        await until(lambda: fn.seen() == ["before", "while paused"], what="read after the resume")
