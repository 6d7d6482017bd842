"""Shard leases between replicas of one stream route: the balancing plan (pure), and several
``StreamSource`` replicas in one process on one real state store (SQLite and PostgreSQL) with an
in-memory stream: spread, hand-over when a replica joins, take-over after one dies or stops, and a lost
lease that stops its shard. Three ``router run`` processes against moto: tests/e2e/test_stream_replicas.py."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from router.config.models import AwsConfig, RouteConfig
from router.core.dispatcher import Dispatcher
from router.invocation import Result
from router.metrics import Metrics
from router.queues.sql import SqlQueue
from router.readiness import Readiness
from router.sources.stream.engine import StreamSource
from router.sources.stream.leases import plan
from router.state.leases import Lease
from router.state.store import StateStore
from tests.stores import StoreFactory
from tests.unit.core.helpers import make_config
from tests.unit.sources.stream.support import ARN, FakeStream, RecordingFunction, fake_api, ok
from tests.waiting import until

S0 = "shardId-000000000000"
NOW = 1000.0


def lease(shard: int, owner: str | None, *, until: float = NOW + 5, handoff: str | None = None) -> Lease:
    return Lease(f"shardId-{shard:012d}", owner, 1, until if owner else None, handoff)


# --- the plan ------------------------------------------------------------------------------------------


def test_plan_takes_free_and_expired_leases_up_to_the_share() -> None:
    leases = [lease(0, "a"), lease(1, "a"), lease(2, None), lease(3, "gone", until=NOW - 1)]
    decided = plan(leases, "b", NOW, rng=random.Random(1))
    # owners: a (live) and b: the share is 2; the free and the expired one are taken, nothing asked
    assert sorted(lease.shard_id for lease in decided.take) == [
        "shardId-000000000002", "shardId-000000000003"]
    assert decided.ask is None
    assert plan(leases, "b", NOW, busy={"shardId-000000000002"}).take == [leases[3]]
    assert plan(leases, "b", NOW, room=1).take[0] in leases[2:]
    assert len(plan(leases, "b", NOW, room=1).take) == 1


def test_plan_asks_the_most_loaded_owner_for_one_lease() -> None:
    eight = [lease(i, "a") for i in range(8)]
    decided = plan(eight, "b", NOW, rng=random.Random(2))
    assert decided.take == []
    assert decided.ask is not None
    assert decided.ask.owner == "a"
    # one request at a time: while a's lease is asked for, b waits
    asked = [*eight[:7], lease(7, "a", handoff="b")]
    assert plan(asked, "b", NOW) == plan([], "b", NOW)
    # 3/3/2 is balanced: the one with 2 needs 1 and the most loaded holds exactly the share (3): no ask
    spread = [lease(i, "a") for i in range(3)] + [lease(i, "b") for i in range(3, 6)] + [
        lease(i, "c") for i in range(6, 8)]
    for me in ("a", "b", "c"):
        assert plan(spread, me, NOW).take == []
        assert plan(spread, me, NOW).ask is None
    # a newcomer with nothing needs 2 (share 2 of 8 over 4): it asks although the most loaded holds 3 > 2
    assert plan(spread, "d", NOW).ask is not None


def test_plan_leaves_a_lease_released_to_its_asker_to_it() -> None:
    leases = [*(lease(i, "a") for i in range(3)), Lease("shardId-000000000003", None, 2, NOW + 4, "b")]
    # a alone is a live owner (b holds nothing yet): without the reservation a would take it back
    assert plan(leases, "a", NOW).take == []
    assert plan(leases, "b", NOW).take == [leases[3]]
    assert plan(leases, "a", NOW + 4.5).take == [leases[3]]  # b did not come for it in time


def test_plan_converges_to_within_one() -> None:
    """Replicas applying the plan in turn (asks granted at once) end 3/3/2 for 8 shards and 3 replicas."""
    rng = random.Random(3)
    owners = dict.fromkeys(range(8), "a")
    for _ in range(30):
        for me in ("a", "b", "c"):
            leases = [lease(s, o) for s, o in owners.items()]
            decided = plan(leases, me, NOW, rng=rng)
            for taken in decided.take:
                owners[int(taken.shard_id[-3:])] = me
            if decided.ask is not None:
                owners[int(decided.ask.shard_id[-3:])] = me
    assert sorted(collections.Counter(owners.values()).values()) == [2, 3, 3]


# --- replicas in one process -----------------------------------------------------------------------------


class Replicas:
    """``StreamSource`` replicas of route ``clicks`` on one store and one stream, each with its own id,
    dispatcher and metrics; the function is shared, so ``fn.batches`` holds what every replica ran."""

    def __init__(self, store: StateStore, stream: FakeStream, fn: RecordingFunction) -> None:
        self.store, self.stream, self.fn = store, stream, fn
        self.sources: dict[str, StreamSource] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.metrics: dict[str, Metrics] = {}

    def start(self, name: str, *, lease_duration: float = 0.6) -> StreamSource:
        aws = AwsConfig(region="eu-west-1", account_id="123456789012")
        config = make_config({"fn": {}}, aws=aws.model_dump())
        metrics = Metrics()
        dispatcher = Dispatcher(config=config, invokers={"fn": self.fn}, queue=SqlQueue(self.store),
                                metrics=metrics)
        route = RouteConfig.model_validate({"name": "clicks", "function": "fn", "source": {
            "type": "kinesis", "stream_arn": ARN, "starting_position": "TRIM_HORIZON", "batch_size": 10}})
        src = StreamSource(route, dispatcher=dispatcher, metrics=metrics, readiness=Readiness(), aws=aws,
                           store=self.store, api=fake_api(self.stream), discover_interval=0.2,
                           poll_interval=0.02, min_call_interval=0.0, backoff=(0.02, 0.1),
                           retry_backoff=(0.01, 0.05), lease_duration=lease_duration, replica_id=name,
                           exclusive=False)
        self.sources[name], self.metrics[name] = src, metrics
        self.tasks[name] = asyncio.create_task(src.run(), name=f"replica-{name}")
        return src

    def kill(self, name: str) -> None:
        """As a SIGKILL does: everything stops at once, nothing is released."""
        self.tasks[name].cancel()

    async def stop(self, name: str) -> None:
        await self.sources[name].stop(10)
        with contextlib.suppress(asyncio.CancelledError):
            await self.tasks[name]

    async def owners(self) -> dict[str, int]:
        """Live leases per owner."""
        now = self.sources[next(iter(self.sources))]._gate.clock.time()
        return dict(collections.Counter(
            lease.owner for lease in await self.store.load_leases("clicks") if lease.live(now)))

    def held(self, name: str) -> float:
        return self.metrics[name].registry.get_sample_value("router_shard_leases", {"route": "clicks"}) or 0.0

    async def close(self) -> None:
        for name in self.sources:
            await self.stop(name)


@contextlib.asynccontextmanager
async def replicas(store: StateStore, stream: FakeStream, fn: RecordingFunction) -> AsyncIterator[Replicas]:
    r = Replicas(store, stream, fn)
    try:
        yield r
    finally:
        await r.close()


def put_round(stream: FakeStream, shards: int, n: int) -> None:
    for i in range(shards):
        stream.put(f"shardId-{i:012d}", f"{i}-{n}", key=f"k{i}")


def check_order(fn: RecordingFunction, shards: int, rounds: int) -> int:
    """Every record was processed, and per key in order: each record follows its predecessor or repeats
    from an earlier one (a replay from the last checkpoint), never skips ahead. Returns the duplicates."""
    per_key: dict[str, list[int]] = collections.defaultdict(list)
    for data in fn.seen():
        shard, n = data.split("-")
        per_key[shard].append(int(n))
    duplicates = 0
    for i in range(shards):
        seen = per_key[str(i)]
        assert set(seen) == set(range(rounds)), f"shard {i}: missing {set(range(rounds)) - set(seen)}"
        assert seen[0] == 0
        for before, after in itertools.pairwise(seen):
            assert after <= before + 1, f"shard {i}: {after} right after {before}: skipped ahead"
        duplicates += len(seen) - rounds
    return duplicates


async def test_replicas_spread_hand_over_and_take_over(new_store: StoreFactory) -> None:
    store = await new_store()
    stream = FakeStream(4)
    fn = RecordingFunction()
    rounds = 0

    def more(count: int) -> None:
        nonlocal rounds
        for _ in range(count):
            put_round(stream, 4, rounds)
            rounds += 1

    async with replicas(store, stream, fn) as r:
        more(20)
        r.start("a")
        await until(lambda: r.held("a") == 4, what="a alone holds the 4 leases")
        r.start("b")
        r.start("c")

        async def spread() -> bool:
            more(1)
            return sorted((await r.owners()).values()) == [1, 1, 2]

        # b and c ask a for its surplus; a hands each over after checkpointing it
        await until(spread, what="leases spread 2/1/1", deadline=20, interval=0.1)
        await until(lambda: len(fn.seen()) == 4 * rounds, what="every record so far")
        assert check_order(fn, 4, rounds) == 0  # hand-overs are graceful: nothing ran twice
        killed = max(("a", "b", "c"), key=r.held)
        r.kill(killed)  # its leases run out (0.6 s); the others take them and resume after the checkpoints
        more(20)
        await until(lambda: sum(r.held(n) for n in ("a", "b", "c") if n != killed) == 4,
                    what="the killed replica's shards taken over", deadline=20)
        await until(lambda: len(set(fn.seen())) == 4 * rounds, what="every record after the kill")
        assert killed not in await r.owners()
        rest = [n for n in ("a", "b", "c") if n != killed]
        await r.stop(rest[0])  # graceful: checkpoint, then release; the last one takes all at once
        more(10)
        await until(lambda: r.held(rest[1]) == 4, what="the stopped replica's leases taken", deadline=20)
        await until(lambda: len(set(fn.seen())) == 4 * rounds, what="every record after the stop")
    check_order(fn, 4, rounds)


async def test_a_lost_lease_stops_its_shard_and_its_checkpoints(new_store: StoreFactory) -> None:
    store = await new_store()
    stream = FakeStream(1)
    seqs = [stream.put(S0, f"0-{n}", key="k0") for n in range(3)]
    release = asyncio.Event()
    running = asyncio.Event()

    async def handler(records: list[dict[str, Any]]) -> Result:
        if records[0]["kinesis"]["data"] == "0-3":
            running.set()
            await release.wait()
        return ok(None)

    fn = RecordingFunction(handler)
    async with replicas(store, stream, fn) as r:
        src = r.start("a", lease_duration=30.0)  # renewed every 10 s: the checkpoint write finds it first
        await until(lambda: len(fn.seen()) == 3, what="the first records")
        await until(lambda: store.load_checkpoints("clicks"), what="a checkpoint")
        assert (await store.load_checkpoints("clicks"))[S0] == seqs[-1]
        stream.put(S0, "0-3", key="k0")
        await running.wait()
        # another replica takes the lease meanwhile (as after a pause of a past its expiry)
        [held] = await store.load_leases("clicks")
        assert await store.take_lease("clicks", S0, owner="intruder", seen=held.counter,
                                      now=src._gate.clock.time() + 60, duration=120) is not None
        release.set()
        await until(lambda: r.held("a") == 0 and not src._workers, what="a stops reading the shard")
        # its checkpoint of the batch was refused: the new owner resumes after the last one it wrote
        assert (await store.load_checkpoints("clicks"))[S0] == seqs[-1]
        [held] = await store.load_leases("clicks")
        assert held.owner == "intruder"


async def test_a_shard_asked_for_finishes_its_batch_then_is_handed_over(
    new_store: StoreFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "router.sources.stream")
    store = await new_store()
    stream = FakeStream(2)
    for n in range(30):  # three batches a shard: the next ones wait in the lane's queue
        put_round(stream, 2, n)
    release = asyncio.Event()

    async def handler(records: list[dict[str, Any]]) -> Result:
        await release.wait()  # both shards' batches run when b asks
        return ok(None)

    fn = RecordingFunction(handler)
    async with replicas(store, stream, fn) as r:
        r.start("a")
        await until(lambda: r.held("a") == 2 and fn.running == 2, what="a runs a batch of each shard")
        r.start("b")

        async def asked() -> bool:
            return any(lease.handoff == "b" for lease in await store.load_leases("clicks"))

        await until(asked, what="b asks a for a lease")
        await until(lambda: "handing the lease over to b" in caplog.text, what="a handing a shard over")
        assert fn.running == 2  # while its batch runs
        release.set()  # the asked shard's batch finishes and is checkpointed, then the lease goes to b
        await until(lambda: r.held("a") == 1 and r.held("b") == 1, what="one shard each")
        for n in range(30, 40):
            put_round(stream, 2, n)
        await until(lambda: len(set(fn.seen())) == 80, what="every record")
    assert check_order(fn, 2, 40) == 0  # the batch running was not run again by b
