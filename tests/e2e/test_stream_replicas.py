"""Three `router run` replicas of one kinesis route on one PostgreSQL state store (a schema of the test's
own) against moto_server: the shard leases spread 3/3/2, one replica SIGKILLed mid-stream loses its shards
to the others within twice the lease duration, no record is lost, order per partition key holds across the
moves, the duplicates are no more than what the killed replica had processed and not checkpointed, and a
replica stopped with SIGTERM releases its leases at once.

The function is a real Python handler; every replica's environments append one line per record to one
file (one write per batch, O_APPEND), so the file is the order in which records were processed.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import pytest
from sqlalchemy.engine import make_url

from tests.router_process import RouterFactory, RouterProcess, http
from tests.unavailable import unavailable
from tests.waiting import until_sync

REGION = "us-east-1"
SHARDS = 8
KEYS = 40  # partition keys, 5 per shard
RECORDS = 20_000
LEASE = 4.0  # state.shard_lease_duration of the replicas, seconds

RECORDER = """
    import base64, os, time
    OUT = os.environ["OUT"]
    def handler(event, context):
        lines = []
        for r in event["Records"]:
            k = r["kinesis"]
            lines.append(r["eventID"].split(":")[0] + " " + k["sequenceNumber"] + " "
                         + base64.b64decode(k["data"]).decode() + "\\n")
        fd = os.open(OUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, "".join(lines).encode())
        finally:
            os.close(fd)
        time.sleep(0.2)  # written, not yet returned: what a SIGKILL finds in flight
"""


@pytest.fixture
def pg_schema(postgres_dsn: str) -> Iterator[tuple[str, str]]:
    """A role and a schema of the test's own on the machine's PostgreSQL (the role's search_path is the
    schema, so the replicas' tables go there): (DSN of that role, schema name). Dropped afterwards."""
    name = f"replicas_{uuid.uuid4().hex[:12]}"

    async def admin(*statements: str) -> None:
        conn = await asyncpg.connect(postgres_dsn, timeout=10)
        try:
            for sql in statements:
                await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f'CREATE ROLE "{name}" LOGIN', f'CREATE SCHEMA "{name}" AUTHORIZATION "{name}"',
                          f'ALTER ROLE "{name}" SET search_path = "{name}"'))
    except asyncpg.PostgresError as exc:
        reason = f"cannot create a role and schema for the test ({exc}); the role needs CREATEROLE"
        unavailable(reason)
    try:
        yield make_url(postgres_dsn).set(username=name).render_as_string(hide_password=False), name
    finally:
        asyncio.run(admin(f'DROP SCHEMA IF EXISTS "{name}" CASCADE', f'DROP ROLE IF EXISTS "{name}"'))


def query(dsn: str, sql: str) -> list[Any]:
    async def run() -> list[Any]:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(run())


def config(tmp_path: Path, moto_server: str, arn: str, dsn: str, name: str, out: Path) -> str:
    return f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 10s}}
        state: {{url: "{dsn}", shard_lease_duration: {LEASE}s, replica_id: {name}}}
        aws: {{region: {REGION}, endpoint_url: "{moto_server}", account_id: "123456789012"}}
        functions:
          record:
            runtime: python3.11
            handler: app.handler
            code: {tmp_path / 'functions' / 'record'}
            timeout: 10s
            environment: {{OUT: "{out}"}}
        routes:
          - name: clicks
            source: {{type: kinesis, stream_arn: "{arn}", starting_position: TRIM_HORIZON, batch_size: 100}}
            function: record
    """


def held(rp: RouterProcess) -> int:
    """The replica's router_shard_leases{route="clicks"} (0 when it does not answer)."""
    try:
        _, _, body = http("GET", rp.url + "/metrics", timeout=5)
    except OSError:
        return 0
    for line in body.decode().splitlines():
        if line.startswith('router_shard_leases{route="clicks"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


class Records:
    """What the test put, by partition key in order, and what the function processed (the file)."""

    def __init__(self, kinesis: Any, arn: str, out: Path) -> None:
        self.kinesis, self.arn, self.out = kinesis, arn, out
        self.sent = 0
        self.next_n = [0] * KEYS

    def put(self, count: int) -> None:
        """``count`` more records, round-robin over the keys; key k is pinned to shard k % SHARDS."""
        for start in range(0, count, 500):
            entries = []
            for i in range(start, min(count, start + 500)):
                key = (self.sent + i) % KEYS
                n = self.next_n[key]
                self.next_n[key] += 1
                entries.append({"Data": f"k{key} {n}".encode(), "PartitionKey": f"k{key}",
                                "ExplicitHashKey": str((key % SHARDS) * (2**128 // SHARDS) + 1)})
            resp = self.kinesis.put_records(StreamARN=self.arn, Records=entries)
            assert resp["FailedRecordCount"] == 0
        self.sent += count

    def processed(self) -> list[tuple[str, int, str, int]]:
        """(shard, sequence number, key, n) per line, in file order; only whole lines."""
        if not self.out.exists():
            return []
        rows = []
        for line in self.out.read_text().splitlines():
            shard, seq, key, n = line.split(" ")
            rows.append((shard, int(seq), key, int(n)))
        return rows

    def distinct(self) -> int:
        return len({(key, n) for _, _, key, n in self.processed()})


def test_three_replicas_share_the_shards_and_survive_a_sigkill(
    pg_schema: tuple[str, str], router_factory: RouterFactory, tmp_path: Path, moto_server: str,
) -> None:
    dsn, schema = pg_schema
    kinesis = boto3.client("kinesis", region_name=REGION, endpoint_url=moto_server)
    stream = f"replicas-{uuid.uuid4().hex[:8]}"
    kinesis.create_stream(StreamName=stream, ShardCount=SHARDS)
    arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    out = tmp_path / "processed.txt"
    router_factory.write_function("record", RECORDER)
    records = Records(kinesis, arn, out)
    records.put(RECORDS // 2)
    replicas = {name: router_factory(config(tmp_path, moto_server, arn, dsn, name, out), start=False,
                                     name=f"{name}.yaml")
                for name in ("r1", "r2", "r3")}
    for rp in replicas.values():
        rp.start(wait_ready=False)
    for rp in replicas.values():
        rp.wait_ready()

    # The leases spread 3/3/2 (within one) while the first half is processed.
    spread = until_sync(lambda: (c := sorted(held(rp) for rp in replicas.values())) == [2, 3, 3] and c,
                        what="leases spread 3/3/2", deadline=60)
    assert spread == [2, 3, 3]
    records.put(RECORDS - records.sent)  # a backlog for the killed replica to leave mid-stream
    victim_name = max(replicas, key=lambda n: held(replicas[n]))
    victim = replicas[victim_name]
    until_sync(lambda: records.distinct() >= RECORDS // 2 + RECORDS // 10, what="the backlog being read",
               deadline=60, interval=0.2)
    victim.kill()
    killed_at = time.monotonic()
    rows_at_kill = records.processed()
    checkpoints = {r["shard_id"]: int(r["sequence_number"]) for r in query(
        dsn, f"SELECT shard_id, sequence_number FROM \"{schema}\".router_checkpoints "
             "WHERE sequence_number <> 'SHARD_END'")}
    victims = {r["shard_id"] for r in query(
        dsn, f"SELECT shard_id FROM \"{schema}\".router_shard_leases WHERE owner = '{victim_name}'")}
    assert len(victims) == 3
    # what the victim had processed and not checkpointed: all it may have left to do again
    in_flight = sum(1 for shard, seq, _, _ in rows_at_kill
                    if shard in victims and seq > checkpoints.get(shard, -1))
    survivors = [rp for name, rp in replicas.items() if name != victim_name]

    until_sync(lambda: sum(held(rp) for rp in survivors) == SHARDS,  # within 2x the lease of the kill
               what="the killed replica's shards taken by the others",
               deadline=max(0.5, 2 * LEASE - (time.monotonic() - killed_at)))
    moved_after = time.monotonic() - killed_at
    until_sync(lambda: records.distinct() == RECORDS, what=f"all {RECORDS} records processed", deadline=90,
               interval=0.5)

    rows = records.processed()
    per_key: dict[str, list[int]] = collections.defaultdict(list)
    for _, _, key, n in rows:
        per_key[key].append(n)
    for key, seen in per_key.items():
        assert seen[0] == 0, f"{key} starts at {seen[0]}"
        for before, after in itertools.pairwise(seen):  # in order, or a replay from a checkpoint
            assert after <= before + 1, f"{key}: {after} right after {before}: out of order, or skipped"
    duplicates = len(rows) - RECORDS
    assert 0 <= duplicates <= in_flight, (duplicates, in_flight)
    print(f"\nstream replicas: {RECORDS} records, 8 shards, spread {spread}, killed {victim_name} holding 3: "
          f"its shards moved after {moved_after:.1f}s (lease {LEASE:g}s), {duplicates} duplicates "
          f"(in flight at the kill: {in_flight})")

    # SIGTERM: the replica checkpoints, then releases its leases; the last one takes them at once.
    leaving, staying = survivors
    assert leaving.stop(signal.SIGTERM) == 0
    assert any("lease released" in r.get("message", "") for r in leaving.log_records())
    until_sync(lambda: held(staying) == SHARDS, what="the stopped replica's leases taken over",
               deadline=2 * LEASE)
