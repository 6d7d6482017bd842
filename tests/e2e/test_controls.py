"""Pause and resume, and Lambda's control API, against a running router: boto3 and the AWS CLI (SigV4 with
``server.invoke_keys``), the admin API, ``router pause | resume | status``, /metrics, and a restart."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.router_process import RouterFactory, RouterProcess, http, metric_sample, router
from tests.unavailable import unavailable
from tests.waiting import until_sync

REGION = "us-east-1"
KEY_ID, SECRET = "AKIDROUTERTEST", "router-test-secret"


def _lambda(url: str) -> Any:
    return boto3.client("lambda", endpoint_url=url, region_name=REGION, aws_access_key_id=KEY_ID,
                        aws_secret_access_key=SECRET,
                        config=Config(retries={"mode": "standard", "total_max_attempts": 1}))


def _lines(path: Path) -> list[Any]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []



@pytest.fixture
def setup(router_factory: RouterFactory, tmp_path: Path, moto_server: str, sqs_client: Any) -> dict[str, Any]:
    out = tmp_path / "out"
    out.mkdir()
    queue_url = sqs_client.create_queue(QueueName=f"jobs-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    for name in ("record", "sink"):
        router_factory.write_function(name, f"""
            import json
            def handler(event, context):
                with open("{out / name}.jsonl", "a") as f:
                    f.write(json.dumps(event) + "\\n")
                return {{"statusCode": 200, "body": "ok"}}
        """)
    config = f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 5s, invoke_keys: {{{KEY_ID}: {SECRET}}}}}
        state: sqlite:///{tmp_path / 'state.db'}
        aws: {{region: {REGION}, endpoint_url: "{moto_server}", account_id: "123456789012"}}
        functions:
          record:
            runtime: python3.11
            handler: app.handler
            code: {tmp_path / 'functions' / 'record'}
            description: records SQS batches
          sink:
            runtime: python3.11
            handler: app.handler
            code: {tmp_path / 'functions' / 'sink'}
            async: {{retries: 1}}
        routes:
          - name: jobs
            source: {{type: sqs, queue_url: "{queue_url}", batch_size: 10, wait_time: 1s}}
            function: record
          - name: hook
            source: {{type: webhook, path: /hook}}
            function: sink
          - name: hook-async
            source: {{type: webhook, path: /hook-async}}
            function: sink
            invocation: async
          - name: tick
            source: {{type: schedule, rate: 1s}}
            function: sink
            input: {{"tick": true}}
    """
    return {"config": config, "out": out, "queue_url": queue_url}


@pytest.fixture
def running(router_factory: RouterFactory, setup: dict[str, Any]) -> Iterator[RouterProcess]:
    rp = router_factory(setup["config"])
    yield rp
    assert rp.stop() == 0


def _admin(rp: RouterProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return router(*args, "--config", str(rp.config_path), "--url", rp.url,
                  env={"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET})


def test_update_event_source_mapping_pauses_an_sqs_route(running: RouterProcess, setup: dict[str, Any],
                                                        sqs_client: Any) -> None:
    client = _lambda(running.url)
    mappings = client.list_event_source_mappings(FunctionName="record")["EventSourceMappings"]
    assert [m["State"] for m in mappings] == ["Enabled"]
    mapping = mappings[0]
    assert mapping["EventSourceArn"].startswith("arn:aws:sqs:us-east-1:")
    assert mapping["FunctionArn"] == "arn:aws:lambda:us-east-1:123456789012:function:record"
    assert mapping["BatchSize"] == 10
    # the keys of Lambda's SQS mapping: response types always, no ScalingConfig unless set, no
    # LastProcessingResult (a stream's), the mapping's own ARN
    assert mapping["FunctionResponseTypes"] == []
    assert "ScalingConfig" not in mapping
    assert "LastProcessingResult" not in mapping
    assert mapping["EventSourceMappingArn"] == (
        f"arn:aws:lambda:us-east-1:123456789012:event-source-mapping:{mapping['UUID']}")
    got = client.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    assert got["State"] == "Disabled"
    assert client.get_event_source_mapping(UUID=mapping["UUID"])["State"] == "Disabled"
    with pytest.raises(client.exceptions.InvalidParameterValueException,
                       match=r"\): BatchSize: route 'jobs': the config file owns it"):
        client.update_event_source_mapping(UUID=mapping["UUID"], BatchSize=5,
                                           MaximumBatchingWindowInSeconds=0)
    # the whole mapping sent back with its own values (as deployment tools send it) is no change
    same = client.update_event_source_mapping(
        UUID=mapping["UUID"], Enabled=False, BatchSize=10,
        MaximumBatchingWindowInSeconds=mapping["MaximumBatchingWindowInSeconds"],
        FunctionResponseTypes=mapping["FunctionResponseTypes"])
    assert same["State"] == "Disabled"
    assert same["BatchSize"] == 10
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_event_source_mapping(UUID=str(uuid.uuid4()))

    queue_url, record = setup["queue_url"], setup["out"] / "record.jsonl"
    sqs_client.send_message_batch(QueueUrl=queue_url, Entries=[
        {"Id": str(i), "MessageBody": f"m{i}"} for i in range(5)])
    # While disabled the messages stay on the queue: observed again and again over many polls.
    seen = []

    def stayed() -> bool:
        attrs = sqs_client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        waiting = (int(attrs["ApproximateNumberOfMessages"])
                   + int(attrs["ApproximateNumberOfMessagesNotVisible"]))
        assert waiting == 5, "a message was taken while the route was disabled"
        assert not record.exists(), "a batch ran while the route was disabled"
        seen.append(int(attrs["ApproximateNumberOfMessages"]))
        return len(seen) >= 20 and seen[-1] == 5  # in-flight long polls handed theirs back

    until_sync(stayed, "messages stay on the queue while the route is disabled", interval=0.25)
    assert metric_sample(running.url, 'router_route_enabled{route="jobs"}') == 0

    assert client.update_event_source_mapping(UUID=mapping["UUID"], Enabled=True)["State"] == "Enabled"
    until_sync(lambda: sum(len(e["Records"]) for e in _lines(record)) == 5, "the 5 messages delivered")
    assert metric_sample(running.url, 'router_route_enabled{route="jobs"}') == 1


def test_reserved_concurrency_zero_pauses_a_function(running: RouterProcess, setup: dict[str, Any]) -> None:
    client = _lambda(running.url)
    sink = setup["out"] / "sink.jsonl"
    # The schedule feeds sink too: pause it first, so only this test's events reach the function.
    assert _admin(running, "pause", "route", "tick").returncode == 0
    got = client.put_function_concurrency(FunctionName="sink", ReservedConcurrentExecutions=0)
    assert got["ReservedConcurrentExecutions"] == 0
    assert client.get_function_concurrency(FunctionName="sink")["ReservedConcurrentExecutions"] == 0
    assert client.get_function(FunctionName="sink")["Concurrency"] == {"ReservedConcurrentExecutions": 0}
    with pytest.raises(client.exceptions.TooManyRequestsException) as info:
        client.invoke(FunctionName="sink", Payload=b'{"sync": 1}')
    assert info.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    before = len(_lines(sink))
    for i in range(3):
        assert client.invoke(FunctionName="sink", InvocationType="Event",
                             Payload=json.dumps({"async": i}).encode())["StatusCode"] == 202

    def held() -> bool:  # the async events stay queued (observed over many polls)
        assert len(_lines(sink)) == before, "an async event ran while the function was paused"
        depth = metric_sample(running.url, 'router_async_queue_depth{function="sink"}')
        held.polls += 1  # type: ignore[attr-defined]
        return held.polls >= 12 and depth == 3  # type: ignore[attr-defined]

    held.polls = 0  # type: ignore[attr-defined]
    until_sync(held, "async events held while paused", interval=0.25)
    assert metric_sample(running.url, 'router_function_paused{function="sink"}') == 1
    assert metric_sample(running.url, 'router_paused_held_total{name="sink",what="sync_invoke"}') == 1

    client.delete_function_concurrency(FunctionName="sink")
    assert "ReservedConcurrentExecutions" not in client.get_function_concurrency(FunctionName="sink")
    until_sync(lambda: sorted(e.get("async", -1) for e in _lines(sink)[before:]) == [0, 1, 2],
               "the held async events run after delete_function_concurrency")
    assert client.invoke(FunctionName="sink", Payload=b'{"sync": 2}')["StatusCode"] == 200
    assert metric_sample(running.url, 'router_function_paused{function="sink"}') == 0


def test_concurrency_above_the_account_limit_is_refused(running: RouterProcess) -> None:
    client = _lambda(running.url)
    with pytest.raises(client.exceptions.InvalidParameterValueException,
                       match="UnreservedConcurrentExecution below its minimum value"):
        client.put_function_concurrency(FunctionName="sink", ReservedConcurrentExecutions=100000)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.put_function_concurrency(FunctionName="nope", ReservedConcurrentExecutions=1)


def test_functions_and_event_invoke_config(running: RouterProcess) -> None:
    client = _lambda(running.url)
    names = [f["FunctionName"] for f in client.list_functions()["Functions"]]
    assert names == ["record", "sink"]
    arn = "arn:aws:lambda:us-east-1:123456789012:function:record"
    conf = client.get_function_configuration(FunctionName=arn)
    assert conf["Runtime"] == "python3.11"
    assert conf["Handler"] == "app.handler"
    assert conf["Description"] == "records SQS batches"
    assert conf["State"] == "Active"
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function(FunctionName="nope")
    cfg = client.get_function_event_invoke_config(FunctionName="sink")
    assert (cfg["MaximumRetryAttempts"], cfg["MaximumEventAgeInSeconds"]) == (1, 21600)
    # no async block in the config and nothing put: Lambda's answer, there is none (its defaults apply)
    with pytest.raises(client.exceptions.ResourceNotFoundException,
                       match=f"The function {arn}:\\$LATEST doesn't have an EventInvokeConfig"):
        client.get_function_event_invoke_config(FunctionName="record")
    client.put_function_event_invoke_config(FunctionName="record", MaximumRetryAttempts=1)
    assert client.get_function_event_invoke_config(FunctionName="record")["MaximumRetryAttempts"] == 1
    cfg = client.put_function_event_invoke_config(FunctionName="sink", MaximumRetryAttempts=0,
                                                  MaximumEventAgeInSeconds=120)
    assert (cfg["MaximumRetryAttempts"], cfg["MaximumEventAgeInSeconds"]) == (0, 120)
    assert client.get_function_event_invoke_config(FunctionName="sink")["MaximumRetryAttempts"] == 0
    with pytest.raises(client.exceptions.InvalidParameterValueException, match="config file owns it"):
        client.put_function_event_invoke_config(FunctionName="sink", DestinationConfig={
            "OnFailure": {"Destination": "arn:aws:sqs:us-east-1:123456789012:dlq"}})
    # Put replaces: what is left out goes back to the config's value.
    cfg = client.put_function_event_invoke_config(FunctionName="sink", MaximumEventAgeInSeconds=60)
    assert (cfg["MaximumRetryAttempts"], cfg["MaximumEventAgeInSeconds"]) == (1, 60)


def test_unauthenticated_control_and_admin_requests_are_refused(running: RouterProcess) -> None:
    for method, path in (("GET", "/2015-03-31/functions/"), ("GET", "/admin/routes"),
                         ("POST", "/admin/routes/hook/pause")):
        status, _, body = http(method, running.url + path, body=b"" if method == "POST" else None)
        assert status == 403, (path, body)


def test_paused_webhook_and_schedule_then_cli_status_and_restart(
        router_factory: RouterFactory, running: RouterProcess, setup: dict[str, Any]) -> None:
    rp = running
    result = _admin(rp, "pause", "route", "hook")
    assert result.returncode == 0, result.stderr
    assert "hook" in result.stdout
    assert "paused" in result.stdout
    status, headers, body = http("POST", rp.url + "/hook", body=b"{}")
    assert status == 503, body
    assert headers["retry-after"] == "30"
    assert b"paused" in body
    assert metric_sample(rp.url, 'router_paused_held_total{name="hook",what="webhook_request"}') == 1

    assert _admin(rp, "pause", "route", "tick").returncode == 0
    held = 'router_paused_held_total{name="tick",what="schedule_tick"}'
    until_sync(lambda: (metric_sample(rp.url, held) or 0) >= 2,
               "schedule ticks skipped and counted")
    assert _admin(rp, "pause", "function", "record").returncode == 0

    result = _admin(rp, "status")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "paused" in lines["hook"]
    assert "paused" in lines["tick"]
    assert "enabled" in lines["jobs"]
    assert "paused" in lines["record"]
    assert "enabled" in lines["sink"]
    unknown = _admin(rp, "pause", "route", "nope")
    assert unknown.returncode == 1
    assert "route 'nope': no such route" in unknown.stderr

    # The state survives a restart (kept in the SQLite state store), and so do the event source
    # mappings' UUIDs: a script that noted one goes on using it.
    uuids = [m["UUID"] for m in _lambda(rp.url).list_event_source_mappings()["EventSourceMappings"]]
    assert len(uuids) == 1
    assert rp.stop() == 0
    rp.start()
    client = _lambda(rp.url)
    assert [m["UUID"] for m in client.list_event_source_mappings()["EventSourceMappings"]] == uuids
    assert client.get_event_source_mapping(UUID=uuids[0])["FunctionArn"].endswith(":function:record")
    status, headers, _ = http("POST", rp.url + "/hook", body=b"{}")
    assert status == 503
    routes = {r["name"]: r for r in json.loads(_admin(rp, "status", "--json").stdout)["routes"]}
    assert routes["tick"]["state"] == "paused"
    assert routes["jobs"]["state"] == "enabled"
    assert routes["jobs"]["uuid"] == uuids[0]
    assert metric_sample(rp.url, 'router_function_paused{function="record"}') == 1

    assert _admin(rp, "resume", "route", "hook").returncode == 0
    assert _admin(rp, "resume", "function", "record").returncode == 0
    status, _, _ = http("POST", rp.url + "/hook", body=b'{"after": "resume"}')
    assert status == 200
    assert metric_sample(rp.url, 'router_function_paused{function="record"}') == 0


def _aws_cli() -> str:
    """The venv's AWS CLI (the version pyproject.toml pins), else the one on PATH."""
    venv = Path(sys.executable).with_name("aws")
    if venv.exists():
        return str(venv)
    found = shutil.which("aws")
    if found is None:
        unavailable("the AWS CLI (aws) is not installed; pip install -e '.[test]'")
    return found


def test_aws_cli_against_the_router(running: RouterProcess, setup: dict[str, Any], tmp_path: Path) -> None:
    aws = _aws_cli()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
           "AWS_MAX_ATTEMPTS": "1"}  # a throttle is the answer, not something to retry

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([aws, "lambda", *args, "--endpoint-url", running.url, "--output", "json"],
                              capture_output=True, text=True, env=env, timeout=60)

    def cli(*args: str) -> Any:
        done = run(*args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if done.stdout.strip() else None

    assert [f["FunctionName"] for f in cli("list-functions")["Functions"]] == ["record", "sink"]
    assert cli("get-function-configuration", "--function-name", "sink")["Handler"] == "app.handler"
    mapping = cli("list-event-source-mappings", "--function-name", "record")["EventSourceMappings"][0]
    disabled = cli("update-event-source-mapping", "--uuid", mapping["UUID"], "--no-enabled")
    assert disabled["State"] == "Disabled"
    assert cli("get-event-source-mapping", "--uuid", mapping["UUID"])["State"] == "Disabled"
    assert cli("update-event-source-mapping", "--uuid", mapping["UUID"], "--enabled")["State"] == "Enabled"

    arn = "arn:aws:lambda:us-east-1:123456789012:function:sink"
    cfg = cli("get-function-event-invoke-config", "--function-name", "sink")
    assert cfg["FunctionArn"] == arn
    assert (cfg["MaximumRetryAttempts"], cfg["MaximumEventAgeInSeconds"]) == (1, 21600)
    cfg = cli("put-function-event-invoke-config", "--function-name", "sink", "--maximum-retry-attempts", "0",
              "--maximum-event-age-in-seconds", "120")
    assert (cfg["FunctionArn"], cfg["MaximumRetryAttempts"], cfg["MaximumEventAgeInSeconds"]) == (arn, 0, 120)
    cfg = cli("get-function-event-invoke-config", "--function-name", "sink")
    assert (cfg["MaximumRetryAttempts"], cfg["MaximumEventAgeInSeconds"]) == (0, 120)

    # Reserved concurrency 0 pauses sink. The schedule feeds sink too: pause it first, so only this test's
    # calls reach the function (and are counted as held).
    assert _admin(running, "pause", "route", "tick").returncode == 0
    got = cli("put-function-concurrency", "--function-name", "sink", "--reserved-concurrent-executions", "0")
    assert got == {"ReservedConcurrentExecutions": 0}
    assert cli("get-function-concurrency", "--function-name", "sink") == {"ReservedConcurrentExecutions": 0}
    function = cli("get-function", "--function-name", "sink")
    assert function["Configuration"]["FunctionArn"] == arn
    assert function["Concurrency"] == {"ReservedConcurrentExecutions": 0}

    response = str(tmp_path / "response.json")
    throttled = run("invoke", "--function-name", "sink", "--payload", '{"sync": 1}', response)
    assert throttled.returncode != 0
    assert "(TooManyRequestsException)" in throttled.stderr
    with pytest.raises(ClientError) as info:
        _lambda(running.url).invoke(FunctionName="sink", Payload=b'{"sync": 2}')
    assert info.value.response["Error"]["Code"] == "TooManyRequestsException"
    assert info.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    # A sync webhook route answers Lambda's throttle as API Gateway's HTTP API maps it (payload v2: 429).
    status, _, body = http("POST", running.url + "/hook", body=b'{"sync": 3}')
    assert (status, json.loads(body)) == (429, {"message": "Too Many Requests"})
    assert metric_sample(running.url, 'router_paused_held_total{name="sink",what="sync_invoke"}') == 3

    # An async webhook route's event is accepted and held until the function resumes.
    sink = setup["out"] / "sink.jsonl"
    held_body = '{"held": "async webhook"}'
    status, _, body = http("POST", running.url + "/hook-async", body=held_body.encode())
    assert status == 202, body

    def ran() -> bool:
        return any(e.get("body") == held_body for e in _lines(sink))

    depths: list[float | None] = []

    def held() -> bool:  # observed over many polls
        assert not ran(), "the async webhook's event ran while the function was paused"
        depths.append(metric_sample(running.url, 'router_async_queue_depth{function="sink"}'))
        return len(depths) >= 12 and depths[-1] == 1

    until_sync(held, "the async webhook's event held while paused", interval=0.25)

    assert cli("delete-function-concurrency", "--function-name", "sink") is None
    assert not cli("get-function-concurrency", "--function-name", "sink")  # {}: none reserved
    assert "Concurrency" not in cli("get-function", "--function-name", "sink")
    until_sync(ran, "the held async webhook event runs after delete-function-concurrency")
    assert cli("invoke", "--function-name", "sink", "--payload", '{"sync": 4}', response)["StatusCode"] == 200
    status, _, body = http("POST", running.url + "/hook", body=b'{"sync": 5}')
    assert (status, body) == (200, b"ok")
