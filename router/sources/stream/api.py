"""What the stream source needs from a stream service: the seam between the shard engine and Kinesis or
DynamoDB Streams.

``router.sources.stream.engine`` and ``.shard`` (shards, batches, retries, bisect, checkpoints) know
nothing of either service; ``router.sources.stream.kinesis`` and ``.dynamodb_stream`` each implement
``StreamApi`` on an aiobotocore client and turn the service's records into Lambda's event records.
Sequence numbers are decimal strings of up to 128 bits: compare them with ``seq_key``, never as text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

IteratorType = Literal[
    "TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"
]


def seq_key(sequence_number: str) -> int:
    """Sort key of a sequence number (decimal digits, compared as numbers)."""
    return int(sequence_number)


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """One shard as the service lists it."""

    shard_id: str
    parent_ids: tuple[str, ...] = ()
    """ParentShardId and AdjacentParentShardId (a merge) when the service still lists them."""
    starting_sequence: str | None = None
    ending_sequence: str | None = None
    """Set when the shard is closed (split or merged): no record comes after it."""


@dataclass(slots=True)
class StreamRecord:
    """One record read from a shard, with what the engine needs beside Lambda's event record."""

    sequence_number: str
    arrival: float
    """Epoch seconds: Kinesis approximateArrivalTimestamp, DynamoDB ApproximateCreationDateTime."""
    key: str
    """Ordering key for ``parallelization``: the partition key (Kinesis) or the item's keys (DynamoDB)."""
    size: int
    """Bytes counted against the 6 MB payload limit."""
    event: dict[str, Any]
    """The record exactly as Lambda puts it in ``Records[]``."""
    filter_data: dict[str, Any] = field(default_factory=dict)
    """What filter patterns match against (Kinesis: ``data`` parsed as JSON when it is; DynamoDB: the
    record)."""


@dataclass(slots=True)
class RecordsPage:
    """One GetRecords answer."""

    records: list[StreamRecord]
    next_iterator: str | None
    """None once a closed shard has been read to its end."""
    millis_behind: int | None = None
    """Kinesis MillisBehindLatest; None where the service does not say (DynamoDB Streams)."""


class StreamApi(Protocol):
    """A stream service as the engine sees it. Errors are botocore's (``ClientError``, ``BotoCoreError``)
    and ``OSError``/``TimeoutError``: the engine counts them, backs off and retries; an expired iterator
    is ``ClientError`` code ``ExpiredIteratorException``."""

    type: str
    """The route's source type: ``kinesis`` or ``dynamodb_stream``."""
    batch_info_key: str
    """Key of the batch metadata in the on-failure record: ``KinesisBatchInfo`` or ``DDBStreamBatchInfo``."""
    stream_arn: str

    async def list_shards(self) -> list[ShardInfo]:
        """Every shard the service lists now, open and closed (all pages)."""
        ...

    async def shard_iterator(
        self, shard_id: str, kind: IteratorType, *, sequence_number: str | None = None,
        timestamp: float | None = None,
    ) -> str:
        """A shard iterator (``sequence_number`` for AT/AFTER_SEQUENCE_NUMBER, ``timestamp`` for
        AT_TIMESTAMP)."""
        ...

    async def get_records(self, iterator: str, limit: int) -> RecordsPage:
        """Up to ``limit`` records (service maximum: Kinesis 10,000, DynamoDB Streams 1,000)."""
        ...
