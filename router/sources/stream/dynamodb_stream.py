"""``StreamApi`` on DynamoDB Streams (aiobotocore): shards, iterators, and Lambda's DynamoDB records.

``DynamodbStreamApi(client, stream_arn, region=...)`` lists shards with ``DescribeStream`` (all
``ExclusiveStartShardId`` pages) and turns ``GetRecords`` output into records of Lambda's DynamoDB event::

    {"eventID", "eventName": INSERT | MODIFY | REMOVE, "eventVersion": "1.1", "eventSource": "aws:dynamodb",
     "awsRegion", "dynamodb": {"ApproximateCreationDateTime" (epoch seconds), "Keys", "NewImage",
     "OldImage" (those the stream view type and the change give), "SequenceNumber", "SizeBytes",
     "StreamViewType"}, "eventSourceARN"[, "userIdentity": {"principalId", "type"} (TTL deletes)]}

Attribute values stay in DynamoDB JSON (``{"S": ...}``, ``{"N": "42"}``), with binary values (``B``,
``BS``, also inside ``M`` and ``L``) base64-encoded as Lambda sends them. The ordering key for
``parallelization`` is the item's ``Keys`` as canonical JSON. AT_TIMESTAMP is refused: Lambda offers only
TRIM_HORIZON and LATEST for DynamoDB Streams.

Behaviour of moto (the test server) that differs from DynamoDB Streams: one shard per stream, never
closed and never paged (``ExclusiveStartShardId`` is ignored); records say ``eventVersion`` "1.0" and
``awsRegion`` "us-east-1" whatever the table's region (this adapter sets both as Lambda does);
``ApproximateCreationDateTime`` has milliseconds (DynamoDB rounds down to the second); an unknown or
AT_TIMESTAMP iterator is an HTTP 500, not ``ExpiredIteratorException``/``ValidationException``.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Final

from router.filters import dynamodb_filter_data
from router.sources.stream.api import IteratorType, RecordsPage, ShardInfo, StreamRecord
from router.sources.stream.batch import DYNAMODB_BATCH_INFO
from router.sources.stream.kinesis import arn_part, check_iterator_args, epoch_seconds, record_size

MAX_LIMIT: Final = 1_000
"""GetRecords' maximum ``Limit``."""
_MAX_PAGES: Final = 10_000
"""Bound on DescribeStream pages."""
_IMAGES: Final = ("Keys", "NewImage", "OldImage")


class DynamodbStreamApi:
    """One DynamoDB table stream as the stream engine sees it. ``client`` is an open aiobotocore
    ``dynamodbstreams`` client; ``stream_arn`` the table's ``LatestStreamArn``; ``region`` is used for
    ``awsRegion`` when the ARN has none. ``page_size`` sets DescribeStream's ``Limit`` (None: the
    service's default, 100)."""

    type = "dynamodb_stream"
    batch_info_key = DYNAMODB_BATCH_INFO

    def __init__(self, client: Any, stream_arn: str, *, region: str, page_size: int | None = None) -> None:
        self.client = client
        self.stream_arn = stream_arn
        self.region = arn_part(stream_arn, 3, region)
        self.page_size = page_size

    async def list_shards(self) -> list[ShardInfo]:
        shards: dict[str, ShardInfo] = {}
        args: dict[str, Any] = {"StreamArn": self.stream_arn}
        if self.page_size is not None:
            args["Limit"] = self.page_size
        for _ in range(_MAX_PAGES):
            resp = await self.client.describe_stream(**args)
            description = resp.get("StreamDescription") or {}
            for shard in description.get("Shards") or []:
                info = _shard_info(shard)
                shards.setdefault(info.shard_id, info)
            last = description.get("LastEvaluatedShardId")
            if not last or last == args.get("ExclusiveStartShardId"):
                break
            args["ExclusiveStartShardId"] = last
        return list(shards.values())

    async def shard_iterator(
        self, shard_id: str, kind: IteratorType, *, sequence_number: str | None = None,
        timestamp: float | None = None,
    ) -> str:
        where = f"dynamodb_stream {self.stream_arn}"
        if kind == "AT_TIMESTAMP":
            raise ValueError(f"{where}: starting position AT_TIMESTAMP is not supported for DynamoDB "
                             "Streams (as in Lambda); use TRIM_HORIZON or LATEST")
        check_iterator_args(kind, sequence_number, timestamp, where=where)
        args: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": shard_id, "ShardIteratorType": kind}
        if kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            args["SequenceNumber"] = sequence_number
        resp = await self.client.get_shard_iterator(**args)
        return str(resp["ShardIterator"])

    async def get_records(self, iterator: str, limit: int) -> RecordsPage:
        resp = await self.client.get_records(ShardIterator=iterator, Limit=max(1, min(limit, MAX_LIMIT)))
        return RecordsPage(
            records=[self.to_record(r) for r in resp.get("Records") or []],
            next_iterator=resp.get("NextShardIterator") or None,
            millis_behind=None,
        )

    def to_record(self, record: dict[str, Any]) -> StreamRecord:
        """One GetRecords record as a ``StreamRecord`` holding Lambda's event record."""
        change = record.get("dynamodb") or {}
        seq = str(change["SequenceNumber"])
        created = change.get("ApproximateCreationDateTime")
        arrival = epoch_seconds(created) if created is not None else 0.0
        dynamodb: dict[str, Any] = {}
        if created is not None:
            dynamodb["ApproximateCreationDateTime"] = arrival
        for name in _IMAGES:
            if name in change:
                dynamodb[name] = _attributes(change[name])
        dynamodb["SequenceNumber"] = seq
        if "SizeBytes" in change:
            dynamodb["SizeBytes"] = change["SizeBytes"]
        if "StreamViewType" in change:
            dynamodb["StreamViewType"] = change["StreamViewType"]
        event: dict[str, Any] = {
            "eventID": record.get("eventID", ""),
            "eventName": record.get("eventName", ""),
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": self.region,
            "dynamodb": dynamodb,
            "eventSourceARN": self.stream_arn,
        }
        identity = record.get("userIdentity")
        if identity:
            event["userIdentity"] = {"principalId": identity.get("PrincipalId"), "type": identity.get("Type")}
        return StreamRecord(
            sequence_number=seq,
            arrival=arrival,
            key=json.dumps(dynamodb.get("Keys", {}), sort_keys=True, separators=(",", ":")),
            size=record_size(event),
            event=event,
            filter_data=dynamodb_filter_data(event),
        )


def _attributes(item: dict[str, Any]) -> dict[str, Any]:
    """A map of attribute values (Keys, an image) as Lambda sends it: binary values in base64."""
    return {name: _value(value) for name, value in item.items()}


def _b64(value: Any) -> Any:
    return base64.b64encode(value).decode("ascii") if isinstance(value, bytes | bytearray) else value


def _value(value: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, inner in value.items():
        if kind == "B":
            out[kind] = _b64(inner)
        elif kind == "BS":
            out[kind] = [_b64(v) for v in inner]
        elif kind == "M":
            out[kind] = _attributes(inner)
        elif kind == "L":
            out[kind] = [_value(v) for v in inner]
        else:
            out[kind] = inner
    return out


def _shard_info(shard: dict[str, Any]) -> ShardInfo:
    span = shard.get("SequenceNumberRange") or {}
    parent = shard.get("ParentShardId")
    return ShardInfo(
        shard_id=str(shard["ShardId"]),
        parent_ids=(str(parent),) if parent else (),
        starting_sequence=span.get("StartingSequenceNumber"),
        ending_sequence=span.get("EndingSequenceNumber"),
    )
