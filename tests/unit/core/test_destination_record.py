"""The destination record is Lambda's."""

from __future__ import annotations

import json

from router.core.destination_record import build_record, iso_timestamp
from router.invocation import Result
from tests.unit.core.helpers import fail

ARN = "arn:aws:lambda:eu-west-1:123456789012:function:resize"


def test_timestamp_is_iso_utc_with_ms() -> None:
    assert iso_timestamp(1573755365.5681) == "2019-11-14T18:16:05.568Z"
    assert iso_timestamp(0) == "1970-01-01T00:00:00.000Z"


def test_failure_record() -> None:
    record = build_record(
        request_id="rid-1", function_arn=ARN, condition="RetriesExhausted", approximate_invoke_count=3,
        payload=b'{"key": "value"}', result=fail("boom"), now=1573755365.568,
    )
    assert record == {
        "version": "1.0",
        "timestamp": "2019-11-14T18:16:05.568Z",
        "requestContext": {
            "requestId": "rid-1",
            "functionArn": ARN + ":$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 3,
        },
        "requestPayload": {"key": "value"},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorMessage": "boom", "errorType": "ValueError",
                            "stackTrace": ['  File "app.py", line 1']},
    }
    json.dumps(record)  # serialisable


def test_success_record_has_no_function_error() -> None:
    record = build_record(
        request_id="r", function_arn=ARN, condition="Success", approximate_invoke_count=1,
        payload=b"[1, 2]", result=Result(payload=b'"done"'), now=0,
    )
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert record["responsePayload"] == "done"
    assert record["requestPayload"] == [1, 2]


def test_null_result_and_non_json_payload() -> None:
    record = build_record(
        request_id="r", function_arn=ARN, condition="Success", approximate_invoke_count=1,
        payload=b"not json", result=Result(payload=b""), now=0,
    )
    assert record["requestPayload"] == "not json"
    assert record["responsePayload"] is None


def test_aged_out_record_without_an_attempt() -> None:
    record = build_record(
        request_id="r", function_arn=ARN, condition="EventAgeExceeded", approximate_invoke_count=0,
        payload=b"{}", result=None, now=0,
    )
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert record["responseContext"] == {"executedVersion": "$LATEST"}
    assert "responsePayload" not in record
