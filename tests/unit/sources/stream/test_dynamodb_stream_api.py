"""DynamodbStreamApi against a real moto_server: INSERT/MODIFY/REMOVE records in Lambda's shape for two
stream view types, shards, and iterators."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from router.aws import create_client
from router.config.models import AwsConfig
from router.filters import compile_filters
from router.sources.stream.api import StreamRecord, seq_key
from router.sources.stream.dynamodb_stream import DynamodbStreamApi, _shard_info

REGION = "eu-west-1"
KEY = {"pk": {"S": "cust-1"}, "sk": {"N": "7"}}


class Table:
    """A fresh table with a stream on moto_server, and the DynamodbStreamApi on its stream."""

    def __init__(self, ddb: Any, streams: Any) -> None:
        self.ddb = ddb
        self.streams = streams
        self.name = ""
        self.arn = ""

    async def create(self, view: str = "NEW_AND_OLD_IMAGES") -> DynamodbStreamApi:
        self.name = f"t-{uuid.uuid4().hex[:12]}"
        resp = await self.ddb.create_table(
            TableName=self.name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                       {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                  {"AttributeName": "sk", "AttributeType": "N"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": view},
        )
        self.arn = resp["TableDescription"]["LatestStreamArn"]
        return DynamodbStreamApi(self.streams, self.arn, region="us-west-2")

    async def insert_modify_remove(self) -> None:
        await self.ddb.put_item(TableName=self.name, Item={
            **KEY, "status": {"S": "new"}, "blob": {"B": b"\x00\xff"},
            "nested": {"M": {"bins": {"BS": [b"\x01"]}, "list": {"L": [{"B": b"\x02"}, {"N": "1.5"}]}}},
        })
        await self.ddb.update_item(TableName=self.name, Key=KEY, UpdateExpression="SET #s = :s",
                                   ExpressionAttributeNames={"#s": "status"},
                                   ExpressionAttributeValues={":s": {"S": "paid"}})
        await self.ddb.delete_item(TableName=self.name, Key=KEY)


@pytest.fixture
async def table(moto_server: str) -> AsyncIterator[Table]:
    aws = AwsConfig(region=REGION, endpoint_url=moto_server)
    async with create_client("dynamodb", aws) as ddb, create_client("dynamodbstreams", aws) as streams:
        yield Table(ddb, streams)


async def read_all(api: DynamodbStreamApi, kind: Any = "TRIM_HORIZON", **kw: Any) -> list[StreamRecord]:
    [shard] = await api.list_shards()
    iterator: str | None = await api.shard_iterator(shard.shard_id, kind, **kw)
    out: list[StreamRecord] = []
    for _ in range(50):
        assert iterator is not None
        page = await api.get_records(iterator, 2)
        assert page.millis_behind is None
        out += page.records
        if not page.records:
            return out
        iterator = page.next_iterator
    raise AssertionError("the shard never ran dry")


NEW_IMAGE_1 = {
    "pk": {"S": "cust-1"}, "sk": {"N": "7"}, "status": {"S": "new"}, "blob": {"B": "AP8="},
    "nested": {"M": {"bins": {"BS": ["AQ=="]}, "list": {"L": [{"B": "Ag=="}, {"N": "1.5"}]}}},
}
NEW_IMAGE_2 = {**NEW_IMAGE_1, "status": {"S": "paid"}}


async def test_insert_modify_remove_with_new_and_old_images(table: Table) -> None:
    api = await table.create("NEW_AND_OLD_IMAGES")
    before = time.time()
    await table.insert_modify_remove()
    after = time.time()
    insert, modify, remove = await read_all(api)

    assert list(insert.event) == ["eventID", "eventName", "eventVersion", "eventSource", "awsRegion",
                                  "dynamodb", "eventSourceARN"]
    assert list(insert.event["dynamodb"]) == ["ApproximateCreationDateTime", "Keys", "NewImage",
                                              "SequenceNumber", "SizeBytes", "StreamViewType"]
    created = insert.event["dynamodb"]["ApproximateCreationDateTime"]
    assert isinstance(created, float)
    assert before - 1 <= created <= after + 1
    size = insert.event["dynamodb"]["SizeBytes"]
    assert isinstance(size, int)
    assert size > 0
    assert insert.event == {
        "eventID": insert.event["eventID"],
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": REGION,  # the table's region, from the stream ARN
        "dynamodb": {
            "ApproximateCreationDateTime": created,
            "Keys": KEY,
            "NewImage": NEW_IMAGE_1,
            "SequenceNumber": insert.sequence_number,
            "SizeBytes": size,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
        "eventSourceARN": table.arn,
    }
    assert insert.event["eventID"]
    assert table.arn.startswith(f"arn:aws:dynamodb:{REGION}:123456789012:table/{table.name}/stream/")

    assert modify.event["eventName"] == "MODIFY"
    assert list(modify.event["dynamodb"]) == ["ApproximateCreationDateTime", "Keys", "NewImage", "OldImage",
                                              "SequenceNumber", "SizeBytes", "StreamViewType"]
    assert modify.event["dynamodb"]["NewImage"] == NEW_IMAGE_2
    assert modify.event["dynamodb"]["OldImage"] == NEW_IMAGE_1

    assert remove.event["eventName"] == "REMOVE"
    assert list(remove.event["dynamodb"]) == ["ApproximateCreationDateTime", "Keys", "OldImage",
                                              "SequenceNumber", "SizeBytes", "StreamViewType"]
    assert remove.event["dynamodb"]["OldImage"] == NEW_IMAGE_2

    # what the engine needs beside the event
    assert seq_key(insert.sequence_number) < seq_key(modify.sequence_number) < seq_key(remove.sequence_number)
    assert insert.key == modify.key == remove.key == json.dumps(KEY, sort_keys=True, separators=(",", ":"))
    assert insert.arrival == created
    for record in (insert, modify, remove):
        assert record.size == len(json.dumps(record.event, separators=(",", ":")).encode())
        assert record.event["dynamodb"]["SequenceNumber"] == record.sequence_number
    # filters see the whole record, images included
    paid = compile_filters([{"dynamodb": {"NewImage": {"status": {"S": ["paid"]}}}}])
    assert [paid.matches(r.filter_data) for r in (insert, modify, remove)] == [False, True, False]
    assert compile_filters([{"eventName": ["REMOVE"]}]).matches(remove.filter_data)
    assert base64.b64decode(insert.event["dynamodb"]["NewImage"]["blob"]["B"]) == b"\x00\xff"


async def test_keys_only_records_carry_no_images(table: Table) -> None:
    api = await table.create("KEYS_ONLY")
    await table.insert_modify_remove()
    records = await read_all(api)
    assert [r.event["eventName"] for r in records] == ["INSERT", "MODIFY", "REMOVE"]
    for record in records:
        assert list(record.event["dynamodb"]) == ["ApproximateCreationDateTime", "Keys", "SequenceNumber",
                                                  "SizeBytes", "StreamViewType"]
        assert record.event["dynamodb"]["Keys"] == KEY
        assert record.event["dynamodb"]["StreamViewType"] == "KEYS_ONLY"


@pytest.mark.parametrize("page_size", [None, 1])
async def test_list_shards(table: Table, page_size: int | None) -> None:
    await table.create()
    api = DynamodbStreamApi(table.streams, table.arn, region=REGION, page_size=page_size)
    [shard] = await api.list_shards()
    assert shard.shard_id.startswith("shardId-")
    assert shard.parent_ids == ()
    assert shard.ending_sequence is None
    assert shard.starting_sequence is not None


async def test_iterator_kinds(table: Table) -> None:
    api = await table.create()
    await table.insert_modify_remove()
    s1, s2, s3 = (r.sequence_number for r in await read_all(api))
    assert [r.sequence_number for r in await read_all(api, "AT_SEQUENCE_NUMBER", sequence_number=s2)] == [
        s2, s3]
    assert [r.sequence_number for r in await read_all(api, "AFTER_SEQUENCE_NUMBER", sequence_number=s2)] == [
        s3]
    assert [r.sequence_number for r in await read_all(api, "AFTER_SEQUENCE_NUMBER", sequence_number=s1)] == [
        s2, s3]

    [shard] = await api.list_shards()
    latest = await api.shard_iterator(shard.shard_id, "LATEST")
    page = await api.get_records(latest, 10)
    assert page.records == []
    assert page.next_iterator is not None
    await table.ddb.put_item(TableName=table.name, Item={**KEY, "again": {"BOOL": True}})
    page = await api.get_records(page.next_iterator, 10)
    assert [r.event["eventName"] for r in page.records] == ["INSERT"]
    assert page.records[0].event["dynamodb"]["NewImage"]["again"] == {"BOOL": True}


async def test_at_timestamp_and_missing_arguments_are_refused(table: Table) -> None:
    api = await table.create()
    [shard] = await api.list_shards()
    with pytest.raises(ValueError, match="AT_TIMESTAMP is not supported for DynamoDB Streams"):
        await api.shard_iterator(shard.shard_id, "AT_TIMESTAMP", timestamp=0.0)
    with pytest.raises(ValueError, match="AFTER_SEQUENCE_NUMBER needs a sequence_number"):
        await api.shard_iterator(shard.shard_id, "AFTER_SEQUENCE_NUMBER")


def test_closed_shard_and_ttl_identity_as_the_service_returns_them() -> None:
    """What moto cannot produce (a closed shard with a parent, a TTL delete), from the service's own
    output shapes: DescribeStream's Shards[] and a GetRecords record."""
    closed = _shard_info({"ShardId": "shardId-2", "ParentShardId": "shardId-1",
                          "SequenceNumberRange": {"StartingSequenceNumber": "100",
                                                  "EndingSequenceNumber": "200"}})
    assert closed.parent_ids == ("shardId-1",)
    assert (closed.starting_sequence, closed.ending_sequence) == ("100", "200")
    api = DynamodbStreamApi(None, "arn:aws:dynamodb:ap-south-1:1:table/t/stream/x", region=REGION)
    record = api.to_record({
        "eventID": "e1", "eventName": "REMOVE", "eventVersion": "1.1", "eventSource": "aws:dynamodb",
        "awsRegion": "ap-south-1",
        "dynamodb": {"ApproximateCreationDateTime": 1_700_000_000, "Keys": KEY, "SequenceNumber": "300",
                     "SizeBytes": 20, "StreamViewType": "KEYS_ONLY"},
        "userIdentity": {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"},
    })
    assert record.event["awsRegion"] == "ap-south-1"
    assert record.event["dynamodb"]["ApproximateCreationDateTime"] == 1_700_000_000.0
    assert list(record.event)[-2:] == ["eventSourceARN", "userIdentity"]
    assert record.event["userIdentity"] == {"principalId": "dynamodb.amazonaws.com", "type": "Service"}
