"""Pure parts of the stream engine: batches, lanes, bisection, checkpoint choice and the failure record.

Nothing here does I/O or reads a clock; ``router.sources.stream.shard`` drives it. Sequence numbers are
decimal strings compared as numbers (``seq_key``).
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from router import compact_json
from router.core.destination_record import iso_timestamp
from router.invocation import Result
from router.sources.batch_bisect import halves as bisect  # the one split, shared with sqs and amqp
from router.sources.batch_response import BatchResponseError, reported_failures
from router.sources.stream.api import StreamRecord, seq_key

ENVELOPE = len(b'{"Records":[]}')
"""Bytes of the event around its records."""

RETRIES_EXHAUSTED = "RetryAttemptsExhausted"
AGE_EXCEEDED = "RecordAgeExceeded"
DYNAMODB_BATCH_INFO = "DDBStreamBatchInfo"
"""The failure record's key of a DynamoDB stream's batch (``KinesisBatchInfo`` for Kinesis)."""


def lane_of(key: str, lanes: int) -> int:
    """The lane (0..lanes-1) of an ordering key: the same key always goes to the same lane."""
    return 0 if lanes <= 1 else zlib.crc32(key.encode()) % lanes


def record_bytes(record: StreamRecord) -> int:
    """What a record adds to the batch event (its JSON plus a separating comma)."""
    return record.size + 1


def payload(records: Sequence[StreamRecord]) -> bytes:
    """The function's event: ``{"Records": [...]}`` as JSON bytes."""
    return compact_json.dumpb({"Records": [r.event for r in records]})


WINDOW_STATE_LIMIT = 1024 * 1024
"""Bytes of a tumbling window's state (as JSON) at most; a larger one ends the window early (Lambda's
1 MB a shard)."""
WINDOW_ENVELOPE = 1024
"""Bytes a windowed event may add around its records beside the state (window, shard, stream ARN, flags)."""


@dataclass(slots=True)
class Window:
    """A shard's open tumbling window: ``[start, end)`` in epoch seconds, the state the function returned
    last (``{}`` at first), and the sequence numbers settled in it, marked done (checkpointed) only once
    its final invocation succeeded: a restart mid-window runs the window again from its first record with
    a fresh state, so the final invocation never sees a state missing records."""

    start: float
    end: float
    state: Any = field(default_factory=dict)
    settled: list[str] = field(default_factory=list)

    def span(self) -> str:
        """``2020-07-30T17:00:00Z..2020-07-30T17:05:00Z``, for messages."""
        return f"{_to_the_second(self.start)}..{_to_the_second(self.end)}"


def window_start(arrival: float, size: float) -> float:
    """The start of the tumbling window of ``size`` seconds (aligned to the epoch) a record arriving at
    ``arrival`` belongs to."""
    return math.floor(arrival / size) * size


def window_payload(records: Sequence[StreamRecord], window: Window, *, shard_id: str, stream_arn: str,
                   final: bool = False, early: bool = False) -> bytes:
    """The function's event in a tumbling window, as Lambda's: the records, then ``window`` (start and
    end to the second, UTC), ``state``, ``shardId``, ``eventSourceARN``, ``isFinalInvokeForWindow`` and
    ``isWindowTerminatedEarly``. A final invocation has no records."""
    return compact_json.dumpb({
        "Records": [r.event for r in records],
        "window": {"start": _to_the_second(window.start), "end": _to_the_second(window.end)},
        "state": window.state,
        "shardId": shard_id,
        "eventSourceARN": stream_arn,
        "isFinalInvokeForWindow": final,
        "isWindowTerminatedEarly": early,
    })


def window_state(result: Result) -> Any:
    """The ``state`` of a function's response in a tumbling window (any JSON value). Raises
    ``BatchResponseError`` when there is none: Lambda counts a response without a ``state`` property as a
    failed invocation."""
    try:
        response = json.loads(result.payload)
    except ValueError as exc:
        raise BatchResponseError("the response is not JSON; in a tumbling window it must be an object with "
                                 "a \"state\"") from exc
    if not isinstance(response, dict) or "state" not in response:
        raise BatchResponseError("the response has no \"state\" property, which a function in a tumbling "
                                 "window must return (e.g. {\"state\": {...}})")
    return response["state"]


def state_size(state: Any) -> int:
    """Bytes of ``state`` as the next event carries it."""
    return len(compact_json.dumpb(state))


def first_failed(result: Result, records: Sequence[StreamRecord]) -> int | None:
    """With ``report_batch_item_failures``: the index in ``records`` of the lowest sequence number the
    function reported failed, or None when every record succeeded.

    Raises ``BatchResponseError`` (the whole batch failed, as Lambda treats it) for a response that is not
    a JSON object, or an ``itemIdentifier`` that is missing, empty or not a sequence number of the batch.
    """
    failed = reported_failures(result.payload, {r.sequence_number for r in records})
    if not failed:
        return None
    lowest = min(failed, key=seq_key)
    return next(i for i, r in enumerate(records) if r.sequence_number == lowest)


@dataclass(slots=True)
class Attempt:
    """A batch on its way through retries and bisection.

    ``retries`` counts retries that used the retry quota (bisection does not, as in Lambda);
    ``invokes`` counts invocations that included these records (``approximateInvokeCount``).
    """

    records: list[StreamRecord]
    retries: int = 0
    invokes: int = 0
    result: Result | None = None
    request_id: str | None = None

    def part(self, records: list[StreamRecord]) -> Attempt:
        """Some of this batch's records, with its counts so far (a half, the rest, the aged-out ones)."""
        return Attempt(records, self.retries, self.invokes, self.result, self.request_id)


def failure_record(
    attempt: Attempt, *, condition: str, function_arn: str, shard_id: str, stream_arn: str,
    batch_info_key: str, request_id: str, now: float,
) -> dict[str, Any]:
    """Lambda's on-failure record for a stream batch: metadata of the records, never the records.

    As Lambda writes it (records it sent, as captured from AWS in LocalStack's validated snapshots): a
    ``RecordAgeExceeded`` record has no ``responseContext``; after a function that returned (its batch
    failed by ``batchItemFailures``) ``functionError`` is null; DynamoDB Streams' arrival times are to
    the second (``2019-11-14T00:13:19Z``), Kinesis' to the millisecond; the request id is the last
    invocation's, else ``request_id`` (a new one: Lambda's record always has one).
    """
    records = attempt.records
    result = attempt.result
    arrival = _to_the_second if batch_info_key == DYNAMODB_BATCH_INFO else iso_timestamp
    out: dict[str, Any] = {
        "requestContext": {
            "requestId": attempt.request_id or request_id,
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": attempt.invokes,
        },
    }
    if condition != AGE_EXCEEDED:
        response: dict[str, Any] = {}
        if result is not None:
            response["statusCode"] = result.status_code
        response["executedVersion"] = result.executed_version if result is not None else "$LATEST"
        if result is not None:
            response["functionError"] = result.function_error or None
        out["responseContext"] = response
    out.update({
        "version": "1.0",
        "timestamp": iso_timestamp(now),
        batch_info_key: {
            "shardId": shard_id,
            "startSequenceNumber": records[0].sequence_number,
            "endSequenceNumber": records[-1].sequence_number,
            "approximateArrivalOfFirstRecord": arrival(records[0].arrival),
            "approximateArrivalOfLastRecord": arrival(records[-1].arrival),
            "batchSize": len(records),
            "streamArn": stream_arn,
        },
    })
    return out


def _to_the_second(epoch: float) -> str:
    """``2019-11-14T00:13:19Z``: DynamoDB Streams' arrival times in a failure record."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@dataclass(slots=True)
class CheckpointTracker:
    """Which records of one shard are done; the checkpoint is the highest sequence number at or below
    which every record read is done (records finish out of order across lanes)."""

    _pending: deque[str] = field(default_factory=deque)  # in read order (ascending)
    _done: set[str] = field(default_factory=set)

    def read(self, sequence_numbers: Sequence[str]) -> None:
        self._pending.extend(sequence_numbers)

    def finish(self, sequence_numbers: Sequence[str]) -> str | None:
        """Mark records done; the new checkpoint when it advanced, else None."""
        self._done.update(sequence_numbers)
        advanced: str | None = None
        while self._pending and self._pending[0] in self._done:
            advanced = self._pending.popleft()
            self._done.discard(advanced)
        return advanced

    @property
    def in_flight(self) -> int:
        """Records read and not yet below the checkpoint."""
        return len(self._pending)


__all__ = [
    "AGE_EXCEEDED",
    "ENVELOPE",
    "RETRIES_EXHAUSTED",
    "WINDOW_ENVELOPE",
    "WINDOW_STATE_LIMIT",
    "Attempt",
    "BatchResponseError",
    "CheckpointTracker",
    "Window",
    "bisect",
    "failure_record",
    "first_failed",
    "lane_of",
    "payload",
    "record_bytes",
    "state_size",
    "window_payload",
    "window_start",
    "window_state",
]
