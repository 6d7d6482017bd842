"""A ``lambda`` function end to end: router A's webhook invokes function ``remote``, which is
``lambda: {function_name: echo, endpoint_url: <router B>}``; router B serves the Lambda Invoke API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.router_process import RouterFactory, RouterProcess, http
from tests.waiting import until_sync

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
}


@pytest.fixture
def routers(router_factory: RouterFactory, tmp_path: Path) -> Iterator[tuple[RouterProcess, Path]]:
    out = tmp_path / "out"
    out.mkdir()
    router_factory.write_function("echo", """
        def handler(event, context):
            return {"fn": context.function_name, "event": event}
    """)
    router_factory.write_function("sink", f"""
        import json, os
        def handler(event, context):
            with open(os.path.join({str(out)!r}, "sink.jsonl"), "a") as f:
                f.write(json.dumps(event) + "\\n")
            return "stored"
    """)
    functions = "\n".join(
        f"  {n}:\n    runtime: python3.11\n    handler: app.handler\n    code: {tmp_path / 'functions' / n}"
        for n in ("echo", "sink")
    )
    remote = router_factory(f"""
version: 1
server: {{host: 127.0.0.1, port: @PORT@}}
state: sqlite:///{tmp_path / 'remote.db'}
functions:
{functions}
""", name="remote.yaml")
    front = router_factory(f"""
version: 1
server: {{host: 127.0.0.1, port: @PORT@}}
state: sqlite:///{tmp_path / 'front.db'}
aws: {{region: us-east-1}}
functions:
  remote:
    lambda: {{function_name: echo, endpoint_url: "{remote.url}"}}
    timeout: 10s
  remote-sink:
    lambda: {{function_name: sink, endpoint_url: "{remote.url}"}}
    async: {{retries: 0}}
routes:
  - name: sync
    source: {{type: webhook, path: /hooks/remote}}
    function: remote
  - name: queued
    source: {{type: webhook, path: /hooks/queued}}
    function: remote-sink
    invocation: async
""", env=AWS_ENV, name="front.yaml")
    yield front, out
    assert front.stop() == 0, front.logs()
    assert remote.stop() == 0, remote.logs()


def test_webhook_result_comes_back_from_the_remote_lambda(routers: tuple[RouterProcess, Path]) -> None:
    front, _ = routers
    status, headers, body = http("POST", front.url + "/hooks/remote", b'{"order": 7}')
    assert status == 200, body
    assert headers["content-type"].startswith("application/json")
    result = json.loads(body)
    assert result["fn"] == "echo"  # ran in router B, under its own name
    assert result["event"]["rawPath"] == "/hooks/remote"
    assert json.loads(result["event"]["body"]) == {"order": 7}


def test_async_route_reaches_the_remote_lambda(routers: tuple[RouterProcess, Path]) -> None:
    front, out = routers
    status, _, body = http("POST", front.url + "/hooks/queued", b'{"n": 1}')
    assert status == 202, body
    sink = out / "sink.jsonl"
    line = until_sync(lambda: sink.exists() and sink.read_text().strip(), deadline=30,
                      what="the remote sink call")
    event = json.loads(line.splitlines()[0])
    assert event["rawPath"] == "/hooks/queued"
    assert json.loads(event["body"]) == {"n": 1}
