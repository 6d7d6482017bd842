"""`router run` with an sqs route against moto_server: SIGKILL with messages in flight loses none.

The SIGKILL test runs 5,000 messages (issue 3) through one queue. moto's SQS is O(queue depth) per
message: SendMessage, and ReceiveMessage once per returned message (three times, through its retention
check's GetQueueAttributes), recompute every queue attribute by scanning all the queue's messages with
several datetime calls each; in-flight messages count too. Preloaded, 5,000 messages take ~10 minutes to
send and longer to drain (~0.06 ms per queued message per attribute pass on the 2-core machine). So the test
preloads PRELOAD messages, SIGKILLs the router once half of them were observed (the rest waiting on the
queue or in batches in flight), and a feeder thread sends the others meanwhile and after the restart,
keeping at most BACKLOG messages sent and not yet observed (the depth a steady producer gives). That
puts the whole run at 70-95 s on the (shared) 2-core machine. MESSAGES (env ROUTER_TEST_SQS_MESSAGES)
and BACKLOG (ROUTER_TEST_SQS_BACKLOG) can be raised for a longer run.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.router_process import RouterFactory, http
from tests.waiting import until_sync

MESSAGES = int(os.environ.get("ROUTER_TEST_SQS_MESSAGES", "5000"))
BACKLOG = int(os.environ.get("ROUTER_TEST_SQS_BACKLOG", "20"))
PRELOAD = min(300, MESSAGES)
REGION = "us-east-1"


def _send(client: Any, url: str, bodies: list[str]) -> None:
    for i in range(0, len(bodies), 10):
        chunk = bodies[i:i + 10]
        resp = client.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(n), "MessageBody": body} for n, body in enumerate(chunk)])
        assert not resp.get("Failed"), resp["Failed"]


def _config(tmp_path: Path, moto_server: str, queue_url: str, wait_time: str | None = "1s") -> str:
    """The route long-polls 1 s (``wait_time``: a stop waits for the long polls under way); ``wait_time=None``
    leaves SQS's and Lambda's 20 s, the default (test_sqs_route_event_and_readiness)."""
    source = "batch_size: 10, max_concurrency: 8" + ("" if wait_time is None else f", wait_time: {wait_time}")
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
            source: {{type: sqs, queue_url: "{queue_url}", {source}}}
            function: record
    """


class Feeder(threading.Thread):
    """Sends ``bodies`` in batches of 10, keeping at most ``backlog`` sent and not yet ``observed()``.

    Owned by the test: ``close()`` stops and joins it; an error it meets is re-raised there.
    """

    def __init__(self, endpoint: str, queue_url: str, bodies: list[str], sent: int,
                 observed: Any, backlog: int, deadline: float) -> None:
        super().__init__(name="sqs-feeder", daemon=True)
        self.endpoint, self.queue_url, self.bodies = endpoint, queue_url, bodies
        self.observed, self.backlog, self.deadline = observed, backlog, deadline
        self.sent = sent  # bodies[:sent] are on the queue already
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        client = boto3.client("sqs", region_name=REGION, endpoint_url=self.endpoint)
        try:
            while self.sent < len(self.bodies) and not self._stop_event.is_set():
                if time.monotonic() > self.deadline:
                    raise TimeoutError(f"feeder: only {self.sent} messages sent before the deadline")
                if self.sent - len(self.observed()) >= self.backlog:
                    self._stop_event.wait(0.02)  # poll interval: the router drains meanwhile
                    continue
                _send(client, self.queue_url, self.bodies[self.sent:self.sent + 10])
                self.sent = min(self.sent + 10, len(self.bodies))
        except BaseException as exc:  # reported by close() in the test's thread
            self.error = exc
        finally:
            client.close()

    def close(self) -> None:
        self._stop_event.set()
        self.join(30)
        assert not self.is_alive(), "feeder thread did not stop"
        if self.error is not None:
            raise self.error


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
    config = _config(tmp_path, moto_server, queue_url)

    def observed() -> set[str]:
        return {p.name.split(".")[0] for p in seen.iterdir()}

    started = time.monotonic()
    _send(sqs_client, queue_url, bodies[:PRELOAD])
    feeder = Feeder(moto_server, queue_url, bodies, PRELOAD, observed, BACKLOG, deadline=started + 240)
    feeder.start()
    try:
        rp = router_factory(config)
        until_sync(lambda: len(observed()) >= PRELOAD // 2, deadline=60, what="half the preloaded messages")
        rp.kill()  # SIGKILL: batches in flight, long polls abandoned, nothing handed back
        before = len(observed())
        sent_at_kill = feeder.sent
        assert sent_at_kill > before, "every message sent was processed before the kill; nothing in flight"

        rp2 = router_factory(config, port=rp.port, start=False)
        rp2.start()
        got = until_sync(lambda: len(observed()) == MESSAGES and observed(), deadline=200,
                         what=f"{MESSAGES} messages observed")
    finally:
        feeder.close()
    elapsed = time.monotonic() - started
    assert got == set(bodies)  # 0 lost
    assert feeder.sent == MESSAGES

    def queue_empty() -> dict[str, str] | None:
        attrs: dict[str, str] = sqs_client.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        counts = (attrs["ApproximateNumberOfMessages"], attrs["ApproximateNumberOfMessagesNotVisible"])
        return attrs if counts == ("0", "0") else None

    # Messages observed before the kill but never deleted come back after the visibility timeout
    # and are deleted then: every message is deleted in the end, none is left behind.
    until_sync(queue_empty, deadline=30, what="the queue empty (every message deleted)")
    deliveries = len(list(seen.iterdir()))
    status, _, metrics = http("GET", rp2.url + "/metrics")
    assert status == 200
    assert b'router_source_events_total{route="jobs",type="sqs"}' in metrics
    assert rp2.stop() == 0
    print(f"{MESSAGES} messages in {elapsed:.1f}s (backlog {BACKLOG}); sent before the kill: "
          f"{sent_at_kill}, observed: {before}; duplicates: {deliveries - MESSAGES}")


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
    config = _config(tmp_path, moto_server, queue_url, wait_time=None)  # the default: 20 s, as Lambda
    assert "wait_time" not in config
    rp = router_factory(config)  # waits for /readyz: queue connected
    sqs_client.send_message(QueueUrl=queue_url, MessageBody="plain, not JSON")
    until_sync(out.exists, deadline=30, what="the function ran")
    event = json.loads(out.read_text())
    [record] = event["Records"]
    assert record["body"] == "plain, not JSON"
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"].endswith(queue_url.rsplit("/", 1)[1])
    assert record["awsRegion"] == REGION
    assert rp.stop() == 0


def test_bisect_on_error_one_poison_message_alone_reaches_the_dlq(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str, sqs_client: Any,
) -> None:
    """A queue with a redrive policy (maxReceiveCount 2) and a batch of 10 with one poison message; with
    bisect_on_error the 9 good messages are processed once and deleted in the receive that brought them,
    never dead-lettered; the poison one reaches the DLQ after its 2 receives, with its original body."""
    seen, calls = tmp_path / "seen", tmp_path / "calls"
    seen.mkdir()
    calls.mkdir()
    router_factory.write_function("record", f"""
        import json, os, uuid
        def handler(event, context):
            bodies = [r["body"] for r in event["Records"]]
            part = os.path.join("{calls}", "..", uuid.uuid4().hex)  # written whole, then moved in
            with open(part, "w") as f:
                json.dump([[r["body"], r["attributes"]["ApproximateReceiveCount"]]
                           for r in event["Records"]], f)
            os.replace(part, os.path.join("{calls}", os.path.basename(part)))
            if "poison" in bodies:
                raise ValueError("poison message")
            for body in bodies:  # the side effect, only when the batch succeeded
                open(os.path.join("{seen}", body + "." + uuid.uuid4().hex), "w").close()
    """)
    name = f"bisect-{uuid.uuid4().hex[:8]}"
    dlq_url = sqs_client.create_queue(QueueName=name + "-dlq")["QueueUrl"]
    dlq_arn = sqs_client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    queue_url = sqs_client.create_queue(QueueName=name, Attributes={
        "VisibilityTimeout": "2",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}),
    })["QueueUrl"]
    bodies = [f"good-{i}" for i in range(9)]
    bodies.insert(6, "poison")
    _send(sqs_client, queue_url, bodies)
    # function concurrency 1: one poller receives at a time, so the ten come as one batch
    config = _config(tmp_path, moto_server, queue_url).replace(
        "batch_size: 10, max_concurrency: 8", "batch_size: 10, batch_window: 2s, bisect_on_error: true"
    ).replace("concurrency: 8", "concurrency: 1")
    assert "bisect_on_error: true, wait_time: 1s" in config
    assert "concurrency: 1" in config
    rp = router_factory(config)

    dead: list[dict[str, Any]] = []

    def dead_lettered() -> list[dict[str, Any]]:
        dead.extend(sqs_client.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10,
                                               WaitTimeSeconds=1).get("Messages") or [])
        return dead

    until_sync(dead_lettered, deadline=40, what="the poison message in the DLQ")
    assert [m["Body"] for m in dead] == ["poison"]
    assert sorted(p.name.split(".")[0] for p in seen.iterdir()) == sorted(set(bodies) - {"poison"})
    invocations = [json.loads(p.read_text()) for p in calls.iterdir()]
    assert [[b, "1"] for b in bodies] in invocations  # one batch of 10, then its halves
    good_receives = {count for i in invocations for body, count in i if body != "poison"}
    assert good_receives == {"1"}  # the good ones were never received twice
    alone = sorted(count for i in invocations if [b for b, _ in i] == ["poison"] for _, count in i)
    assert alone == ["1", "2"]  # maxReceiveCount receives, then the DLQ
    status, _, metrics = http("GET", rp.url + "/metrics")
    assert status == 200
    assert b'router_batch_bisections_total{route="jobs"} 4.0' in metrics
    assert rp.stop() == 0
    assert not dead_lettered()[1:]  # only the poison one, ever
