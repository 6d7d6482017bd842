"""Every event shape the router makes, parsed in the function by AWS Lambda Powertools' parser models, as a
Lambda app parses them (`@event_parser` / `parse`): webhooks in each payload format, function URLs, schedules,
SQS, Kinesis and DynamoDB Streams (moto_server), through a real router process. A field the model requires
that the router leaves out, or one of the wrong type, fails the function and so the test, naming it."""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3

from tests.router_process import RouterFactory, http
from tests.unavailable import unavailable
from tests.waiting import until_sync

REGION = "us-east-1"
RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"  # the router's own interpreter

APP = """
import json
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser import models

OUT = {out!r}
MODELS = {{
    "v2": models.APIGatewayProxyEventV2Model,
    "v1": models.APIGatewayProxyEventModel,
    "alb": models.AlbModel,
    "url": models.LambdaFunctionUrlModel,
    "schedule": models.EventBridgeModel,
    "sqs": models.SqsModel,
    "kinesis": models.KinesisDataStreamModel,
    "ddb": models.DynamoDBStreamModel,
}}


def _check(kind, event):
    try:
        parsed = parse(event=event, model=MODELS[kind])
    except Exception as exc:
        with open(OUT, "a") as f:
            f.write(json.dumps({{"kind": kind, "error": str(exc), "event": event}}, default=str) + "\\n")
        raise
    seen = {{"kind": kind}}
    if kind == "kinesis":  # the model decodes the data (base64) as Lambda's records carry it
        seen["data"] = [r.kinesis.data.decode() for r in parsed.Records]
    if kind == "sqs":
        seen["bodies"] = [r.body for r in parsed.Records]
    if kind == "ddb":
        seen["keys"] = [r.dynamodb.Keys for r in parsed.Records]
    with open(OUT, "a") as f:
        f.write(json.dumps(seen, default=str) + "\\n")
    return {{"statusCode": 200, "body": kind}}


def _handler(kind):
    return lambda event, context: _check(kind, event)


for _kind in MODELS:  # one handler a kind: app.v2, app.v1, ..., app.ddb
    globals()[_kind] = _handler(_kind)
"""


def _seen(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_powertools_parser_models_accept_every_event_shape(router_factory: RouterFactory, tmp_path: Path,
                                                           moto_server: str) -> None:
    if importlib.util.find_spec("aws_lambda_powertools") is None:
        unavailable("aws-lambda-powertools is not installed (pip install -e '.[test]')")
    out = tmp_path / "seen.jsonl"
    code = router_factory.write_function("parse", APP.format(out=str(out)))
    aws = {"region_name": REGION, "endpoint_url": moto_server, "aws_access_key_id": "x",
           "aws_secret_access_key": "x"}
    sqs = boto3.client("sqs", **aws)
    kinesis = boto3.client("kinesis", **aws)
    ddb = boto3.client("dynamodb", **aws)
    try:
        queue_url = sqs.create_queue(QueueName=f"parse-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        stream = f"parse-{uuid.uuid4().hex[:8]}"
        kinesis.create_stream(StreamName=stream, ShardCount=1)
        summary = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
        stream_arn = summary["StreamARN"]
        table = f"parse-{uuid.uuid4().hex[:8]}"
        table_stream = ddb.create_table(
            TableName=table, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )["TableDescription"]["LatestStreamArn"]

        def fn(handler: str, extra: str = "") -> str:
            return f"{{runtime: {RUNTIME}, handler: app.{handler}, code: {code}{extra}}}"

        rp = router_factory(f"""
version: 1
server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 10s}}
state: sqlite:///{tmp_path / 'state.db'}
aws: {{region: {REGION}, endpoint_url: "{moto_server}", account_id: "123456789012"}}
functions:
  v2: {fn("v2")}
  v1: {fn("v1")}
  alb: {fn("alb")}
  url: {fn("url", ", url: {auth: NONE}")}
  schedule: {fn("schedule")}
  sqs: {fn("sqs")}
  kinesis: {fn("kinesis")}
  ddb: {fn("ddb")}
routes:
  - {{name: v2, source: {{type: webhook, path: "/v2/{{id}}", methods: [GET, POST]}}, function: v2}}
  - name: v1
    source: {{type: webhook, path: "/v1/{{id}}", methods: [GET, POST], payload: v1}}
    function: v1
  - name: alb
    source: {{type: webhook, path: /alb, methods: [GET, POST], payload: alb}}
    function: alb
  - {{name: tick, source: {{type: schedule, rate: 1s}}, function: schedule}}
  - name: jobs
    source: {{type: sqs, queue_url: "{queue_url}", batch_size: 10, wait_time: 1s}}
    function: sqs
  - name: clicks
    source: {{type: kinesis, stream_arn: "{stream_arn}", starting_position: TRIM_HORIZON}}
    function: kinesis
  - name: changes
    source: {{type: dynamodb_stream, stream_arn: "{table_stream}", starting_position: TRIM_HORIZON}}
    function: ddb
""")
        for path in ("/v2/7?q=1&tag=a&tag=b", "/v1/7?q=1&tag=a&tag=b", "/alb?q=1"):
            status, _, body = http("GET", rp.url + path, headers={"Cookie": "a=1; b=2", "X-Custom": "x"})
            assert status == 200, (path, body)
            status, _, body = http("POST", rp.url + path, b'{"name": "widget"}',
                                   headers={"Content-Type": "application/json"})
            assert status == 200, (path, body)
        status, _, body = http("POST", rp.url + "/lambda-url/url/some/path?q=1", b"binary\x00\xff",
                               headers={"Content-Type": "application/octet-stream"})
        assert status == 200, body
        sqs.send_message(QueueUrl=queue_url, MessageBody="job-1",
                         MessageAttributes={"kind": {"DataType": "String", "StringValue": "test"}})
        kinesis.put_record(StreamARN=stream_arn, Data=b"click-1", PartitionKey="k")
        ddb.put_item(TableName=table, Item={"pk": {"S": "row-1"}, "n": {"N": "10.50"}})
        ddb.update_item(TableName=table, Key={"pk": {"S": "row-1"}}, UpdateExpression="SET n = :n",
                        ExpressionAttributeValues={":n": {"N": "11"}})
        ddb.delete_item(TableName=table, Key={"pk": {"S": "row-1"}})

        wanted = {"v2", "v1", "alb", "url", "schedule", "sqs", "kinesis", "ddb"}

        def all_kinds() -> bool:
            seen = _seen(out)
            return wanted <= {s["kind"] for s in seen} or any("error" in s for s in seen)

        until_sync(all_kinds, "every kind of event parsed (or a parse error)", deadline=60)
        seen = _seen(out)
        errors = [s for s in seen if "error" in s]
        assert not errors, json.dumps(errors, indent=1)[:4000]
        assert wanted <= {s["kind"] for s in seen}
        assert next(s["data"] for s in seen if s["kind"] == "kinesis") == ["click-1"]
        assert next(s["bodies"] for s in seen if s["kind"] == "sqs") == ["job-1"]
        until_sync(lambda: sum(len(s["keys"]) for s in _seen(out) if s["kind"] == "ddb") >= 3,
                   "the table's three changes", deadline=30)
        assert rp.stop() == 0
    finally:
        for client in (sqs, kinesis, ddb):
            client.close()
