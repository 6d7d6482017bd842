"""`router run` with Node.js functions that use real npm packages, installed the way users package them
(`npm install` into the function's code directory): Powertools batch on an SQS route, Middy on a
webhook, Powertools Logger with the Lambda context.

The packages are installed once per test session into a temporary copy of
tests/fixtures/functions/node_npm. Skipped without node/npm (or when the registry cannot be reached),
except under CI=true, where that fails.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.router_process import RouterFactory, http
from tests.unavailable import unavailable
from tests.unit.runtime.node_support import FIXTURES, NODE_RUNTIME, require_npm
from tests.waiting import until_sync

REGION = "us-east-1"


@pytest.fixture(scope="session")
def npm_function(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/fixtures/functions/node_npm with its dependencies installed (once per session)."""
    npm = require_npm()
    target = tmp_path_factory.mktemp("node_npm") / "code"
    shutil.copytree(FIXTURES / "node_npm", target)
    done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=target,
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        problem = f"npm install failed in {target} (exit {done.returncode}): {done.stderr[-1000:]}"
        unavailable(problem)
    return target


def function_lines(records: list[dict[str, Any]], function: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("logger") == "router.function" and r.get("function") == function]


def test_powertools_batch_partial_response_on_an_sqs_route(
        router_factory: RouterFactory, tmp_path: Path, moto_server: str, npm_function: Path) -> None:
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=moto_server)
    try:
        queue_url = sqs.create_queue(QueueName=f"node-batch-{uuid.uuid4().hex[:8]}",
                                     Attributes={"VisibilityTimeout": "2"})["QueueUrl"]
        bodies = [{"id": i, "fail": i == 3} for i in range(1, 6)]
        sqs.send_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(b["id"]), "MessageBody": json.dumps(b)} for b in bodies])
        rp = router_factory(f"""
            version: 1
            server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 5s}}
            state: sqlite:///{tmp_path / 'state.db'}
            aws: {{region: {REGION}, endpoint_url: "{moto_server}"}}
            functions:
              orders:
                runtime: {NODE_RUNTIME}
                handler: batch.handler
                code: {npm_function}
                timeout: 10s
            routes:
              - name: jobs
                source: {{type: sqs, queue_url: "{queue_url}", batch_size: 10, wait_time: 1s,
                         report_batch_item_failures: true}}
                function: orders
        """)

        def processed() -> list[str]:
            return [r["message"].rsplit("\t", 1)[1] for r in function_lines(rp.log_records(), "orders")
                    if "\tINFO\tprocessed " in r["message"]]

        def failures() -> list[str]:
            return [r["message"] for r in function_lines(rp.log_records(), "orders")
                    if "record 3 fails on purpose" in r["message"]]

        # record 3 failed alone and came back after its visibility timeout; the others were deleted
        until_sync(lambda: len(failures()) >= 2, deadline=60, what="record 3 to be received twice")
        assert sorted(processed()) == ["processed 1 1", "processed 2 1", "processed 4 1", "processed 5 1"]
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        in_queue = int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"])
        assert in_queue == 1
        rp.stop()
    finally:
        sqs.close()


def test_middy_json_body_parser_on_a_webhook(
        router_factory: RouterFactory, tmp_path: Path, npm_function: Path) -> None:
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          greet:
            runtime: {NODE_RUNTIME}
            handler: middy.handler
            code: {npm_function}
        routes:
          - name: greet
            source: {{type: webhook, path: /greet, methods: [POST]}}
            function: greet
    """)
    status, headers, body = http("POST", rp.url + "/greet", json.dumps({"name": "Ada"}).encode(),
                                 {"Content-Type": "application/json"})
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"hello": "Ada", "parsed": "object"}
    # Middy's parser refuses a body that is not JSON: API Gateway-style error from the function
    status, _, body = http("POST", rp.url + "/greet", b"not json", {"Content-Type": "application/json"})
    assert status in {415, 422, 500, 502}, body
    rp.stop()


def test_powertools_logger_injects_the_lambda_context(
        router_factory: RouterFactory, tmp_path: Path, npm_function: Path) -> None:
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          orders:
            runtime: {NODE_RUNTIME}
            handler: logger.handler
            code: {npm_function}
            memory: 256
    """)
    status, _, body = http("POST", rp.url + "/2015-03-31/functions/orders/invocations",
                                 json.dumps({"orderId": "o-42"}).encode())
    assert status == 200, body
    assert json.loads(body) == {"logged": True}

    def logged() -> dict[str, Any] | None:
        for r in function_lines(rp.log_records(), "orders"):
            if r["message"].startswith("{") and "order received" in r["message"]:
                return {"record": json.loads(r["message"]), "request_id": r.get("request_id")}
        return None

    found = until_sync(logged, deadline=20, what="the Powertools log line")
    line = found["record"]
    assert line["message"] == "order received"
    assert line["orderId"] == "o-42"
    assert line["service"] == "orders"
    assert line["function_name"] == "orders"
    assert line["function_memory_size"] in ("256", 256)
    assert line["function_request_id"] == found["request_id"]
    assert line["function_arn"].endswith(":function:orders")
    assert line["cold_start"] is True
    rp.stop()
