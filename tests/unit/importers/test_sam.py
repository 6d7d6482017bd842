"""``router import sam``: intrinsics, Globals, each event type, async config and the listing of what was
not imported, each checked on the config the router reads back."""

from __future__ import annotations

import sys
from pathlib import Path

from router.config import models as m
from tests.unit.importers.helpers import do_import, listed, load, route

PY = f"python{sys.version_info.major}.{sys.version_info.minor}"
HEAD = """\
AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
"""


def test_intrinsics_ref_sub_getatt_join_and_pseudo_parameters(tmp_path: Path) -> None:
    text, err, status = do_import(tmp_path, "sam", HEAD + f"""\
Parameters:
  Stage:
    Type: String
    Default: prod
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: {PY}
      Handler: app.handler
      CodeUri: src/
      Environment:
        Variables:
          STAGE: !Ref Stage
          LONG: !Sub '${{AWS::StackName}}-${{Stage}}-${{AWS::Region}}'
          LISTED: !Sub ['${{Name}}.${{Stage}}', {{Name: orders}}]
          LITERAL: !Sub 'keep ${{!Literal}}'
          QUEUE: !GetAtt Jobs.Arn
          URL: !Ref Jobs
          JOINED: !Join ['-', [a, !Ref Stage, c]]
          LONGFORM: {{"Fn::Sub": "${{Stage}}!"}}
          CONDITIONAL: !If [IsProd, a, b]
  Jobs:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: jobs
""")
    assert status == 0, err
    env = load(tmp_path).functions["Fn"].environment
    assert env["STAGE"] == "prod"
    assert env["LONG"] == "template-prod-us-east-1"
    assert env["LISTED"] == "orders.prod"
    assert env["LITERAL"] == "keep ${Literal}"  # written as $${Literal}: not the router's interpolation
    assert env["QUEUE"] == "arn:aws:sqs:us-east-1:000000000000:jobs"
    assert env["URL"] == "https://sqs.us-east-1.amazonaws.com/000000000000/jobs"
    assert env["JOINED"] == "a-prod-c"
    assert env["LONGFORM"] == "prod!"
    assert "CONDITIONAL" not in env
    assert "Fn::If is evaluated by CloudFormation" in listed(err)[24]
    assert "#   template.yaml:24: Fn environment CONDITIONAL: not imported" in text


def test_globals_apply_and_the_function_wins(tmp_path: Path) -> None:
    _, err, status = do_import(tmp_path, "sam", HEAD + f"""\
Globals:
  Function:
    Runtime: {PY}
    Timeout: 30
    Layers: [arn:aws:lambda:us-east-1:123456789012:layer:common:1]
    MemorySize: 512
    Environment:
      Variables:
        A: global
        B: global
Resources:
  One:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.one
      CodeUri: src
      Timeout: 10
      ReservedConcurrentExecutions: 3
      ProvisionedConcurrencyConfig:
        ProvisionedConcurrentExecutions: 2
      Environment:
        Variables:
          B: mine
""")
    assert status == 0, err
    fn = load(tmp_path).functions["One"]
    assert (fn.runtime, fn.handler, fn.timeout, fn.memory) == (PY, "app.one", 10.0, 512)
    assert (fn.concurrency, fn.provisioned) == (3, 2)
    assert fn.environment == {"A": "global", "B": "mine"}
    assert fn.code == "src"
    assert fn.layers == []
    assert ("One: Layers: arn:aws:lambda:us-east-1:123456789012:layer:common:1: not a directory of this "
            "template" in listed(err)[7])  # the line in Globals


def test_http_events_become_webhook_routes(tmp_path: Path) -> None:
    _, err, status = do_import(tmp_path, "sam", HEAD + f"""\
Resources:
  Api:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: {PY}
      Handler: app.handler
      CodeUri: src
      Events:
        Item:
          Type: HttpApi
          Properties:
            Path: /items/{{id}}
            Method: get
        Proxy:
          Type: Api
          Properties:
            Path: /files/{{proxy+}}
            Method: any
        Default:
          Type: HttpApi
        Old:
          Type: HttpApi
          Properties:
            Path: /old
            Method: get
            PayloadFormatVersion: "1.0"
""")
    assert status == 0, err
    config = load(tmp_path)
    item = route(config, "Api-Item").source
    assert isinstance(item, m.WebhookSourceConfig)
    assert (item.path, item.methods) == ("/items/{id}", ["GET"])
    assert item.payload == "v2"
    proxy = route(config, "Api-Proxy").source
    assert (proxy.path, proxy.methods, proxy.payload) == ("/files/{proxy+}", ["ANY"], "v1")  # REST API
    assert route(config, "Api-Old").source.payload == "v1"
    assert (route(config, "Api-Default").source.path, route(config, "Api-Default").invocation_type) == \
        ("/{proxy+}", "sync")
    notes = listed(err)
    assert 17 not in notes  # a REST API event is written as it is: payload v1
    assert "catch-all $default" in notes[22]
    assert "HTTP API payload 1.0 is written as payload: v1" in notes[24]


def test_schedules_rate_cron_and_v2_with_time_zone(tmp_path: Path) -> None:
    _, err, status = do_import(tmp_path, "sam", HEAD + f"""\
Resources:
  Tick:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: {PY}
      Handler: app.handler
      CodeUri: src
      Events:
        Rate:
          Type: Schedule
          Properties:
            Schedule: rate(5 minutes)
            Input: '{{"job": "sweep"}}'
        Weekdays:
          Type: Schedule
          Properties:
            Schedule: cron(15 10 ? * 2-6 *)
        Berlin:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: cron(0 8 1 * ? *)
            ScheduleExpressionTimezone: Europe/Berlin
        Last:
          Type: Schedule
          Properties:
            Schedule: cron(0 8 L * ? *)
        Off:
          Type: Schedule
          Properties:
            Schedule: rate(1 hour)
            Enabled: false
""")
    assert status == 0, err
    config = load(tmp_path)
    rate = route(config, "Tick-Rate")
    assert rate.source.rate == 300.0
    assert rate.input == {"job": "sweep"}
    assert route(config, "Tick-Weekdays").source.cron == "15 10 * * 1-5"  # EventBridge MON-FRI is 2-6
    berlin = route(config, "Tick-Berlin").source
    assert (berlin.cron, berlin.timezone) == ("0 8 1 * *", "Europe/Berlin")
    assert [r.name for r in config.routes] == ["Tick-Rate", "Tick-Weekdays", "Tick-Berlin"]
    notes = listed(err)
    assert "L, W and # in day fields are not supported" in notes[28]
    assert "disabled in the template" in notes[30]


def test_queue_stream_and_broker_events(tmp_path: Path) -> None:
    _, err, status = do_import(tmp_path, "sam", HEAD + f"""\
Resources:
  Worker:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: {PY}
      Handler: app.handler
      CodeUri: src
      Events:
        Jobs:
          Type: SQS
          Properties:
            Queue: arn:aws:sqs:eu-west-1:123456789012:jobs
            BatchSize: 5
            MaximumBatchingWindowInSeconds: 2
            FunctionResponseTypes: [ReportBatchItemFailures]
            ScalingConfig: {{MaximumConcurrency: 4}}
            FilterCriteria:
              Filters:
                - Pattern: '{{"body": {{"kind": ["order"]}}}}'
        Clicks:
          Type: Kinesis
          Properties:
            Stream: !GetAtt Clicks.Arn
            StartingPosition: LATEST
            BatchSize: 50
            DestinationConfig:
              OnFailure:
                Type: SQS
                Destination: arn:aws:sqs:eu-west-1:123456789012:dlq
        Changes:
          Type: DynamoDB
          Properties:
            Stream: !GetAtt Table.StreamArn
            StartingPosition: TRIM_HORIZON
            TumblingWindowInSeconds: 30
        Orders:
          Type: MQ
          Properties:
            Broker: arn:aws:mq:us-east-1:123456789012:broker:orders:b-1
            Queues: [orders]
            BatchSize: 20
        Uploads:
          Type: S3
          Properties:
            Bucket: !Ref Bucket
  Clicks:
    Type: AWS::Kinesis::Stream
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: items
""")
    assert status == 0, err
    config = load(tmp_path, env={"CLICKS_STREAM_ARN": "arn:aws:kinesis:eu-west-1:123456789012:stream/c"})
    jobs = route(config, "Worker-Jobs")
    assert isinstance(jobs.source, m.SqsSourceConfig)
    assert jobs.source.queue_url == "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs"
    assert (jobs.source.batch_size, jobs.source.batch_window, jobs.source.max_concurrency) == (5, 2.0, 4)
    assert jobs.source.report_batch_item_failures is True
    assert jobs.filters == [{"body": {"kind": ["order"]}}]
    clicks = route(config, "Worker-Clicks").source
    assert isinstance(clicks, m.KinesisSourceConfig)
    assert clicks.stream_arn == "arn:aws:kinesis:eu-west-1:123456789012:stream/c"  # the placeholder, filled
    assert clicks.batch_size == 50
    assert clicks.starting_position == "LATEST"
    assert isinstance(clicks.on_failure, m.SqsDestinationConfig)
    changes = route(config, "Worker-Changes").source
    assert isinstance(changes, m.DynamodbStreamSourceConfig)
    assert changes.stream_arn == "arn:aws:dynamodb:us-east-1:000000000000:table/items/stream/imported"
    assert changes.tumbling_window == 30
    orders = route(config, "Worker-Orders").source
    assert isinstance(orders, m.AmqpSourceConfig)
    assert (orders.url, orders.queue, orders.batch_size, orders.declare) == \
        ("amqp://guest:guest@localhost:5672/", "orders", 20, False)
    assert [r.name for r in config.routes] == [
        "Worker-Jobs", "Worker-Clicks", "Worker-Changes", "Worker-Orders"]
    notes = listed(err)
    assert "set ORDERS_AMQP_URL to the RabbitMQ broker's amqp:// URL" in notes[41]
    assert "S3 events are not supported by the router" in notes[45]
    assert not any("TumblingWindowInSeconds" in note for note in notes.values())
    assert "set CLICKS_STREAM_ARN to its stream ARN" in notes[25]


def test_async_config_and_destinations(tmp_path: Path) -> None:
    (tmp_path / "layers" / "common").mkdir(parents=True)
    text, err, status = do_import(tmp_path, "sam", HEAD + f"""\
Resources:
  Main:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: {PY}
      Handler: app.handler
      CodeUri: src
      Layers: [!Ref Common]
      EventInvokeConfig:
        MaximumRetryAttempts: 0
        MaximumEventAgeInSeconds: 120
        DestinationConfig:
          OnSuccess:
            Type: Lambda
            Destination: !GetAtt Audit.Arn
          OnFailure:
            Type: SQS
            Destination: !GetAtt Failed.Arn
  Audit:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: audit-log
      Runtime: {PY}
      Handler: app.audit
      CodeUri: src
  Failed:
    Type: AWS::SQS::Queue
  Common:
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: layers/common/
""")
    assert status == 0, err
    config = load(tmp_path)
    main = config.functions["Main"].async_
    assert (main.retries, main.max_event_age) == (0, 120.0)
    assert isinstance(main.on_success, m.FunctionDestinationConfig)
    assert main.on_success.function == "audit-log"
    assert isinstance(main.on_failure, m.SqsDestinationConfig)
    assert main.on_failure.queue_url == "https://sqs.us-east-1.amazonaws.com/000000000000/Failed"
    assert "queue_url: ${FAILED_URL:-https://sqs.us-east-1.amazonaws.com/000000000000/Failed}" in text
    notes = listed(err)
    assert config.functions["Main"].layers == [str(tmp_path / "layers" / "common")]  # local: written
    assert 10 not in notes
    assert "set FAILED_URL" in notes[20]
    assert "AWS::Serverless::LayerVersion" in notes[31]


def test_functions_left_out_take_their_routes_and_destinations(tmp_path: Path) -> None:
    _, err, status = do_import(tmp_path, "sam", HEAD + f"""\
Resources:
  Inline:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: {PY}
      Handler: index.handler
      InlineCode: "def handler(e, c): return 1"
      Events:
        Tick:
          Type: Schedule
          Properties: {{Schedule: rate(1 day)}}
  Java:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: java21
      Handler: a.B::handle
      CodeUri: src
""")
    assert status == 0, err
    config = load(tmp_path)
    assert config.functions == {}
    assert config.routes == []
    notes = listed(err)
    assert "InlineCode" in notes[9]
    assert "runtime java21: not supported by the router" in notes[17]


def test_sns_and_eventbridge_destinations_and_dead_letter_queues(tmp_path: Path) -> None:
    """SAM's DeadLetterQueue (and AWS::Lambda::Function's DeadLetterConfig) becomes async.dead_letter; SNS
    and EventBridge destinations their router kinds; a topic the template creates a placeholder to set."""
    text, err, status = do_import(tmp_path, "sam", HEAD + f"""\
Resources:
  Main:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: {PY}
      Handler: app.handler
      CodeUri: src
      DeadLetterQueue:
        Type: SQS
        TargetArn: arn:aws:sqs:eu-west-1:123456789012:main-dlq
      EventInvokeConfig:
        DestinationConfig:
          OnFailure:
            Type: SNS
            Destination: !Ref Alerts
          OnSuccess:
            Type: EventBridge
            Destination: arn:aws:events:eu-west-1:123456789012:event-bus/results
  Plain:
    Type: AWS::Lambda::Function
    Properties:
      Runtime: {PY}
      Handler: app.handler
      Code: src
      DeadLetterConfig:
        TargetArn: arn:aws:sns:eu-west-1:123456789012:plain-dlq
  Alerts:
    Type: AWS::SNS::Topic
""")
    assert status == 0, err
    config = load(tmp_path)
    main = config.functions["Main"].async_
    assert main.dead_letter is not None
    assert main.dead_letter.queue_url == "https://sqs.eu-west-1.amazonaws.com/123456789012/main-dlq"
    assert isinstance(main.on_failure, m.SnsDestinationConfig)
    assert main.on_failure.topic_arn == "arn:aws:sns:us-east-1:000000000000:Alerts"
    assert "topic_arn: ${ALERTS_TOPIC_ARN:-arn:aws:sns:us-east-1:000000000000:Alerts}" in text
    assert any("set ALERTS_TOPIC_ARN" in note for note in listed(err).values())
    assert isinstance(main.on_success, m.EventBridgeDestinationConfig)
    assert main.on_success.event_bus_arn == "arn:aws:events:eu-west-1:123456789012:event-bus/results"
    plain = config.functions["Plain"].async_.dead_letter
    assert plain is not None
    assert plain.topic_arn == "arn:aws:sns:eu-west-1:123456789012:plain-dlq"
    assert "set MAIN_DLQ_URL to its URL" in err  # a queue: its URL to set, as for any queue
    assert "no router equivalent" not in err  # the dead-letter keys are imported, not left out


def test_s3_on_failure_destinations(tmp_path: Path) -> None:
    """Lambda's S3 destination (on failure, for async events and stream mappings) becomes an s3
    destination; a bucket the template creates a placeholder to set."""
    text, err, status = do_import(tmp_path, "sam", HEAD + f"""\
Resources:
  Main:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: {PY}
      Handler: app.handler
      CodeUri: src
      EventInvokeConfig:
        DestinationConfig:
          OnFailure:
            Type: S3
            Destination: arn:aws:s3:::main-failures
      Events:
        Clicks:
          Type: Kinesis
          Properties:
            Stream: arn:aws:kinesis:eu-west-1:123456789012:stream/clicks
            StartingPosition: LATEST
            DestinationConfig:
              OnFailure:
                Type: S3
                Destination: !GetAtt Failures.Arn
  Failures:
    Type: AWS::S3::Bucket
""")
    assert status == 0, err
    config = load(tmp_path)
    main = config.functions["Main"].async_
    assert isinstance(main.on_failure, m.S3DestinationConfig)
    assert main.on_failure.bucket_arn == "arn:aws:s3:::main-failures"
    clicks = route(config, "Main-Clicks").source
    assert isinstance(clicks, m.KinesisSourceConfig)
    assert isinstance(clicks.on_failure, m.S3DestinationConfig)
    assert clicks.on_failure.bucket_arn == "arn:aws:s3:::failures"
    assert "bucket_arn: ${FAILURES_BUCKET_ARN:-arn:aws:s3:::failures}" in text
    assert any("set FAILURES_BUCKET_ARN" in note for note in listed(err).values())
