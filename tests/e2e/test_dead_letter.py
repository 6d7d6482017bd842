"""A function's dead-letter queue (``async.dead_letter``, Lambda's ``DeadLetterConfig``) end to end: a real
router, moto's SQS server, boto3. A failed async event reaches the queue as it came, its request id and
error in Lambda's message attributes, beside its on_failure record; a queue that does not take it is
counted (Lambda's ``DeadLetterErrors``) and the event is still among the failed events."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.router_process import RouterFactory, RouterProcess, http, metric_sample, router
from tests.waiting import until_sync

REGION = "us-east-1"
KEY_ID, SECRET = "AKIDROUTERTEST", "router-test-secret"
EVENT = b'{"order": 7, "note": "caf\\u00e9 \xe2\x82\xac"}'


def _router(router_factory: RouterFactory, tmp_path: Path, moto_server: str, dlq_url: str, *,
            dead_letter: str | None = None, on_failure: str | None = None) -> RouterProcess:
    router_factory.write_function("fails", """
        import json

        def handler(event, context):
            order = json.loads(event["body"])["order"]
            raise ValueError(f"order {order} cannot be packed")
    """)
    return router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 5s, invoke_keys: {{{KEY_ID}: {SECRET}}}}}
        state: sqlite:///{tmp_path / 'state.db'}
        aws: {{region: {REGION}, endpoint_url: "{moto_server}", account_id: "123456789012"}}
        functions:
          fails:
            runtime: python3.11
            handler: app.handler
            code: {tmp_path / 'functions' / 'fails'}
            async:
              retries: 0
              dead_letter: {dead_letter or f'{{queue_url: "{dlq_url}"}}'}
              on_failure: {on_failure or f"{{type: file, path: {tmp_path / 'failed.jsonl'}}}"}
        routes:
          - name: orders
            source: {{type: webhook, path: /orders}}
            function: fails
            invocation: async
    """)


def _post(rp: RouterProcess) -> str:
    status, _, body = http("POST", rp.url + "/orders", EVENT, {"Content-Type": "application/json"})
    assert status == 202, body
    return str(json.loads(body)["requestId"])  # the webhook's 202 body


@pytest.mark.timeout(120)
def test_a_failed_event_reaches_the_dead_letter_queue_as_it_came(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str, sqs_client: Any,
) -> None:
    dlq_url, _ = _queue(sqs_client, "dlq")
    rp = _router(router_factory, tmp_path, moto_server, dlq_url)
    request_id = _post(rp)
    messages: list[dict[str, Any]] = []

    def received() -> bool:
        messages.extend(sqs_client.receive_message(
            QueueUrl=dlq_url, MessageAttributeNames=["All"], WaitTimeSeconds=1).get("Messages", []))
        return bool(messages)

    until_sync(received, "the event in the dead-letter queue", deadline=60)
    (message,) = messages
    event = json.loads(message["Body"])
    assert event["body"] == EVENT.decode()  # the webhook's event, unchanged: the body as it was posted
    assert event["requestContext"]["requestId"] == request_id
    assert message["MessageAttributes"] == {
        "RequestID": {"DataType": "String", "StringValue": request_id},
        "ErrorCode": {"DataType": "Number", "StringValue": "200"},
        "ErrorMessage": {"DataType": "String", "StringValue": "order 7 cannot be packed"},
    }
    # the on_failure destination gets its record as well
    until_sync((tmp_path / "failed.jsonl").exists, "the on_failure record")
    record = json.loads((tmp_path / "failed.jsonl").read_text().splitlines()[0])
    assert record["requestContext"]["requestId"] == request_id
    assert metric_sample(rp.url, 'router_dead_letter_errors_total{function="fails"}') in (None, 0)

    # GetFunctionConfiguration shows it as Lambda's DeadLetterConfig
    client = boto3.client("lambda", endpoint_url=rp.url, region_name=REGION, aws_access_key_id=KEY_ID,
                          aws_secret_access_key=SECRET,
                          config=Config(retries={"mode": "standard", "total_max_attempts": 1}))
    queue_name = dlq_url.rstrip("/").rsplit("/", 1)[1]
    assert client.get_function_configuration(FunctionName="fails")["DeadLetterConfig"] == {
        "TargetArn": f"arn:aws:sqs:{REGION}:123456789012:{queue_name}"}
    client.close()


@pytest.mark.timeout(120)
def test_a_dead_letter_queue_that_refuses_is_counted_and_the_event_kept(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str,
) -> None:
    missing = f"{moto_server}/123456789012/no-such-queue-{uuid.uuid4().hex[:8]}"
    rp = _router(router_factory, tmp_path, moto_server, missing)
    request_id = _post(rp)
    until_sync(lambda: (metric_sample(rp.url, 'router_dead_letter_errors_total{function="fails"}') or 0) == 1,
               "the refusal counted", deadline=60)
    logged = [r for r in rp.log_records() if "not dead-lettered" in r.get("message", "")]
    assert len(logged) == 1, logged
    assert logged[0]["request_id"] == request_id
    assert "no-such-queue" in logged[0]["message"]
    listed = router("failures", "list", "--config", str(rp.config_path), "--url", rp.url, "--json",
                    env={"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET})
    assert listed.returncode == 0, listed.stderr
    assert [f["request_id"] for f in json.loads(listed.stdout)["failures"]] == [request_id]


def _queue(sqs_client: Any, name: str) -> tuple[str, str]:
    """A new queue's URL and ARN."""
    url = sqs_client.create_queue(QueueName=f"{name}-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def _subscribed_queue(moto_server: str, sqs_client: Any, name: str) -> tuple[str, str]:
    """An SNS topic and the URL of an SQS queue subscribed to it with raw delivery (the message and its
    attributes as they were published)."""
    sns = boto3.client("sns", region_name=REGION, endpoint_url=moto_server, aws_access_key_id="x",
                       aws_secret_access_key="x")
    topic = sns.create_topic(Name=f"{name}-{uuid.uuid4().hex[:8]}")["TopicArn"]
    url, arn = _queue(sqs_client, name)
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    sns.close()
    return topic, url


def _one_message(sqs_client: Any, url: str, what: str) -> dict[str, Any]:
    got: list[dict[str, Any]] = []

    def received() -> bool:
        got.extend(sqs_client.receive_message(QueueUrl=url, MessageAttributeNames=["All"],
                                              WaitTimeSeconds=1).get("Messages", []))
        return bool(got)

    until_sync(received, what, deadline=60)
    (message,) = got
    return message


@pytest.mark.timeout(120)
def test_sns_as_the_dead_letter_topic_and_the_on_failure_destination(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str, sqs_client: Any,
) -> None:
    """Lambda's other target kind: an SNS topic as the dead-letter target (the event as it came, the same
    attributes) and as the on_failure destination (the record as the message)."""
    dlq_topic, dlq_url = _subscribed_queue(moto_server, sqs_client, "dlq")
    failed_topic, failed_url = _subscribed_queue(moto_server, sqs_client, "failed")
    rp = _router(router_factory, tmp_path, moto_server, "", dead_letter=f'{{topic_arn: "{dlq_topic}"}}',
                 on_failure=f'{{type: sns, topic_arn: "{failed_topic}"}}')
    request_id = _post(rp)
    message = _one_message(sqs_client, dlq_url, "the event through the dead-letter topic")
    assert json.loads(message["Body"])["body"] == EVENT.decode()
    attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert attributes == {"RequestID": request_id, "ErrorCode": "200",
                          "ErrorMessage": "order 7 cannot be packed"}
    record = json.loads(_one_message(sqs_client, failed_url, "the record through the on_failure topic")
                        ["Body"])
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["responsePayload"]["errorMessage"] == "order 7 cannot be packed"
    client = boto3.client("lambda", endpoint_url=rp.url, region_name=REGION, aws_access_key_id=KEY_ID,
                          aws_secret_access_key=SECRET)
    configuration = client.get_function_configuration(FunctionName="fails")
    assert configuration["DeadLetterConfig"] == {"TargetArn": dlq_topic}
    invoke_config = client.get_function_event_invoke_config(FunctionName="fails")
    assert invoke_config["DestinationConfig"]["OnFailure"] == {"Destination": failed_topic}
    client.close()


@pytest.mark.timeout(120)
def test_an_eventbridge_destination_puts_lambdas_event_on_the_bus(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str, sqs_client: Any,
) -> None:
    """Lambda's EventBridge destination: source lambda, detail-type "Lambda Function Invocation Result -
    Failure", the record as detail, the bus and the function as resources (read back through a rule
    whose target is a queue)."""
    events = boto3.client("events", region_name=REGION, endpoint_url=moto_server, aws_access_key_id="x",
                          aws_secret_access_key="x")
    bus = events.create_event_bus(Name=f"results-{uuid.uuid4().hex[:8]}")["EventBusArn"]
    url, arn = _queue(sqs_client, "results")
    bus_name = bus.rsplit("/", 1)[1]
    events.put_rule(Name="from-lambda", EventBusName=bus_name,
                    EventPattern=json.dumps({"source": ["lambda"]}))
    events.put_targets(Rule="from-lambda", EventBusName=bus_name, Targets=[{"Id": "queue", "Arn": arn}])
    events.close()
    dlq_url, _ = _queue(sqs_client, "dlq")
    rp = _router(router_factory, tmp_path, moto_server, dlq_url,
                 on_failure=f'{{type: eventbridge, event_bus_arn: "{bus}"}}')
    request_id = _post(rp)
    event = json.loads(_one_message(sqs_client, url, "the record through the event bus")["Body"])
    assert event["source"] == "lambda"
    assert event["detail-type"] == "Lambda Function Invocation Result - Failure"
    assert event["resources"] == [bus, "arn:aws:lambda:us-east-1:123456789012:function:fails:$LATEST"]
    assert event["detail"]["requestContext"]["requestId"] == request_id
    assert event["detail"]["requestContext"]["condition"] == "RetriesExhausted"
    assert event["detail"]["responsePayload"]["errorMessage"] == "order 7 cannot be packed"


@pytest.mark.timeout(120)
def test_an_s3_on_failure_destination_writes_the_record_where_lambda_does(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str, sqs_client: Any,
) -> None:
    """Lambda's S3 destination (on failure only): the invocation record as a JSON object named
    ``aws/lambda/async/FUNCTION/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-UUID``."""
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_server, aws_access_key_id="x",
                      aws_secret_access_key="x")
    bucket = f"failures-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    dlq_url, _ = _queue(sqs_client, "dlq")
    rp = _router(router_factory, tmp_path, moto_server, dlq_url,
                 on_failure=f'{{type: s3, bucket_arn: "arn:aws:s3:::{bucket}"}}')
    request_id = _post(rp)
    keys = until_sync(lambda: [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])],
                      deadline=30, what="the record's object")
    [key] = keys
    assert re.fullmatch(r"aws/lambda/async/fails/\d{4}/\d{2}/\d{2}/\d{4}-\d{2}-\d{2}T\d{2}\.\d{2}\.\d{2}-"
                        r"[0-9a-f-]{36}", key), key
    record = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["responsePayload"]["errorMessage"] == "order 7 cannot be packed"
    s3.close()
    assert rp.stop() == 0
