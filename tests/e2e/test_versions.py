"""Versions and aliases against a running router, on SQLite and PostgreSQL: `router publish` and boto3's
PublishVersion, invoking by Qualifier, qualified name and alias (weighted), X-Amz-Executed-Version, the
qualified ARN and version the handler sees, START lines, a code change after publish, the control
operations (ListVersionsByFunction, GetFunction?Qualifier, GetAlias, ListAliases), missing qualifiers,
a route naming an alias, a restart, the AWS CLI, and an alias naming an unpublished version at start."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.fault import conftest as fault
from tests.router_process import RouterFactory, RouterProcess, http, metric_sample, router
from tests.unavailable import unavailable
from tests.waiting import until_sync

pg_database = fault.pg_database  # a database of the test's own, dropped afterwards

REGION = "us-east-1"
ACCOUNT = "123456789012"
KEY_ID, SECRET = "AKIDROUTERTEST", "router-test-secret"
ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:greet"

HANDLER = """
    import os
    def handler(event, context):
        return {{"code": "{tag}", "version": context.function_version, "arn": context.invoked_function_arn,
                "env": os.environ["AWS_LAMBDA_FUNCTION_VERSION"]}}
"""


def _config(tmp_path: Path, state: str, aliases: str = "", route: str = "greet") -> str:
    return f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 5s, invoke_keys: {{{KEY_ID}: {SECRET}}}}}
        state: "{state}"
        aws: {{region: {REGION}, account_id: "{ACCOUNT}"}}
        functions:
          greet:
            runtime: python3.11
            handler: app.handler
            code: {tmp_path / 'functions' / 'greet'}
            async: {{on_success: {{type: file, path: {tmp_path / 'success.jsonl'}}}}}
            {aliases}
        routes:
          - {{name: hook, source: {{type: webhook, path: /hook}}, function: "{route}"}}
    """


def _lambda(url: str) -> Any:
    return boto3.client("lambda", endpoint_url=url, region_name=REGION, aws_access_key_id=KEY_ID,
                        aws_secret_access_key=SECRET,
                        config=Config(retries={"mode": "standard", "total_max_attempts": 1}))


def _invoke(client: Any, **kw: Any) -> tuple[str, dict[str, Any]]:
    answer = client.invoke(**kw)
    return answer["ExecutedVersion"], json.loads(answer["Payload"].read())


def _admin(rp: RouterProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return router(*args, "--config", str(rp.config_path), "--url", rp.url,
                  env={"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET})



@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(f"sqlite:///{tmp_path / 'state.db'}" if request.param == "sqlite"
               else request.getfixturevalue("pg_database"))


def test_publish_invoke_by_qualifier_and_alias(router_factory: RouterFactory, tmp_path: Path,
                                               state: str) -> None:
    router_factory.write_function("greet", HANDLER.format(tag="one"))
    rp = router_factory(_config(tmp_path, state))
    client = _lambda(rp.url)

    done = _admin(rp, "publish", "greet", "--description", "first")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("function greet: version 1 (CodeSha256 ")
    again = client.publish_version(FunctionName="greet")  # nothing changed: the latest version again
    assert (again["Version"], again["Description"]) == ("1", "first")
    assert again["FunctionArn"] == f"{ARN}:1"

    router_factory.write_function("greet", HANDLER.format(tag="two"))  # the code changes after publish
    second = client.publish_version(FunctionName="greet", Description="second")
    assert second["Version"] == "2"
    assert second["CodeSha256"] != again["CodeSha256"]

    assert _invoke(client, FunctionName="greet", Qualifier="1") == (
        "1", {"code": "one", "version": "1", "arn": f"{ARN}:1", "env": "1"})
    assert _invoke(client, FunctionName="greet:2") == (
        "2", {"code": "two", "version": "2", "arn": f"{ARN}:2", "env": "2"})
    assert _invoke(client, FunctionName=f"{ARN}:1")[1]["code"] == "one"
    # InvokeWithResponseStream takes the qualifier too (a buffered function: one PayloadChunk)
    streamed = client.invoke_with_response_stream(FunctionName="greet", Qualifier="1")
    assert streamed["ExecutedVersion"] == "1"
    chunks = [e["PayloadChunk"]["Payload"] for e in streamed["EventStream"] if "PayloadChunk" in e]
    assert json.loads(b"".join(chunks))["code"] == "one"
    with pytest.raises(client.exceptions.ResourceNotFoundException, match=f"Function not found: {ARN}:9"):
        client.invoke_with_response_stream(FunctionName="greet:9")
    assert _invoke(client, FunctionName="greet") == (
        "$LATEST", {"code": "two", "version": "$LATEST", "arn": ARN, "env": "$LATEST"})
    status, _, _ = http("POST", rp.url + "/hook", b"{}")
    assert status == 200

    with pytest.raises(client.exceptions.ResourceNotFoundException, match=f"Function not found: {ARN}:7"):
        client.invoke(FunctionName="greet", Qualifier="7")
    with pytest.raises(client.exceptions.ResourceNotFoundException, match=f"Function not found: {ARN}:prod"):
        client.invoke(FunctionName="greet:prod")
    with pytest.raises(client.exceptions.InvalidParameterValueException, match="derived qualifier"):
        client.invoke(FunctionName="greet:1", Qualifier="2")
    with pytest.raises(client.exceptions.ResourceNotFoundException, match=f"Function not found: {ARN}:8"):
        client.invoke(FunctionName="greet", Qualifier="8", InvocationType="Event")
    # An async event keeps its qualifier: version 1 runs it, and the destination record names it.
    assert client.invoke(FunctionName="greet", Qualifier="1", InvocationType="Event")["StatusCode"] == 202
    success = tmp_path / "success.jsonl"
    until_sync(lambda: success.exists() and success.read_text().strip(), "the on_success record", deadline=30)
    record = json.loads(success.read_text().splitlines()[0])
    assert record["requestContext"]["functionArn"] == f"{ARN}:1"
    assert record["responseContext"]["executedVersion"] == "1"
    assert record["responsePayload"] == {"code": "one", "version": "1", "arn": f"{ARN}:1", "env": "1"}

    versions = client.list_versions_by_function(FunctionName="greet")["Versions"]
    assert [(v["Version"], v["Description"]) for v in versions] == [
        ("$LATEST", ""), ("1", "first"), ("2", "second")]
    got = client.get_function(FunctionName="greet", Qualifier="1")["Configuration"]
    assert (got["Version"], got["FunctionArn"], got["CodeSha256"]) == ("1", f"{ARN}:1", again["CodeSha256"])
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function_configuration(FunctionName="greet:9")

    until_sync(lambda: "Version: 1" in rp.logs() and "Version: 2" in rp.logs(), "START lines naming versions",
               deadline=10)
    starts = [r["message"] for r in rp.log_records() if str(r.get("message", "")).startswith("START ")]
    assert any(m.endswith("Version: 1") for m in starts)
    assert any(m.endswith("Version: $LATEST") for m in starts)
    assert rp.stop() == 0

    # Restart with aliases (they name versions the store now holds) and a route naming one.
    rp = router_factory(_config(tmp_path, state, route="greet:prod", aliases=(
        "aliases: {prod: {version: 1, description: stable}, live: {version: 1, weights: {2: 0.5}}}")))
    client = _lambda(rp.url)
    assert _invoke(client, FunctionName="greet", Qualifier="prod") == (
        "1", {"code": "one", "version": "1", "arn": f"{ARN}:prod", "env": "1"})
    status, _headers, body = http("POST", rp.url + "/hook", b"{}")
    assert status == 200
    assert json.loads(body)["code"] == "one"
    seen = {_invoke(client, FunctionName="greet:live")[0] for _ in range(40)}
    assert seen == {"1", "2"}  # both sides of a 50% split in 40 draws: a miss has odds 2 * 0.5**40

    alias = client.get_alias(FunctionName="greet", Name="live")
    assert (alias["AliasArn"], alias["FunctionVersion"]) == (f"{ARN}:live", "1")
    assert alias["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.5}}
    aliases = client.list_aliases(FunctionName="greet")["Aliases"]
    assert [(a["Name"], a["Description"]) for a in aliases] == [("live", ""), ("prod", "stable")]
    with pytest.raises(client.exceptions.ResourceNotFoundException, match=f"Alias not found: {ARN}:beta"):
        client.get_alias(FunctionName="greet", Name="beta")
    assert client.get_function(FunctionName="greet", Qualifier="prod")["Configuration"]["Version"] == "1"

    ran = metric_sample(
        rp.url, 'router_version_invocations_total{function="greet",outcome="success",version="1"}')
    assert ran is not None
    assert ran >= 2

    # A reload whose alias names a version never published is refused; the running aliases stay.
    rp.config_path.write_text(rp.config_path.read_text().replace("weights: {2: 0.5}", "weights: {9: 0.5}"))
    done = _admin(rp, "reload")
    assert done.returncode != 0
    assert "functions.greet.aliases.live: version 9 is not published (published: 1, 2)" in (
        done.stdout + done.stderr)
    assert client.get_alias(FunctionName="greet", Name="live")["RoutingConfig"] == {
        "AdditionalVersionWeights": {"2": 0.5}}
    assert rp.stop() == 0


def test_an_alias_naming_an_unpublished_version_stops_the_start(router_factory: RouterFactory,
                                                                 tmp_path: Path) -> None:
    router_factory.write_function("greet", HANDLER.format(tag="one"))
    rp = router_factory(_config(tmp_path, f"sqlite:///{tmp_path / 'state.db'}",
                                aliases="aliases: {prod: {version: 3}}"), start=False)
    done = router("run", "--config", str(rp.config_path))
    assert done.returncode != 0
    assert ("functions.greet.aliases.prod: version 3 is not published (published: none); run "
            "'router publish greet'") in done.stderr


def test_aws_cli_publishes_and_invokes_a_version(router_factory: RouterFactory, tmp_path: Path) -> None:
    aws = shutil.which("aws") or str(Path(sys.executable).with_name("aws"))
    if not Path(aws).exists():
        unavailable("the AWS CLI (aws) is not installed; pip install awscli")
    router_factory.write_function("greet", HANDLER.format(tag="one"))
    rp = router_factory(_config(tmp_path, f"sqlite:///{tmp_path / 'state.db'}"))
    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}

    def cli(*args: str) -> Any:
        done = subprocess.run([aws, "lambda", *args, "--endpoint-url", rp.url, "--output", "json"],
                              capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if done.stdout.strip() else None

    assert cli("publish-version", "--function-name", "greet")["Version"] == "1"
    router_factory.write_function("greet", HANDLER.format(tag="two"))
    out = tmp_path / "out.json"
    answer = cli("invoke", "--function-name", "greet", "--qualifier", "1", str(out))
    assert answer["ExecutedVersion"] == "1"
    assert json.loads(out.read_text())["code"] == "one"
    listed = cli("list-versions-by-function", "--function-name", "greet")["Versions"]
    assert [v["Version"] for v in listed] == ["$LATEST", "1"]
    assert rp.stop() == 0


def test_control_operations_on_versions_aliases_and_a_reload(router_factory: RouterFactory, tmp_path: Path,
                                                             amqp_url: str) -> None:
    """The control API with versions and aliases: ListFunctions with FunctionVersion=ALL, event source
    mappings listed by their exact target (a route on ``greet:prod`` is not one of ``greet``'s), the event
    invoke config of a qualifier, qualified names refused where Lambda's operation is the function's,
    LoggingConfig, and a RevisionId and LastModified that a reload changing the function moves."""
    router_factory.write_function("greet", HANDLER.format(tag="one"))
    rp = router_factory(_config(tmp_path, f"sqlite:///{tmp_path / 'state.db'}"))
    client = _lambda(rp.url)
    assert client.publish_version(FunctionName="greet")["Version"] == "1"
    assert rp.stop() == 0

    queue = f"versions-{os.getpid()}-{tmp_path.name}"[:100]
    amqp = f'type: amqp, url: "{amqp_url}", queue: {queue}, declare: true, durable: false'
    config = _config(tmp_path, f"sqlite:///{tmp_path / 'state.db'}",
                     aliases="aliases: {prod: {version: 1}}\n            logging: {log_format: JSON}")
    config += f"""
          - {{name: to-prod, source: {{{amqp}}}, function: "greet:prod"}}
          - {{name: to-latest, source: {{{amqp}}}, function: greet}}
    """
    rp = router_factory(config)
    client = _lambda(rp.url)

    # DryRun checks what an invocation would: a qualifier that names nothing is not found
    assert client.invoke(FunctionName="greet", Qualifier="prod", InvocationType="DryRun")["StatusCode"] == 204
    assert client.invoke(FunctionName="greet:1", InvocationType="DryRun")["StatusCode"] == 204
    with pytest.raises(client.exceptions.ResourceNotFoundException, match=f"Function not found: {ARN}:beta"):
        client.invoke(FunctionName="greet", Qualifier="beta", InvocationType="DryRun")
    with pytest.raises(client.exceptions.ResourceNotFoundException, match=f"Function not found: {ARN}:9"):
        client.invoke(FunctionName="greet:9", InvocationType="DryRun")

    every = client.list_functions(FunctionVersion="ALL")["Functions"]
    assert [(f["FunctionName"], f["Version"]) for f in every] == [("greet", "$LATEST"), ("greet", "1")]
    assert [f["Version"] for f in client.list_functions()["Functions"]] == ["$LATEST"]
    with pytest.raises(client.exceptions.InvalidParameterValueException, match="only value is ALL"):
        client.list_functions(FunctionVersion="LATEST")

    def routes(name: str) -> list[str]:
        mappings = client.list_event_source_mappings(FunctionName=name)["EventSourceMappings"]
        return sorted(m["FunctionArn"] for m in mappings)

    assert routes("greet") == [ARN]
    assert routes("greet:prod") == routes(f"{ARN}:prod") == [f"{ARN}:prod"]
    assert routes("greet:1") == []
    prod = client.list_event_source_mappings(FunctionName="greet:prod")["EventSourceMappings"][0]
    paused = client.update_event_source_mapping(UUID=prod["UUID"], FunctionName="greet:prod", Enabled=False)
    assert paused["State"] == "Disabled"
    with pytest.raises(client.exceptions.InvalidParameterValueException, match="config file owns it"):
        client.update_event_source_mapping(UUID=prod["UUID"], FunctionName="greet", Enabled=True)

    cfg = client.get_function_event_invoke_config(FunctionName="greet", Qualifier="prod")
    assert cfg["FunctionArn"] == f"{ARN}:prod"
    assert cfg["MaximumRetryAttempts"] == client.get_function_event_invoke_config(
        FunctionName="greet")["MaximumRetryAttempts"]
    assert client.get_function_event_invoke_config(FunctionName="greet:1")["FunctionArn"] == f"{ARN}:1"
    with pytest.raises(client.exceptions.ResourceNotFoundException, match=f"Function not found: {ARN}:beta"):
        client.get_function_event_invoke_config(FunctionName="greet", Qualifier="beta")
    with pytest.raises(client.exceptions.InvalidParameterValueException, match="one event invoke config"):
        client.put_function_event_invoke_config(FunctionName="greet:prod", MaximumRetryAttempts=0)
    with pytest.raises(client.exceptions.InvalidParameterValueException, match="unqualified name"):
        client.put_function_concurrency(FunctionName="greet:prod", ReservedConcurrentExecutions=1)

    before = client.get_function_configuration(FunctionName="greet")
    assert before["LoggingConfig"] == {"LogFormat": "JSON", "LogGroup": "/aws/lambda/greet",
                                       "ApplicationLogLevel": "INFO", "SystemLogLevel": "INFO"}
    assert client.get_function_configuration(FunctionName="greet")["RevisionId"] == before["RevisionId"]
    rp.config_path.write_text(rp.config_path.read_text().replace("log_format: JSON", "log_format: Text"))
    done = _admin(rp, "reload")
    assert done.returncode == 0, done.stdout + done.stderr
    after = client.get_function_configuration(FunctionName="greet")
    assert after["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": "/aws/lambda/greet"}
    assert after["RevisionId"] != before["RevisionId"]
    assert after["LastModified"] > before["LastModified"]  # milliseconds, as Lambda's

    # An operation the router does not serve says which it does, in an error boto3 parses.
    with pytest.raises(client.exceptions.ClientError, match="control operations: ListFunctions") as info:
        client.get_policy(FunctionName="greet")
    assert info.value.response["Error"]["Code"] == "UnknownOperationException"
    assert rp.stop() == 0
