"""Lambda's SQS event and batch-response rules, as pure functions (no AWS), and AWS error descriptions."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from router.aws import describe_error, region_of
from router.invocation import ErrorType, Outcome, Result
from router.sources.batch_response import BatchResponseError, reported_failures
from router.sources.sqs.event import (
    batch_verdict,
    block_later_in_group,
    message_attributes,
    to_record,
)

IDS = {"m1", "m2", "m3"}


def records(*spec: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"messageId": mid, "attributes": {"MessageGroupId": group}} for mid, group in spec]


@pytest.mark.parametrize("payload", [
    b"", b"null", b"{}", b'{"batchItemFailures": null}', b'{"batchItemFailures": []}',
    b'{"statusCode": 200, "batchItemFailures": []}',
    b'""', b"[]",  # a handler that returned "" or []: success, as Lambda's mappings take them
])
def test_responses_meaning_all_succeeded(payload: bytes) -> None:
    assert reported_failures(payload, IDS) == set()


def test_reported_failures_are_the_named_ids() -> None:
    payload = json.dumps({"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m3"}]})
    assert reported_failures(payload.encode(), IDS) == {"m1", "m3"}


@pytest.mark.parametrize(("payload", "why"), [
    (b"{not json", "not JSON"),
    (b'"done"', "JSON str, not an object"),
    (b'[{"itemIdentifier": "m1"}]', "JSON list, not an object"),
    (b'{"batchItemFailures": "m1"}', "not a list"),
    (b'{"batchItemFailures": [{"itemIdentifier": ""}]}', "without an itemIdentifier"),
    (b'{"batchItemFailures": [{"itemIdentifier": null}]}', "without an itemIdentifier"),
    (b'{"batchItemFailures": [{"itemIdentifer": "m1"}]}', "without an itemIdentifier"),
    (b'{"batchItemFailures": [{"itemIdentifier": "m9"}]}', "'m9' is not a message of this batch"),
])
def test_responses_failing_the_whole_batch(payload: bytes, why: str) -> None:
    with pytest.raises(BatchResponseError, match=why):
        reported_failures(payload, IDS)


def test_function_error_fails_everything_and_bad_response_too() -> None:
    recs = records(("m1", ""), ("m2", ""))
    error = Result.error("E", "x")
    failed, why, whole = batch_verdict(error, recs, report_batch_item_failures=True, fifo=False)
    assert failed == {"m1", "m2"}
    assert why == "the function failed (error)"
    assert whole  # bisect_on_error splits it
    bad = Result(payload=b'{"batchItemFailures": [{"itemIdentifier": "nope"}]}')
    failed, why, whole = batch_verdict(bad, recs, report_batch_item_failures=True, fifo=False)
    assert failed == {"m1", "m2"}
    assert why is not None
    assert why.startswith("invalid batchItemFailures response: itemIdentifier 'nope'")
    assert whole
    timeout = Result.error("Sandbox.Timedout", "Task timed out after 1.00 seconds", outcome=Outcome.TIMEOUT,
                           error_type=ErrorType.TIMEOUT)
    assert batch_verdict(timeout, recs, report_batch_item_failures=False, fifo=False) == (
        {"m1", "m2"}, "the function failed (timeout)", True)
    # without report_batch_item_failures the response is not looked at
    assert batch_verdict(bad, recs, report_batch_item_failures=False, fifo=False) == (set(), None, False)


def test_throttles_and_reported_failures_are_not_whole_batch_failures() -> None:
    """What bisect_on_error splits: not a throttle (not the messages' fault), not the failures the
    function reported itself (they are honoured as they are)."""
    recs = records(("m1", ""), ("m2", ""))
    throttled = Result.error("TooManyRequestsException", "slow down", outcome=Outcome.THROTTLED,
                             throttle=True)
    assert batch_verdict(throttled, recs, report_batch_item_failures=False, fifo=False) == (
        {"m1", "m2"}, "the function failed (throttled)", False)
    reported = Result(payload=b'{"batchItemFailures": [{"itemIdentifier": "m2"}]}')
    assert batch_verdict(reported, recs, report_batch_item_failures=True, fifo=False) == (
        {"m2"}, "the function reported 1 of 2 messages failed", False)


def test_fifo_failure_blocks_later_messages_of_its_group_only() -> None:
    recs = records(("a1", "A"), ("b1", "B"), ("a2", "A"), ("a3", "A"), ("b2", "B"))
    assert block_later_in_group(recs, {"a2"}) == {"a2", "a3"}
    assert block_later_in_group(recs, {"b1"}) == {"b1", "b2"}
    payload = json.dumps({"batchItemFailures": [{"itemIdentifier": "a1"}]}).encode()
    failed, _, _ = batch_verdict(Result(payload=payload), recs, report_batch_item_failures=True, fifo=True)
    assert failed == {"a1", "a2", "a3"}
    failed, _, _ = batch_verdict(Result(payload=payload), recs, report_batch_item_failures=True, fifo=False)
    assert failed == {"a1"}


def test_message_attributes_in_lambda_shape() -> None:
    got = message_attributes({
        "s": {"StringValue": "v", "DataType": "String"},
        "n": {"StringValue": "12", "DataType": "Number.int"},
        "b": {"BinaryValue": b"\x00\x01", "DataType": "Binary"},
    })
    assert got == {
        "s": {"stringValue": "v", "stringListValues": [], "binaryListValues": [], "dataType": "String"},
        "n": {"stringValue": "12", "stringListValues": [], "binaryListValues": [], "dataType": "Number.int"},
        "b": {"binaryValue": "AAE=", "stringListValues": [], "binaryListValues": [], "dataType": "Binary"},
    }


def test_record_keys_in_lambda_order() -> None:
    msg = {"MessageId": "m", "ReceiptHandle": "r", "Body": "x", "MD5OfBody": "h", "Attributes": {}}
    rec = to_record(msg, arn="arn:aws:sqs:eu-west-1:1:q", region="eu-west-1")
    assert list(rec) == ["messageId", "receiptHandle", "body", "attributes", "messageAttributes",
                         "md5OfMessageAttributes", "md5OfBody", "eventSource", "eventSourceARN", "awsRegion"]
    assert rec["eventSource"] == "aws:sqs"
    assert rec["md5OfMessageAttributes"] is None  # no message attributes: null, as Lambda sends it
    with_attributes = to_record({**msg, "MD5OfMessageAttributes": "a1"}, arn="arn:aws:sqs:eu-west-1:1:q",
                                region="eu-west-1")
    assert with_attributes["md5OfMessageAttributes"] == "a1"


def test_region_of_arn() -> None:
    assert region_of("arn:aws:sqs:ap-south-1:123:q", "us-east-1") == "ap-south-1"
    assert region_of("garbage", "us-east-1") == "us-east-1"


def _client_error(code: str, status: int = 400, message: str = "msg") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "ReceiveMessage")


@pytest.mark.parametrize(("exc", "text", "kind"), [
    (_client_error("AWS.SimpleQueueService.NonExistentQueue"),
     r"^queue not found \(AWS\.SimpleQueueService\.NonExistentQueue\); "
     r"check source\.queue_url and aws\.region$",
     ErrorType.CONFIG),
    (_client_error("InvalidClientTokenId", 403, "The security token included in the request is invalid."),
     r"^access denied \(InvalidClientTokenId\): The security token .*; check the AWS credentials",
     ErrorType.CONFIG),
    (_client_error("ThrottlingException"), r"^throttled by AWS \(ThrottlingException\); backing off$",
     ErrorType.THROTTLED),
    (_client_error("InternalError", 500), r"^AWS error InternalError: msg$", ErrorType.HTTP_5XX),
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
     r"^cannot reach AWS \(EndpointConnectionError: .*\); check aws\.endpoint_url", ErrorType.CONNECTION),
    (NoCredentialsError(), r"^no usable AWS credentials \(NoCredentialsError\)", ErrorType.CONFIG),
])
def test_describe_error(exc: BaseException, text: str, kind: ErrorType) -> None:
    hint = "check source.queue_url and aws.region"
    message, error_type = describe_error(exc, what="queue", hint_not_found=hint)
    assert error_type is kind
    assert re.search(text, message), message


def test_fit_payload_cuts_the_batch_at_the_limit_and_keeps_at_least_one() -> None:
    from router.sources.sqs.event import batch_payload, fit_payload

    records = [{"messageId": str(i), "body": "x" * 1000} for i in range(10)]
    whole = len(batch_payload(records))
    kept, rest = fit_payload(records, limit=whole)
    assert (kept, rest) == (records, [])
    kept, rest = fit_payload(records, limit=whole - 1)
    assert kept == records[:9]
    assert rest == records[9:]
    assert len(batch_payload(kept)) <= whole - 1
    kept, rest = fit_payload(records, limit=3500)
    assert len(batch_payload(kept)) <= 3500 < len(batch_payload(records[:len(kept) + 1]))
    assert kept + rest == records
    kept, rest = fit_payload(records, limit=10)  # one record alone is over the limit: still invoked
    assert kept == records[:1]
    assert rest == records[1:]


def test_fit_batch_encodes_the_kept_records_as_fit_payload_cuts_them() -> None:
    from router.sources.sqs.event import batch_payload, fit_batch, fit_payload

    records = [{"messageId": str(i), "body": "é\"" * 300} for i in range(10)]  # escapes grow the JSON
    whole = batch_payload(records)
    assert fit_batch(records, limit=len(whole)) == (records, [], whole)
    for limit in (len(whole) - 1, 3500, 10):
        kept, rest, payload = fit_batch(records, limit=limit)
        assert (kept, rest) == fit_payload(records, limit=limit)
        assert payload == batch_payload(kept)
        assert json.loads(payload) == {"Records": kept}
