"""The Lambda Invoke API of a running router, called with boto3 as against AWS (DESIGN §4.5)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.router_process import RouterFactory, RouterProcess, http
from tests.waiting import until_sync


@pytest.fixture
def running(router_factory: RouterFactory, tmp_path: Path) -> Iterator[RouterProcess]:
    out = tmp_path / "out"
    out.mkdir()
    router_factory.write_function("echo", """
        def handler(event, context):
            print("echoing", context.aws_request_id)
            return {"event": event, "fn": context.function_name}
    """)
    router_factory.write_function("boom", """
        def handler(event, context):
            raise KeyError("missing")
    """)
    router_factory.write_function("sink", f"""
        import json, os
        def handler(event, context):
            with open(os.path.join("{out}", "sink.jsonl"), "a") as f:
                f.write(json.dumps(event) + "\\n")
    """)
    fns = "\n".join(
        f"""  {n}:
    runtime: python3.11
    handler: app.handler
    code: {tmp_path / 'functions' / n}"""
        for n in ("echo", "boom", "sink")
    )
    rp = router_factory(f"""
version: 1
server: {{host: 127.0.0.1, port: @PORT@}}
state: sqlite:///{tmp_path / 'state.db'}
functions:
{fns}
""")
    yield rp
    assert rp.stop() == 0


def _client(url: str):  # type: ignore[no-untyped-def]
    return boto3.client(
        "lambda", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x",
        aws_secret_access_key="x", config=Config(retries={"max_attempts": 1}),
    )


def test_request_response_with_tail_logs(running: RouterProcess) -> None:
    resp = _client(running.url).invoke(FunctionName="echo", Payload=b'{"a": 1}', LogType="Tail")
    assert resp["StatusCode"] == 200
    assert "FunctionError" not in resp
    assert resp["ExecutedVersion"] == "$LATEST"
    assert json.loads(resp["Payload"].read()) == {"event": {"a": 1}, "fn": "echo"}
    tail = base64.b64decode(resp["LogResult"]).decode()
    assert "START RequestId:" in tail
    assert "echoing" in tail
    assert "REPORT RequestId:" in tail


def test_function_error_is_unhandled_with_lambda_error_shape(running: RouterProcess) -> None:
    resp = _client(running.url).invoke(FunctionName="boom", Payload=b"{}")
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    err = json.loads(resp["Payload"].read())
    assert err["errorType"] == "KeyError"
    assert err["errorMessage"] == "'missing'"
    assert isinstance(err["stackTrace"], list)


def test_event_dryrun_and_arn_names(running: RouterProcess, tmp_path: Path) -> None:
    client = _client(running.url)
    resp = client.invoke(FunctionName="sink", InvocationType="Event", Payload=b'{"n": 7}')
    assert resp["StatusCode"] == 202
    sink = tmp_path / "out" / "sink.jsonl"
    line = until_sync(lambda: sink.exists() and sink.read_text(), what="async event delivered", deadline=20)
    assert json.loads(line) == {"n": 7}
    resp = client.invoke(FunctionName="arn:aws:lambda:us-east-1:000000000000:function:sink",
                         InvocationType="DryRun")
    assert resp["StatusCode"] == 204


def test_unknown_function_and_bad_json_are_aws_errors(running: RouterProcess) -> None:
    client = _client(running.url)
    with pytest.raises(client.exceptions.ResourceNotFoundException, match="nope"):
        client.invoke(FunctionName="nope", Payload=b"{}")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="echo", Qualifier="7", Payload=b"{}")
    with pytest.raises(client.exceptions.InvalidRequestContentException):
        client.invoke(FunctionName="echo", Payload=b"{not json")
    # The server keeps serving after bad input.
    status, _, _ = http("GET", running.url + "/livez")
    assert status == 200
