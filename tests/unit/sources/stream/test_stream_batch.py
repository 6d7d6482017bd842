"""Pure parts of the stream engine: batch sizes, lanes, bisection, checkpoint choice, the failure record."""

from __future__ import annotations

import json

import pytest

from router.invocation import Outcome, Result
from router.sources.stream.api import StreamRecord
from router.sources.stream.batch import (
    Attempt,
    BatchResponseError,
    CheckpointTracker,
    bisect,
    failure_record,
    first_failed,
    lane_of,
    payload,
)


def rec(seq: str, size: int = 10, arrival: float = 1_700_000_000.0, key: str = "k") -> StreamRecord:
    return StreamRecord(sequence_number=seq, arrival=arrival, key=key, size=size, event={"seq": seq})


def test_bisect_keeps_order() -> None:
    records = [rec(str(i)) for i in range(5)]
    first, second = bisect(records)
    assert [r.sequence_number for r in first] == ["0", "1", "2"]
    assert [r.sequence_number for r in second] == ["3", "4"]


def test_lane_of_is_stable_and_spread() -> None:
    assert lane_of("anything", 1) == 0
    lanes = {lane_of(f"key-{i}", 4) for i in range(100)}
    assert lanes == {0, 1, 2, 3}
    assert all(lane_of("same", 7) == lane_of("same", 7) for _ in range(3))


def test_checkpoint_tracker_advances_only_over_contiguous_done() -> None:
    t = CheckpointTracker()
    t.read(["10", "20", "30", "40"])
    assert t.finish(["20"]) is None  # 10 is still running
    assert t.finish(["40"]) is None
    assert t.finish(["10"]) == "20"
    assert t.in_flight == 2
    assert t.finish(["30"]) == "40"
    assert t.in_flight == 0


def test_first_failed_by_sequence_number_not_text() -> None:
    records = [rec("9"), rec("10"), rec("11")]
    body = {"batchItemFailures": [{"itemIdentifier": "11"}, {"itemIdentifier": "10"}]}
    assert first_failed(Result(payload=json.dumps(body).encode()), records) == 1
    assert first_failed(Result(payload=b'{"batchItemFailures": []}'), records) is None
    for success in (b'""', b"[]", b"null", b"{}", b""):  # Lambda's successes (LocalStack's AWS snapshots)
        assert first_failed(Result(payload=success), records) is None
    assert first_failed(Result(payload=b"null"), records) is None
    assert first_failed(Result(payload=b""), records) is None


@pytest.mark.parametrize("body", [
    b'{"batchItemFailures": [{"itemIdentifier": "12"}]}',
    b'{"batchItemFailures": [{"itemIdentifier": null}]}',
    b'{"batchItemFailures": [{"id": "9"}]}',
    b'"text"',
])
def test_first_failed_refuses_what_lambda_refuses(body: bytes) -> None:
    with pytest.raises(BatchResponseError):
        first_failed(Result(payload=body), [rec("9"), rec("10")])


def test_failure_record_shape() -> None:
    result = Result.error("ValueError", "bad", outcome=Outcome.ERROR)
    attempt = Attempt([rec("5", arrival=1.5), rec("6", arrival=2.25)], retries=2, invokes=3, result=result,
                      request_id="req-1")
    record = failure_record(attempt, condition="RetryAttemptsExhausted", function_arn="arn:fn",
                            shard_id="shardId-1", stream_arn="arn:stream",
                            batch_info_key="DDBStreamBatchInfo",
                            request_id="unused", now=0.0)
    assert record == {
        "requestContext": {"requestId": "req-1", "functionArn": "arn:fn",
                           "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 3},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": "1970-01-01T00:00:00.000Z",
        "DDBStreamBatchInfo": {  # DynamoDB Streams: to the second, as Lambda writes it
            "shardId": "shardId-1", "startSequenceNumber": "5", "endSequenceNumber": "6",
            "approximateArrivalOfFirstRecord": "1970-01-01T00:00:01Z",
            "approximateArrivalOfLastRecord": "1970-01-01T00:00:02Z", "batchSize": 2,
            "streamArn": "arn:stream",
        },
    }


def test_failure_record_of_a_batch_the_function_failed_by_its_response() -> None:
    """A function that returned (its batchItemFailures failed the batch): functionError is null, as in
    Lambda's records; Kinesis' arrival times to the millisecond."""
    attempt = Attempt([rec("5", arrival=1.5)], retries=1, invokes=2,
                      result=Result(payload=b'{"batchItemFailures": [{"itemIdentifier": "5"}]}'),
                      request_id="req-2")
    record = failure_record(attempt, condition="RetryAttemptsExhausted", function_arn="arn:fn",
                            shard_id="shardId-1", stream_arn="arn:stream", batch_info_key="KinesisBatchInfo",
                            request_id="unused", now=0.0)
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST",
                                         "functionError": None}
    assert record["KinesisBatchInfo"]["approximateArrivalOfFirstRecord"] == "1970-01-01T00:00:01.500Z"


def test_failure_record_of_records_too_old_has_no_response_context() -> None:
    """RecordAgeExceeded: Lambda's record has no responseContext, whether the records ran or not; the
    request id given is used when no invocation ran."""
    for attempt in (Attempt([rec("5")]),
                    Attempt([rec("5")], invokes=3, result=Result.error("E", "m", outcome=Outcome.ERROR),
                            request_id="req-3")):
        record = failure_record(attempt, condition="RecordAgeExceeded", function_arn="arn:fn",
                                shard_id="shardId-1", stream_arn="arn:stream",
                                batch_info_key="KinesisBatchInfo", request_id="new-id", now=0.0)
        assert "responseContext" not in record
        assert record["requestContext"]["requestId"] == (attempt.request_id or "new-id")
        assert record["requestContext"]["approximateInvokeCount"] == attempt.invokes


def test_payload() -> None:
    assert json.loads(payload([rec("1"), rec("2")])) == {"Records": [{"seq": "1"}, {"seq": "2"}]}
