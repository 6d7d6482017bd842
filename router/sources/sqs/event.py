"""Lambda's SQS event, built from ReceiveMessage output, and which messages of a batch failed.

Pure functions, no I/O: ``to_record`` (one message -> one Lambda record), ``batch_payload`` (the
``{"Records": [...]}`` event as JSON bytes), ``batch_verdict`` (the function's result -> the message
ids to leave on the queue, Lambda's ``ReportBatchItemFailures`` rules and FIFO ordering, and whether
``bisect_on_error`` splits the batch).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, NamedTuple

from router import compact_json
from router.invocation import PAYLOAD_LIMIT, Result
from router.sources.batch_response import BatchResponseError, reported_failures

EVENT_SOURCE = "aws:sqs"


def _b64(value: bytes | str) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return base64.b64encode(raw).decode("ascii")


def message_attributes(attrs: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """SQS ``MessageAttributes`` in Lambda's shape: camelCase keys, binary values base64, lists kept."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in (attrs or {}).items():
        item: dict[str, Any] = {}
        if "StringValue" in value:
            item["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            item["binaryValue"] = _b64(value["BinaryValue"])
        item["stringListValues"] = list(value.get("StringListValues") or [])
        item["binaryListValues"] = [_b64(v) for v in value.get("BinaryListValues") or []]
        item["dataType"] = value.get("DataType", "String")
        out[name] = item
    return out


def to_record(message: dict[str, Any], *, arn: str, region: str) -> dict[str, Any]:
    """One SQS message (ReceiveMessage output) as a record of Lambda's SQS event.

    ``body`` stays the string SQS holds, JSON or not; ``attributes`` are every system attribute SQS
    returned (ApproximateReceiveCount, SentTimestamp, SenderId, ApproximateFirstReceiveTimestamp, and for
    FIFO queues MessageGroupId, MessageDeduplicationId, SequenceNumber).
    """
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": dict(message.get("Attributes") or {}),
        "messageAttributes": message_attributes(message.get("MessageAttributes")),
        # always there, null without message attributes, before md5OfBody: as in the records Lambda
        # sends (captured from AWS in LocalStack's validated snapshots)
        "md5OfMessageAttributes": message.get("MD5OfMessageAttributes") or None,
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": EVENT_SOURCE,
        "eventSourceARN": arn,
        "awsRegion": region,
    }
    return record


"""Lambda's synchronous invocation payload limit: a gathered batch never exceeds it."""


def batch_payload(records: Sequence[dict[str, Any]]) -> bytes:
    return compact_json.dumpb({"Records": list(records)})


def fit_payload(records: Sequence[dict[str, Any]], limit: int = PAYLOAD_LIMIT,
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split ``records`` into the longest prefix whose ``batch_payload`` fits in ``limit`` bytes and the
    rest (handed back to the queue, as Lambda cuts a batch at 6 MB). The first record is always kept:
    alone it is the smallest batch there can be."""
    size = len(b'{"Records":[]}')
    for i, record in enumerate(records):
        size += len(compact_json.dumpb(record)) + (1 if i else 0)
        if size > limit and i:
            return list(records[:i]), list(records[i:])
    return list(records), []


def fit_batch(records: Sequence[dict[str, Any]], limit: int = PAYLOAD_LIMIT,
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bytes]:
    """``fit_payload`` plus the event of the kept records, encoding a batch that fits only once (the
    usual case); only a batch over ``limit`` is measured record by record."""
    payload = batch_payload(records)
    if len(payload) <= limit:
        return list(records), [], payload
    kept, rest = fit_payload(records, limit)
    return kept, rest, batch_payload(kept)


def block_later_in_group(records: Sequence[dict[str, Any]], failed: set[str]) -> set[str]:
    """FIFO: once a message of a group failed, the later messages of that group in the batch fail too
    (they must not be deleted ahead of it). Returns the grown set of failed message ids."""
    blocked_groups: set[str] = set()
    out = set(failed)
    for record in records:
        group = record["attributes"].get("MessageGroupId", "")
        if group in blocked_groups:
            out.add(record["messageId"])
        elif record["messageId"] in out:
            blocked_groups.add(group)
    return out


class Verdict(NamedTuple):
    """What became of a batch's invocation: the message ids to leave on the queue, why (None when all
    succeeded), and whether the invocation failed as a whole in a way a smaller batch may not (a function
    error, a timeout or an invalid ``batchItemFailures`` response: what ``bisect_on_error`` splits; never a
    throttle or an unreachable function, which are not the messages' fault)."""

    failed: set[str]
    why: str | None
    whole: bool


def batch_verdict(
    result: Result, records: Sequence[dict[str, Any]], *, report_batch_item_failures: bool, fifo: bool
) -> Verdict:
    """The ``Verdict`` on ``records`` after ``result``.

    A function error or timeout fails the whole batch. With ``report_batch_item_failures`` the response
    names the failures (``reported_failures``); on a FIFO queue later messages of a failed group fail too.
    """
    ids = [r["messageId"] for r in records]
    if not result.ok:
        return Verdict(set(ids), f"the function failed ({result.outcome.value})", not result.throttle)
    if not report_batch_item_failures:
        return Verdict(set(), None, False)
    try:
        failed = reported_failures(result.payload, set(ids))
    except BatchResponseError as exc:
        return Verdict(set(ids), f"invalid batchItemFailures response: {exc}; the whole batch failed", True)
    if fifo and failed:
        failed = block_later_in_group(records, failed)
    if not failed:
        return Verdict(set(), None, False)
    return Verdict(failed, f"the function reported {len(failed)} of {len(ids)} messages failed", False)

