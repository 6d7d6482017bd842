"""The sns and eventbridge destinations' calls, and the dead-letter message as SNS takes it."""

from __future__ import annotations

import json

import pytest

from router.config.models import AsyncConfig, AwsConfig, DeadLetterConfig
from router.destinations.dead_letter import DeadLetterQueue
from router.destinations.sns import SnsDestination
from router.invocation import Outcome, Result

RECORD = {"version": "1.0", "requestContext": {
    "requestId": "r-1", "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:resize:$LATEST",
    "condition": "RetriesExhausted", "approximateInvokeCount": 3}}


def test_the_record_is_the_message() -> None:
    dest = SnsDestination("arn:aws:sns:us-east-1:123456789012:failed", aws=AwsConfig())
    kw = dest.message(RECORD)
    assert kw == {"TopicArn": "arn:aws:sns:us-east-1:123456789012:failed", "Message": json.dumps(RECORD)}


def test_a_fifo_topic_gets_the_functions_group_and_a_deduplication_id() -> None:
    dest = SnsDestination("arn:aws:sns:us-east-1:123456789012:failed.fifo", aws=AwsConfig())
    kw = dest.message(RECORD)
    assert (kw["MessageGroupId"], kw["MessageDeduplicationId"]) == ("resize", "r-1:RetriesExhausted")


def test_the_dead_letter_message_for_sns_has_the_same_body_and_attributes() -> None:
    topic = "arn:aws:sns:us-east-1:123456789012:dlq"
    dlq = DeadLetterQueue(DeadLetterConfig(topic_arn=topic), aws=AwsConfig())
    result = Result.error("ValueError", "bad", outcome=Outcome.ERROR)
    kw = dlq.call(request_id="r-2", payload=b'{"a": 1}', result=result, trace="Root=1-x")
    assert dlq.service == "sns"
    assert kw == {"TopicArn": topic, "Message": '{"a": 1}', "MessageAttributes": {
        "RequestID": {"DataType": "String", "StringValue": "r-2"},
        "ErrorCode": {"DataType": "Number", "StringValue": "200"},
        "ErrorMessage": {"DataType": "String", "StringValue": "bad"}}}


@pytest.mark.parametrize(("dead_letter", "message"), [
    ({}, "exactly one of queue_url (SQS) or topic_arn (SNS)"),
    ({"queue_url": "http://127.0.0.1:5000/123456789012/q",
      "topic_arn": "arn:aws:sns:us-east-1:123456789012:t"},
     "exactly one of queue_url (SQS) or topic_arn (SNS)"),
    ({"queue_url": "http://127.0.0.1:5000/123456789012/q.fifo"}, "an SQS standard queue here"),
    ({"topic_arn": "arn:aws:sns:us-east-1:123456789012:t.fifo"}, "an SNS standard topic here"),
    ({"topic_arn": "t"}, "not an SNS topic ARN; expected arn:aws:sns:REGION:ACCOUNT:NAME"),
])
def test_a_dead_letter_target_is_refused_with_why(dead_letter: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        AsyncConfig.model_validate({"dead_letter": dead_letter})


def test_the_eventbridge_entry_is_lambdas() -> None:
    from router.destinations.eventbridge import EventBridgeDestination

    bus = "arn:aws:events:us-east-1:123456789012:event-bus/results"
    dest = EventBridgeDestination(bus, aws=AwsConfig())
    entry = dest.entry(RECORD)
    assert entry == {"Source": "lambda", "DetailType": "Lambda Function Invocation Result - Failure",
                     "Detail": json.dumps(RECORD), "EventBusName": bus,
                     "Resources": [bus, RECORD["requestContext"]["functionArn"]]}
    success = {**RECORD, "requestContext": {**RECORD["requestContext"], "condition": "Success"}}
    assert dest.entry(success)["DetailType"] == "Lambda Function Invocation Result - Success"
