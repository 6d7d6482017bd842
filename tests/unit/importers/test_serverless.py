"""``router import serverless``: variables, provider defaults, each event type, destinations and the listing
of what was not imported, each checked on the config the router reads back."""

from __future__ import annotations

import sys
from pathlib import Path

from router.config import models as m
from tests.unit.importers.helpers import do_import, listed, load, route

PY = f"python{sys.version_info.major}.{sys.version_info.minor}"


def test_variables_and_provider_defaults(tmp_path: Path) -> None:
    text, err, status = do_import(tmp_path, "serverless", f"""\
service: shop
provider:
  name: aws
  runtime: {PY}
  stage: ${{opt:stage, 'beta'}}
  timeout: 20
  environment:
    TABLE: ${{self:service}}-${{sls:stage}}
    REGION: ${{aws:region}}
    TOKEN: ${{env:SHOP_TOKEN}}
    MODE: ${{env:SHOP_MODE, 'safe'}}
    FROM_CUSTOM: ${{self:custom.settings.level}}
    SECRET: ${{ssm:/shop/secret}}
custom:
  settings:
    level: ${{opt:level, 3}}
functions:
  orders:
    handler: handler.orders
    memorySize: 256
    environment:
      TABLE: override
""", name="serverless.yml")
    assert status == 0, err
    config = load(tmp_path, env={"SHOP_TOKEN": "t0k"})
    fn = config.functions["orders"]
    assert (fn.runtime, fn.handler, fn.memory, fn.timeout) == (PY, "handler.orders", 256, 20.0)
    assert fn.code == "."
    assert fn.environment == {"TABLE": "override", "REGION": "us-east-1", "TOKEN": "t0k", "MODE": "safe",
                              "FROM_CUSTOM": "3"}
    # ${env:...} is read when the router runs, never copied from the importing shell into the file
    assert "TOKEN: ${SHOP_TOKEN}" in text
    assert "MODE: ${SHOP_MODE:-safe}" in text
    assert "${ssm:/shop/secret} is resolved by the Serverless Framework" in listed(err)[13]


def test_framework_defaults_for_memory_and_timeout(tmp_path: Path) -> None:
    _, err, status = do_import(tmp_path, "serverless", f"""\
service: s
provider: {{name: aws, runtime: {PY}}}
functions:
  hello: {{handler: handler.hello}}
""", name="serverless.yml")
    assert status == 0, err
    fn = load(tmp_path).functions["hello"]
    assert (fn.memory, fn.timeout) == (1024, 6.0)  # the Serverless Framework's defaults, not Lambda's


def test_events_become_routes(tmp_path: Path) -> None:
    _, err, status = do_import(tmp_path, "serverless", f"""\
service: s
provider:
  name: aws
  runtime: {PY}
functions:
  api:
    handler: h.api
    events:
      - httpApi: 'GET /items/{{id}}'
      - httpApi: '*'
      - http:
          path: files/{{proxy+}}
          method: post
      - httpApi:
          method: delete
          path: /items/{{id}}
  work:
    handler: h.work
    events:
      - schedule: cron(0/2 * ? * MON-FRI *)
      - schedule:
          rate: [rate(2 hours), rate(3 hours)]
          input: {{job: sweep}}
      - sqs:
          arn: arn:aws:sqs:us-east-1:123456789012:jobs
          batchSize: 7
          functionResponseType: ReportBatchItemFailures
      - stream: arn:aws:dynamodb:us-east-1:123456789012:table/items/stream/2024-01-01T00:00:00.000
      - stream:
          type: kinesis
          arn: arn:aws:kinesis:us-east-1:123456789012:stream/clicks
          batchSize: 10
          startingPosition: TRIM_HORIZON
          tumblingWindowInSeconds: 60
      - rabbitmq:
          arn: arn:aws:mq:us-east-1:123456789012:broker:orders:b-1
          queue: orders
      - s3: uploads
""", name="serverless.yml")
    assert status == 0, err
    config = load(tmp_path)
    assert [(r.source.path, r.source.methods) for r in config.routes if r.function == "api"] == [
        ("/items/{id}", ["GET"]), ("/{proxy+}", ["ANY"]), ("/files/{proxy+}", ["POST"]),
        ("/items/{id}", ["DELETE"])]
    assert route(config, "work-schedule-0").source.cron == "0/2 * * * mon-fri"
    second = route(config, "work-schedule-1")
    assert second.source.rate == 7200.0
    assert second.input == {"job": "sweep"}
    sqs = route(config, "work-sqs-2").source
    assert isinstance(sqs, m.SqsSourceConfig)
    assert (sqs.queue_url, sqs.batch_size, sqs.report_batch_item_failures) == \
        ("https://sqs.us-east-1.amazonaws.com/123456789012/jobs", 7, True)
    assert isinstance(route(config, "work-stream-3").source, m.DynamodbStreamSourceConfig)
    kinesis = route(config, "work-stream-4").source
    assert isinstance(kinesis, m.KinesisSourceConfig)
    assert (kinesis.starting_position, kinesis.tumbling_window) == ("TRIM_HORIZON", 60)
    amqp = route(config, "work-rabbitmq-5").source
    assert isinstance(amqp, m.AmqpSourceConfig)
    assert amqp.queue == "orders"
    assert len(config.routes) == 10
    notes = listed(err)
    assert "catch-all '*'" in notes[10]
    assert 11 not in notes  # a REST API event is written as it is: payload v1
    assert [r.source.payload for r in config.routes if r.function == "api"] == ["v2", "v2", "v1", "v2"]
    assert "only the first of 2 rates" in notes[22]
    assert "set ORDERS_AMQP_URL" in notes[36]
    assert "s3 events are not supported by the router" in notes[38]


def test_a_second_route_on_the_same_path_and_method_is_listed(tmp_path: Path) -> None:
    _, err, status = do_import(tmp_path, "serverless", f"""\
service: s
provider: {{name: aws, runtime: {PY}}}
functions:
  one:
    handler: h.one
    events:
      - httpApi: 'GET /items'
  two:
    handler: h.two
    events:
      - httpApi: 'POST /items'
      - httpApi: 'GET /items'
""", name="serverless.yml")
    assert status == 0, err
    config = load(tmp_path)  # it validates: no two routes serve GET /items
    assert [(r.function, r.source.methods) for r in config.routes] == [("one", ["GET"]), ("two", ["POST"])]
    assert "two: GET /items is already served by route one-httpApi-0; route left out" in listed(err)[12]


def test_destinations_and_async_settings(tmp_path: Path) -> None:
    (tmp_path / "libs" / "shared").mkdir(parents=True)
    _, err, status = do_import(tmp_path, "serverless", f"""\
service: s
provider: {{name: aws, runtime: {PY}}}
functions:
  main:
    handler: h.main
    reservedConcurrency: 5
    provisionedConcurrency: 1
    maximumRetryAttempts: 1
    maximumEventAge: 300
    layers: [arn:aws:lambda:us-east-1:123456789012:layer:common:1, {{Ref: SharedLibsLambdaLayer}}]
    destinations:
      onSuccess: audit
      onFailure:
        type: sqs
        arn: arn:aws:sqs:us-east-1:123456789012:failed
  audit:
    handler: h.audit
    onError: arn:aws:sqs:us-east-1:123456789012:audit-dlq
    destinations:
      onFailure: arn:aws:sns:us-east-1:123456789012:alerts
layers:
  sharedLibs:
    path: libs/shared
""", name="serverless.yml")
    assert status == 0, err
    config = load(tmp_path)
    main = config.functions["main"]
    assert (main.concurrency, main.provisioned) == (5, 1)
    assert (main.async_.retries, main.async_.max_event_age) == (1, 300.0)
    assert isinstance(main.async_.on_success, m.FunctionDestinationConfig)
    assert main.async_.on_success.function == "audit"
    assert isinstance(main.async_.on_failure, m.SqsDestinationConfig)
    audit = config.functions["audit"].async_
    assert isinstance(audit.on_failure, m.SnsDestinationConfig)
    assert audit.on_failure.topic_arn == "arn:aws:sns:us-east-1:123456789012:alerts"
    assert audit.dead_letter is not None  # onError: the function's DeadLetterConfig
    assert audit.dead_letter.queue_url == "https://sqs.us-east-1.amazonaws.com/123456789012/audit-dlq"
    notes = listed(err)
    assert main.layers == [str(tmp_path / "libs" / "shared")]  # the service's own layer: written
    assert ("layers: arn:aws:lambda:us-east-1:123456789012:layer:common:1: not a layer of this service"
            in notes[10])
    assert "set FAILED_URL" in notes[15]
    assert "set AUDIT_DLQ_URL" in notes[18]
    assert 20 not in notes  # the SNS destination is imported as it is


def test_refuses_other_providers_and_sam_templates(tmp_path: Path) -> None:
    text = "service: s\nprovider: {name: google}\nfunctions: {}\n"
    _, err, status = do_import(tmp_path, "serverless", text, name="serverless.yml")
    assert status == 1
    assert "provider 'google': only provider aws" in err
    _, err, status = do_import(tmp_path, "sam", "service: s\nprovider: aws\n")
    assert status == 1
    assert "not a SAM or CloudFormation template" in err
    assert "router import serverless" in err
