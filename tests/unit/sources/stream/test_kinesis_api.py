"""KinesisApi against a real moto_server: shards (paged), every iterator kind, and Lambda's record shape."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from router.aws import create_client
from router.config.models import AwsConfig
from router.filters import OPAQUE, compile_filters
from router.sources.stream.api import RecordsPage, seq_key
from router.sources.stream.kinesis import KinesisApi
from tests.waiting import until

REGION = "eu-west-1"
HASH_SHARD_0 = "0"  # ExplicitHashKey that lands in the first shard


class Stream:
    """A fresh Kinesis stream on moto_server and the KinesisApi on it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.name = ""
        self.arn = ""

    async def create(self, shards: int = 1) -> KinesisApi:
        self.name = f"s-{uuid.uuid4().hex[:12]}"
        await self.client.create_stream(StreamName=self.name, ShardCount=shards)

        async def active() -> dict[str, Any] | None:
            summary: dict[str, Any] = (await self.client.describe_stream_summary(StreamName=self.name))[
                "StreamDescriptionSummary"]
            return summary if summary["StreamStatus"] == "ACTIVE" else None

        summary = await until(active, "the stream ACTIVE", interval=0.05)
        self.arn = summary["StreamARN"]
        return KinesisApi(self.client, self.arn, region=REGION)

    async def put(self, data: bytes, key: str = "pk-1", hash_key: str | None = HASH_SHARD_0) -> str:
        extra = {"ExplicitHashKey": hash_key} if hash_key is not None else {}
        resp = await self.client.put_record(StreamARN=self.arn, Data=data, PartitionKey=key, **extra)
        return str(resp["SequenceNumber"])


@pytest.fixture
async def stream(moto_server: str) -> AsyncIterator[Stream]:
    async with create_client("kinesis", AwsConfig(region=REGION, endpoint_url=moto_server)) as client:
        yield Stream(client)


async def read_all(api: KinesisApi, iterator: str, limit: int = 100) -> tuple[list[str], RecordsPage]:
    """Pages from ``iterator`` until one comes back empty (bounded); the sequence numbers read."""
    seen: list[str] = []
    for _ in range(50):
        page = await api.get_records(iterator, limit)
        seen += [r.sequence_number for r in page.records]
        if not page.records or page.next_iterator is None:
            return seen, page
        iterator = page.next_iterator
    raise AssertionError("the shard never ran dry")


async def test_event_shape_is_lambdas(stream: Stream) -> None:
    api = await stream.create()
    before = time.time()
    seq_json = await stream.put(b'{"order": 7, "kind": "paid"}', key="user-42")
    seq_raw = await stream.put(b"\xff\x00 not JSON", key="user-43")
    after = time.time()
    [shard] = await api.list_shards()
    page = await api.get_records(await api.shard_iterator(shard.shard_id, "TRIM_HORIZON"), 10)
    first, second = page.records
    assert isinstance(page.millis_behind, int)
    assert page.next_iterator is not None  # an open shard always has a next iterator

    event = first.event
    assert list(event) == ["kinesis", "eventSource", "eventVersion", "eventID", "eventName",
                           "invokeIdentityArn", "awsRegion", "eventSourceARN"]
    assert list(event["kinesis"]) == ["kinesisSchemaVersion", "partitionKey", "sequenceNumber", "data",
                                      "approximateArrivalTimestamp"]
    arrival = event["kinesis"]["approximateArrivalTimestamp"]
    assert isinstance(arrival, float)
    assert before - 1 <= arrival <= after + 1
    assert event == {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "user-42",
            "sequenceNumber": seq_json,
            "data": base64.b64encode(b'{"order": 7, "kind": "paid"}').decode(),
            "approximateArrivalTimestamp": arrival,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard.shard_id}:{seq_json}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/router",
        "awsRegion": REGION,
        "eventSourceARN": stream.arn,
    }
    assert stream.arn == f"arn:aws:kinesis:{REGION}:123456789012:stream/{stream.name}"
    assert first.sequence_number == seq_json
    assert first.key == "user-42"
    assert first.arrival == pytest.approx(arrival, abs=0.001)
    assert first.size == len(json.dumps(event, separators=(",", ":")).encode())
    assert first.filter_data["data"] == {"order": 7, "kind": "paid"}
    assert first.filter_data["partitionKey"] == "user-42"

    # data that is not JSON is delivered byte for byte; filters on data cannot match it
    assert base64.b64decode(second.event["kinesis"]["data"]) == b"\xff\x00 not JSON"
    assert second.event["eventID"] == f"{shard.shard_id}:{seq_raw}"
    assert second.filter_data["data"] is OPAQUE
    assert compile_filters([{"partitionKey": ["user-43"]}]).matches(second.filter_data)
    assert not compile_filters([{"data": {"kind": ["paid"]}}]).matches(second.filter_data)
    assert compile_filters([{"data": {"kind": ["paid"]}}]).matches(first.filter_data)
    assert seq_key(seq_raw) > seq_key(seq_json)


async def test_invoke_identity_arn_can_be_named(stream: Stream) -> None:
    await stream.create()
    api = KinesisApi(stream.client, stream.arn, region="us-east-2",
                     invoke_identity_arn="arn:aws:iam::1:role/x")
    await stream.put(b"x")
    [shard] = await api.list_shards()
    [record] = (await api.get_records(await api.shard_iterator(shard.shard_id, "TRIM_HORIZON"), 10)).records
    assert record.event["invokeIdentityArn"] == "arn:aws:iam::1:role/x"
    assert record.event["awsRegion"] == REGION  # the stream's region (from its ARN), not the fallback


@pytest.mark.parametrize("page_size", [None, 1, 3])
async def test_list_shards_reads_every_page(stream: Stream, page_size: int | None) -> None:
    await stream.create(shards=4)
    api = KinesisApi(stream.client, stream.arn, region=REGION, page_size=page_size)
    shards = await api.list_shards()
    assert [s.shard_id for s in shards] == [f"shardId-00000000000{i}" for i in range(4)]
    assert all(s.parent_ids == () and s.ending_sequence is None for s in shards)
    assert all(s.starting_sequence is not None for s in shards)


async def test_every_iterator_kind(stream: Stream) -> None:
    api = await stream.create()
    s1 = await stream.put(b"1")
    t_between = time.time()  # after record 1 was stored, before record 2 is sent (same machine clock)
    s2 = await stream.put(b"2")
    s3 = await stream.put(b"3")
    [shard] = await api.list_shards()
    sid = shard.shard_id

    assert (await read_all(api, await api.shard_iterator(sid, "TRIM_HORIZON")))[0] == [s1, s2, s3]
    assert (await read_all(api, await api.shard_iterator(sid, "AT_SEQUENCE_NUMBER", sequence_number=s2)))[
        0] == [s2, s3]
    assert (await read_all(api, await api.shard_iterator(sid, "AFTER_SEQUENCE_NUMBER", sequence_number=s2)))[
        0] == [s3]
    assert (await read_all(api, await api.shard_iterator(sid, "AT_TIMESTAMP", timestamp=t_between)))[
        0] == [s2, s3]
    assert (await read_all(api, await api.shard_iterator(sid, "AT_TIMESTAMP", timestamp=0.0)))[0] == [
        s1, s2, s3]

    latest, page = await read_all(api, await api.shard_iterator(sid, "LATEST"))
    assert latest == []
    assert page.next_iterator is not None
    s4 = await stream.put(b"4")
    assert (await read_all(api, page.next_iterator))[0] == [s4]


async def test_limit_bounds_each_page(stream: Stream) -> None:
    api = await stream.create()
    sent = [await stream.put(str(i).encode()) for i in range(5)]
    [shard] = await api.list_shards()
    page = await api.get_records(await api.shard_iterator(shard.shard_id, "TRIM_HORIZON"), 2)
    assert [r.sequence_number for r in page.records] == sent[:2]
    assert page.next_iterator is not None
    rest, _ = await read_all(api, page.next_iterator, limit=2)
    assert rest == sent[2:]


async def test_split_closes_the_parent_and_names_it_in_the_children(stream: Stream) -> None:
    api = await stream.create(shards=2)
    await stream.put(b"before split")
    parent = (await api.list_shards())[0]
    assert parent.ending_sequence is None
    hash_mid = str(2**126)  # inside shard 0's hash range (0 .. 2**127-1)
    await stream.client.split_shard(StreamARN=stream.arn, ShardToSplit=parent.shard_id,
                                    NewStartingHashKey=hash_mid)
    shards = {s.shard_id: s for s in await api.list_shards()}
    closed = shards[parent.shard_id]
    assert closed.ending_sequence is not None
    children = [s for s in shards.values() if s.parent_ids]
    assert len(children) == 2
    assert all(c.parent_ids == (parent.shard_id,) and c.ending_sequence is None for c in children)

    # a merge names both parents (ParentShardId, AdjacentParentShardId)
    a, b = (c.shard_id for c in sorted(children, key=lambda c: c.shard_id))
    await stream.client.merge_shards(StreamARN=stream.arn, ShardToMerge=a, AdjacentShardToMerge=b)
    merged = [s for s in await api.list_shards() if s.parent_ids == (a, b)]
    assert len(merged) == 1


async def test_bad_arguments_are_clear(stream: Stream) -> None:
    api = await stream.create()
    [shard] = await api.list_shards()
    with pytest.raises(ValueError, match="AT_SEQUENCE_NUMBER needs a sequence_number"):
        await api.shard_iterator(shard.shard_id, "AT_SEQUENCE_NUMBER")
    with pytest.raises(ValueError, match="AT_TIMESTAMP needs a timestamp"):
        await api.shard_iterator(shard.shard_id, "AT_TIMESTAMP")
    with pytest.raises(ValueError, match=r"not an iterator from KinesisApi\.shard_iterator"):
        await api.get_records("raw-aws-iterator", 10)


async def test_missing_stream_is_resource_not_found(stream: Stream) -> None:
    arn = f"arn:aws:kinesis:{REGION}:123456789012:stream/nope-{uuid.uuid4().hex[:8]}"
    api = KinesisApi(stream.client, arn, region=REGION)
    with pytest.raises(ClientError) as info:
        await api.list_shards()
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_encrypted_record_as_the_service_returns_it() -> None:
    """What moto cannot produce (a KMS-encrypted record), from GetRecords' own output shape."""
    from datetime import UTC, datetime

    api = KinesisApi(None, "arn:aws:kinesis:us-east-1:111122223333:stream/s", region=REGION)
    record = api.to_record({
        "SequenceNumber": "49590338271490256608559692538361571095921575989136588898",
        "ApproximateArrivalTimestamp": datetime(2018, 12, 17, 22, 10, 50, 987000, tzinfo=UTC),
        "Data": b"Hello, this is a test.", "PartitionKey": "1", "EncryptionType": "KMS",
    }, "shardId-000000000006")
    assert record.event == {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "1",
            "sequenceNumber": "49590338271490256608559692538361571095921575989136588898",
            "data": "SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg==",
            "approximateArrivalTimestamp": 1545084650.987,
            "encryptionType": "KMS",
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": "shardId-000000000006:49590338271490256608559692538361571095921575989136588898",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::111122223333:role/router",
        "awsRegion": "us-east-1",
        "eventSourceARN": "arn:aws:kinesis:us-east-1:111122223333:stream/s",
    }


def test_record_size_from_parts_is_the_encoded_size() -> None:
    from datetime import UTC, datetime

    from router.sources.stream.kinesis import KinesisApi, record_size

    api = KinesisApi(None, "arn:aws:kinesis:eu-west-1:123456789012:stream/s\u00e9", region="us-east-1")
    quiet = KinesisApi(None, "arn:aws:kinesis:eu-west-1:123456789012:stream/s", region="us-east-1",
                       filter_data=False)
    records = [
        {"SequenceNumber": "1", "ApproximateArrivalTimestamp": 1700000000.5, "Data": b"",
         "PartitionKey": "k"},
        {"SequenceNumber": "4959" * 14, "ApproximateArrivalTimestamp": datetime(2026, 1, 2, tzinfo=UTC),
         "Data": b'{"a": "\xc3\xa9"}', "PartitionKey": 'qu"ote\\ \u00e9\U0001f600\n',
         "EncryptionType": "KMS"},
        {"SequenceNumber": "12", "ApproximateArrivalTimestamp": 1.0, "Data": bytes(range(256)) * 3,
         "PartitionKey": "p", "EncryptionType": "NONE"},
    ]
    for raw in records:
        for shard in ("shardId-000000000000", "shard\u00e9"):
            rec = api.to_record(raw, shard)
            assert rec.size == record_size(rec.event), (raw, shard)
            assert rec.filter_data
            assert quiet.to_record(raw, shard).filter_data == {}
