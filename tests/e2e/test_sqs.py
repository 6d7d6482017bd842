"""`router run` with an sqs route against moto_server: SIGKILL with messages in flight loses none.

The issue asks for 5,000 messages; moto's SQS gets slower as the queue gets deeper (its ReceiveMessage
scans the whole queue): a bare aiobotocore receive/delete loop drains 1,000 messages at ~20 msgs/s on
the 2-core development machine, and 5,000 would take minutes. MESSAGES (default 1,000, env
ROUTER_TEST_SQS_MESSAGES) is the largest count that runs in about a minute.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.e2e.conftest import RouterFactory, http, wait_for

MESSAGES = int(os.environ.get("ROUTER_TEST_SQS_MESSAGES", "1000"))
REGION = "us-east-1"


@pytest.fixture
def sqs_client(moto_server: str) -> Any:
    client = boto3.client("sqs", region_name=REGION, endpoint_url=moto_server)
    yield client
    client.close()


def _send(client: Any, url: str, bodies: list[str]) -> None:
    for i in range(0, len(bodies), 10):
        chunk = bodies[i:i + 10]
        resp = client.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(n), "MessageBody": body} for n, body in enumerate(chunk)])
        assert not resp.get("Failed"), resp["Failed"]


def _config(tmp_path: Path, moto_server: str, queue_url: str) -> str:
    return f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 5s}}
        state: sqlite:///{tmp_path / 'state.db'}
        aws: {{region: {REGION}, endpoint_url: "{moto_server}"}}
        functions:
          record:
            runtime: python3.11
            handler: app.handler
            code: {tmp_path / 'functions' / 'record'}
            timeout: 10s
            concurrency: 8
        routes:
          - name: jobs
            source: {{type: sqs, queue_url: "{queue_url}", batch_size: 10, max_concurrency: 8}}
            function: record
    """


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_with_messages_in_flight_loses_none(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str, sqs_client: Any,
) -> None:
    seen = tmp_path / "seen"
    seen.mkdir()
    router_factory.write_function("record", f"""
        import os
        def handler(event, context):
            # The side effect: one file per (message, delivery), written before the function returns.
            for record in event["Records"]:
                path = os.path.join("{seen}", record["body"] + "." + record["messageId"] + "."
                                    + record["attributes"]["ApproximateReceiveCount"])
                with open(path, "a") as f:
                    f.write(record["eventSourceARN"])
            return {{"batchItemFailures": []}}
    """)
    queue_url = sqs_client.create_queue(QueueName=f"jobs-{uuid.uuid4().hex[:8]}",
                                        Attributes={"VisibilityTimeout": "5"})["QueueUrl"]
    bodies = [f"m{i}" for i in range(MESSAGES)]
    _send(sqs_client, queue_url, bodies)
    config = _config(tmp_path, moto_server, queue_url)

    def observed() -> set[str]:
        return {p.name.split(".")[0] for p in seen.iterdir()}

    started = time.monotonic()
    rp = router_factory(config)
    wait_for(lambda: len(observed()) >= MESSAGES // 10, timeout=60, what="a tenth of the messages")
    rp.kill()  # SIGKILL: batches in flight, long polls abandoned, nothing handed back
    before = len(observed())
    assert before < MESSAGES, "every message was processed before the kill; the test proves nothing"

    rp2 = router_factory(config, port=rp.port, start=False)
    rp2.start()
    got = wait_for(lambda: len(observed()) == MESSAGES and observed(), timeout=120,
                   what=f"{MESSAGES} messages observed")
    elapsed = time.monotonic() - started
    assert got == set(bodies)  # 0 lost
    deliveries = len(list(seen.iterdir()))
    status, _, metrics = http("GET", rp2.url + "/metrics")
    assert status == 200
    assert b'router_source_events_total{route="jobs",type="sqs"}' in metrics
    assert rp2.stop() == 0
    attrs = sqs_client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0"
    print(f"{MESSAGES} messages in {elapsed:.1f}s; observed before the kill: {before}; "
          f"duplicates: {deliveries - MESSAGES}; left in flight: "
          f"{attrs['ApproximateNumberOfMessagesNotVisible']}")


def test_sqs_route_event_and_readiness(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str, sqs_client: Any,
) -> None:
    out = tmp_path / "event.json"
    router_factory.write_function("record", f"""
        import json
        def handler(event, context):
            with open("{out}", "w") as f:
                json.dump(event, f)
    """)
    queue_url = sqs_client.create_queue(QueueName=f"one-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    rp = router_factory(_config(tmp_path, moto_server, queue_url))  # waits for /readyz: queue connected
    sqs_client.send_message(QueueUrl=queue_url, MessageBody="plain, not JSON")
    wait_for(out.exists, timeout=30, what="the function ran")
    event = json.loads(out.read_text())
    [record] = event["Records"]
    assert record["body"] == "plain, not JSON"
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"].endswith(queue_url.rsplit("/", 1)[1])
    assert record["awsRegion"] == REGION
    assert rp.stop() == 0
