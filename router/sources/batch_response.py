"""A function's partial batch response, ``{"batchItemFailures": [{"itemIdentifier": id}]}``, read as
Lambda reads it.

Shared by the batch sources (SQS, Kinesis, DynamoDB Streams): each names its records by its own
identifier (message id, sequence number), and the rules for a malformed response are the same for all.
"""

from __future__ import annotations

import json


class BatchResponseError(ValueError):
    """Raised when a ``batchItemFailures`` response breaks Lambda's rules: the whole batch failed."""


def reported_failures(payload: bytes, batch_ids: set[str]) -> set[str]:
    """The message ids a function reported in ``{"batchItemFailures": [{"itemIdentifier": id}]}``.

    Success of every message: an empty or null response, an empty JSON string or list (a handler that
    returned ``""`` or ``[]``: Lambda's stream mappings take both as success, as captured from AWS in
    LocalStack's validated snapshots), no or a null or an empty ``batchItemFailures``. Raises
    ``BatchResponseError`` (the whole batch failed, as Lambda treats it) for a response that is not JSON
    or another non-object, a ``batchItemFailures`` that is not a list, or an entry whose
    ``itemIdentifier`` is missing, null, empty or not a message of the batch.
    """
    if not payload.strip():
        return set()
    try:
        response = json.loads(payload)
    except ValueError as exc:
        raise BatchResponseError("the response is not JSON") from exc
    if response is None or response == "" or response == []:
        return set()
    if not isinstance(response, dict):
        raise BatchResponseError(f"the response is a JSON {type(response).__name__}, not an object")
    items = response.get("batchItemFailures")
    if items is None:
        return set()
    if not isinstance(items, list):
        raise BatchResponseError("batchItemFailures is not a list")
    failed: set[str] = set()
    for item in items:
        ident = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(ident, str) or not ident:
            raise BatchResponseError(f"batchItemFailures entry without an itemIdentifier, got {item!r}"[:200])
        if ident not in batch_ids:
            raise BatchResponseError(f"itemIdentifier {ident!r} is not a message of this batch"[:200])
        failed.add(ident)
    return failed
