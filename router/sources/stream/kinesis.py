"""``StreamApi`` on Kinesis Data Streams (aiobotocore): shards, iterators, and Lambda's Kinesis records.

``KinesisApi(client, stream_arn, region=...)`` addresses the stream by ARN (``StreamARN`` on every
call), lists every shard with ``ListShards`` (all ``NextToken`` pages), and turns ``GetRecords`` output
into records of Lambda's Kinesis event::

    {"kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey", "sequenceNumber", "data" (base64),
                 "approximateArrivalTimestamp" (epoch seconds, ms precision)[, "encryptionType": "KMS"]},
     "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": "<shardId>:<sequenceNumber>",
     "eventName": "aws:kinesis:record", "invokeIdentityArn", "awsRegion", "eventSourceARN"}

Shard iterators given to the engine are opaque ``<shardId>|<Kinesis iterator>`` tokens (GetRecords does
not name its shard and ``eventID`` needs it): pass them back unchanged, never to boto directly.

``invokeIdentityArn`` is the role Lambda would assume; the router has none, so it is
``arn:<partition>:iam::<stream account>:role/router`` unless ``invoke_identity_arn`` names one. Data that
is not JSON is delivered as it is (base64 of the raw bytes); only filters on ``data`` cannot match it.

Behaviour of moto (the test server) that differs from Kinesis: sequence numbers are small per-shard
counters (1, 2, ...); iterators never expire (no ``ExpiredIteratorException``); ``GetRecords`` always
returns a ``NextShardIterator``, even at the end of a closed shard, and no ``ChildShards``; after
``SplitShard``/``MergeShards`` the parent is listed as closed (``EndingSequenceNumber`` set) but PutRecord
keeps writing into it, so the children stay empty; ListShards wants the stream ARN again with
``NextToken`` (Kinesis refuses it: both are handled). ``MillisBehindLatest`` is returned.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any, Final

from botocore.exceptions import ClientError

from router import compact_json
from router.aws import error_code
from router.filters import kinesis_filter_data
from router.sources.stream.api import IteratorType, RecordsPage, ShardInfo, StreamRecord

MAX_LIMIT: Final = 10_000
"""GetRecords' maximum ``Limit``."""
_MAX_PAGES: Final = 10_000
"""Bound on ListShards pages (a stream has at most a few thousand shards)."""


def arn_part(arn: str, index: int, default: str) -> str:
    """Part ``index`` of ``arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`` (1 partition, 3 region,
    4 account), or ``default`` when the ARN does not have it."""
    parts = arn.split(":", 5)
    return parts[index] if len(parts) == 6 and parts[index] else default


def epoch_seconds(value: Any) -> float:
    """A botocore timestamp (``datetime``, or a number when the parser left it alone) as epoch seconds."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"not a timestamp: {value!r}")


def record_size(event: dict[str, Any]) -> int:
    """Bytes ``event`` takes in the invocation payload (compact JSON)."""
    return len(compact_json.dumpb(event))


def check_iterator_args(
    kind: IteratorType, sequence_number: str | None, timestamp: float | None, *, where: str
) -> None:
    """Raise ``ValueError`` when ``kind`` lacks the argument it needs."""
    if kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER") and not sequence_number:
        raise ValueError(f"{where}: shard iterator {kind} needs a sequence_number")
    if kind == "AT_TIMESTAMP" and timestamp is None:
        raise ValueError(f"{where}: shard iterator AT_TIMESTAMP needs a timestamp")


class KinesisApi:
    """One Kinesis data stream as the stream engine sees it. ``client`` is an open aiobotocore
    ``kinesis`` client; ``stream_arn`` the stream's ARN; ``region`` is used for ``awsRegion`` when the
    ARN has none. ``page_size`` sets ListShards' ``MaxResults`` (None: the service's default)."""

    type = "kinesis"
    batch_info_key = "KinesisBatchInfo"

    def __init__(
        self,
        client: Any,
        stream_arn: str,
        *,
        region: str,
        invoke_identity_arn: str | None = None,
        page_size: int | None = None,
        filter_data: bool = True,
    ) -> None:
        self.client = client
        self.stream_arn = stream_arn
        self.region = arn_part(stream_arn, 3, region)
        partition = arn_part(stream_arn, 1, "aws")
        account = arn_part(stream_arn, 4, "000000000000")
        self.invoke_identity_arn = invoke_identity_arn or f"arn:{partition}:iam::{account}:role/router"
        self.page_size = page_size
        self._token_needs_arn = False
        self._filter_data = filter_data  # False: the route has no filters, records need no decoded data
        # Size of a record whose variable strings are all empty and whose timestamp is 0: a record's size
        # is this plus the JSON length of each variable part (``to_record``), without encoding it.
        self._base_size = record_size(self._event("", "", "", "", 0, None))

    async def list_shards(self) -> list[ShardInfo]:
        shards: list[ShardInfo] = []
        size = {"MaxResults": self.page_size} if self.page_size is not None else {}
        resp = await self.client.list_shards(StreamARN=self.stream_arn, **size)
        for _ in range(_MAX_PAGES):
            shards.extend(_shard_info(s) for s in resp.get("Shards") or [])
            token = resp.get("NextToken")
            if not token:
                break
            resp = await self._next_shards(token, size)
        return shards

    async def _next_shards(self, token: str, size: dict[str, int]) -> dict[str, Any]:
        """The page after ``token``. Kinesis refuses the stream ARN together with NextToken
        (InvalidArgumentException); moto wants it, and says so with InvalidToken (moto 5.2.6 and later:
        ResourceNotFoundException, "Stream None ... not found"): then the ARN is sent with the token from
        here on (a stream really gone fails that call too, and its error is the one raised)."""
        if not self._token_needs_arn:
            try:
                page: dict[str, Any] = await self.client.list_shards(NextToken=token, **size)
                return page
            except ClientError as exc:
                if error_code(exc) not in ("InvalidToken", "ResourceNotFoundException"):
                    raise
                self._token_needs_arn = True
        page = await self.client.list_shards(NextToken=token, StreamARN=self.stream_arn, **size)
        return page

    async def shard_iterator(
        self, shard_id: str, kind: IteratorType, *, sequence_number: str | None = None,
        timestamp: float | None = None,
    ) -> str:
        check_iterator_args(kind, sequence_number, timestamp, where=f"kinesis stream {self.stream_arn}")
        args: dict[str, Any] = {"StreamARN": self.stream_arn, "ShardId": shard_id, "ShardIteratorType": kind}
        if kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            args["StartingSequenceNumber"] = sequence_number
        elif kind == "AT_TIMESTAMP":
            args["Timestamp"] = timestamp
        resp = await self.client.get_shard_iterator(**args)
        return _wrap(shard_id, str(resp["ShardIterator"]))

    async def get_records(self, iterator: str, limit: int) -> RecordsPage:
        shard_id, aws_iterator = _unwrap(iterator)
        resp = await self.client.get_records(
            ShardIterator=aws_iterator, Limit=max(1, min(limit, MAX_LIMIT)), StreamARN=self.stream_arn)
        records = [self.to_record(r, shard_id) for r in resp.get("Records") or []]
        behind = resp.get("MillisBehindLatest")
        following = resp.get("NextShardIterator")
        return RecordsPage(
            records=records,
            next_iterator=_wrap(shard_id, str(following)) if following else None,
            millis_behind=int(behind) if behind is not None else None,
        )

    def to_record(self, record: dict[str, Any], shard_id: str) -> StreamRecord:
        """One GetRecords record as a ``StreamRecord`` holding Lambda's event record."""
        seq = str(record["SequenceNumber"])
        arrival = epoch_seconds(record["ApproximateArrivalTimestamp"])
        data = record.get("Data", b"")
        raw = data.encode() if isinstance(data, str) else bytes(data)
        encoded = base64.b64encode(raw).decode("ascii")
        key = str(record["PartitionKey"])
        timestamp = round(arrival, 3)
        encryption = record.get("EncryptionType")
        encryption = encryption if encryption and encryption != "NONE" else None
        event = self._event(key, seq, encoded, shard_id, timestamp, encryption)
        # record_size(event), computed from the parts: the payload is encoded once, later, as a whole.
        size = (self._base_size + _json_len(key) + 2 * _json_len(seq) + len(encoded) + _json_len(shard_id)
                + len(json.dumps(timestamp)) - 1
                + (len(',"encryptionType":') + _json_len(encryption) + 2 if encryption else 0))
        return StreamRecord(
            sequence_number=seq,
            arrival=arrival,
            key=key,
            size=size,
            event=event,
            filter_data=kinesis_filter_data(event) if self._filter_data else {},
        )

    def _event(self, key: str, seq: str, data: str, shard_id: str, timestamp: float,
               encryption: str | None) -> dict[str, Any]:
        """Lambda's Kinesis event record."""
        kinesis: dict[str, Any] = {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": key,
            "sequenceNumber": seq,
            "data": data,
            "approximateArrivalTimestamp": timestamp,
        }
        if encryption:
            kinesis["encryptionType"] = encryption
        return {
            "kinesis": kinesis,
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"{shard_id}:{seq}",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": self.invoke_identity_arn,
            "awsRegion": self.region,
            "eventSourceARN": self.stream_arn,
        }


def _json_len(text: str) -> int:
    """Characters ``text`` takes inside a JSON string (escapes counted, quotes not); ASCII output."""
    return len(json.dumps(text)) - 2


def _shard_info(shard: dict[str, Any]) -> ShardInfo:
    parents = tuple(p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p)
    span = shard.get("SequenceNumberRange") or {}
    return ShardInfo(
        shard_id=str(shard["ShardId"]),
        parent_ids=parents,
        starting_sequence=span.get("StartingSequenceNumber"),
        ending_sequence=span.get("EndingSequenceNumber"),
    )


def _wrap(shard_id: str, aws_iterator: str) -> str:
    """The iterator handed to the engine: ``<shardId>|<Kinesis iterator>``. GetRecords does not say which
    shard it read, and Lambda's ``eventID`` needs it; shard ids never contain ``|``."""
    return f"{shard_id}|{aws_iterator}"


def _unwrap(iterator: str) -> tuple[str, str]:
    shard_id, sep, aws_iterator = iterator.partition("|")
    if not sep or not shard_id or not aws_iterator:
        raise ValueError(f"kinesis: not an iterator from KinesisApi.shard_iterator, got {iterator[:60]!r}")
    return shard_id, aws_iterator
