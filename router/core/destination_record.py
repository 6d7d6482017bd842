"""The invocation record sent to on_success / on_failure destinations, shaped exactly like Lambda's."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from router.invocation import Result


def iso_timestamp(epoch: float) -> str:
    """``2019-11-14T18:16:05.568Z``: ISO-8601 UTC with milliseconds."""
    dt = datetime.fromtimestamp(epoch, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_json_or_text(data: bytes) -> Any:
    """The JSON value of ``data``; the text itself when it is not JSON; None when empty."""
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", errors="replace")


def build_record(
    *,
    request_id: str,
    function_arn: str,
    condition: str,
    approximate_invoke_count: int,
    payload: bytes,
    result: Result | None,
    now: float,
) -> dict[str, Any]:
    """Lambda's destination record.

    ``function_arn`` is the unqualified ARN; the record names ``$LATEST``, as Lambda does for unqualified
    invocations. ``result`` is the last attempt's result; it is None when the event aged out in the queue
    before an attempt, and then the record has no ``responsePayload`` and no ``statusCode``.
    """
    version = result.executed_version if result is not None else "$LATEST"
    response_context: dict[str, Any] = {}
    if result is not None:
        response_context["statusCode"] = result.status_code
    response_context["executedVersion"] = version
    if result is not None and result.function_error:
        response_context["functionError"] = result.function_error
    record: dict[str, Any] = {
        "version": "1.0",
        "timestamp": iso_timestamp(now),
        "requestContext": {
            "requestId": request_id,
            "functionArn": f"{function_arn}:{version}",
            "condition": condition,
            "approximateInvokeCount": approximate_invoke_count,
        },
        "requestPayload": parse_json_or_text(payload),
        "responseContext": response_context,
    }
    if result is not None:
        record["responsePayload"] = parse_json_or_text(result.payload)
    return record
