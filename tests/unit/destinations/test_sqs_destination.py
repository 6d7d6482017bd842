"""The sqs destination against a real moto_server: the record arrives as the JSON body; FIFO ids; errors."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from router.aws import create_client
from router.config.models import AwsConfig
from router.destinations.sqs import SqsDestination
from router.errors import DestinationError

RECORD = {
    "version": "1.0",
    "timestamp": "2024-01-01T00:00:00.000Z",
    "requestContext": {"requestId": "5e0e6a7c-1111-4c2e-9a60-0d2b5c8a1f00",
                       "functionArn": "arn:aws:lambda:eu-west-1:123456789012:function:resize",
                       "condition": "RetriesExhausted", "approximateInvokeCount": 3},
    "requestPayload": {"ü": "x" * 1000},
    "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
    "responsePayload": {"errorMessage": "boom", "errorType": "ValueError"},
}


@pytest.fixture
def aws(moto_server: str) -> AwsConfig:
    return AwsConfig(region="eu-west-1", endpoint_url=moto_server)


@pytest.fixture
async def client(aws: AwsConfig) -> AsyncIterator[Any]:
    async with create_client("sqs", aws) as c:
        yield c


async def _receive(client: Any, url: str) -> list[dict[str, Any]]:
    resp = await client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                        MessageSystemAttributeNames=["All"])
    return list(resp.get("Messages") or [])


async def test_record_arrives_as_json_body(aws: AwsConfig, client: Any) -> None:
    url = (await client.create_queue(QueueName=f"dest-{uuid.uuid4().hex[:8]}"))["QueueUrl"]
    dest = SqsDestination(url, aws=aws)
    assert dest.kind == "sqs"
    await dest.send(RECORD)
    [msg] = await _receive(client, url)
    assert json.loads(msg["Body"]) == RECORD


async def test_the_trace_header_becomes_the_aws_trace_header_attribute(aws: AwsConfig, client: Any) -> None:
    """As SQS keeps a Lambda function's X-Amzn-Trace-Id: the sqs source reads the loop count back."""
    url = (await client.create_queue(QueueName=f"dest-{uuid.uuid4().hex[:8]}"))["QueueUrl"]
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0;Lineage=12326a9d:4"
    await SqsDestination(url, aws=aws).send(RECORD, trace=trace)
    await SqsDestination(url, aws=aws).send(RECORD)
    traces = [m.get("Attributes", {}).get("AWSTraceHeader") for m in await _receive(client, url)]
    assert sorted(traces, key=str) == sorted([trace, None], key=str)


async def test_fifo_queue_gets_group_and_deduplication_ids(aws: AwsConfig, client: Any) -> None:
    name = f"dest-{uuid.uuid4().hex[:8]}.fifo"
    url = (await client.create_queue(QueueName=name, Attributes={"FifoQueue": "true"}))["QueueUrl"]
    dest = SqsDestination(url, aws=aws)
    await dest.send(RECORD)
    await dest.send(RECORD)  # the same record again (a retried delivery): deduplicated by SQS
    msgs = await _receive(client, url)
    assert len(msgs) == 1
    attrs = msgs[0]["Attributes"]
    assert attrs["MessageGroupId"] == "resize"
    assert attrs["MessageDeduplicationId"] == "5e0e6a7c-1111-4c2e-9a60-0d2b5c8a1f00:RetriesExhausted"
    assert json.loads(msgs[0]["Body"]) == RECORD


async def test_missing_queue_raises_a_clear_error(aws: AwsConfig, moto_server: str) -> None:
    url = f"{moto_server}/123456789012/no-such-queue-{uuid.uuid4().hex[:6]}"
    with pytest.raises(DestinationError, match=(
        r"^sqs destination http://.*/no-such-queue-\w+: queue not found \([\w.]+\); "
        r"check its queue_url and aws.region$"
    )):
        await SqsDestination(url, aws=aws).send(RECORD)


async def test_unreachable_endpoint_raises(aws: AwsConfig) -> None:
    dead = aws.model_copy(update={"endpoint_url": "http://127.0.0.1:9"})
    with pytest.raises(DestinationError, match=r": cannot reach AWS \(EndpointConnectionError"):
        await SqsDestination("http://127.0.0.1:9/123456789012/q", aws=dead).send(RECORD)


def test_dead_letter_message_is_the_event_as_it_came_with_lambdas_attributes() -> None:
    from router.config.models import AwsConfig, DeadLetterConfig
    from router.destinations.dead_letter import MESSAGE_LIMIT, DeadLetterQueue
    from router.invocation import Outcome, Result

    dlq = DeadLetterQueue(DeadLetterConfig(queue_url="https://sqs.example/1/dlq"), aws=AwsConfig())
    long = Result.error("ValueError", "\u00e9" * 2000, outcome=Outcome.ERROR)
    kw = dlq.call(request_id="r-1", payload=b'{"a": "\xe2\x82\xac"}', result=long, trace="Root=1-abc")
    assert (kw["QueueUrl"], kw["MessageBody"]) == ("https://sqs.example/1/dlq", '{"a": "\u20ac"}')
    attrs = kw["MessageAttributes"]
    assert attrs["RequestID"] == {"DataType": "String", "StringValue": "r-1"}
    assert attrs["ErrorCode"] == {"DataType": "Number", "StringValue": "200"}
    message = attrs["ErrorMessage"]["StringValue"]
    assert message == "\u00e9" * (MESSAGE_LIMIT // 2)  # 1 KB of UTF-8, cut at a character's start
    assert kw["MessageSystemAttributes"]["AWSTraceHeader"]["StringValue"] == "Root=1-abc"
    # an event that aged out before any invocation: only its request id is known
    none_ran = dlq.call(request_id="r-2", payload=b"{}", result=None)
    assert none_ran["MessageAttributes"] == {"RequestID": {"DataType": "String", "StringValue": "r-2"}}
