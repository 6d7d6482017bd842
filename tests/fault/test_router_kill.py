"""SIGKILL the router while it consumes, for each source; restart it on the same config and port.

The load keeps running across the kill and the restart (sends to a dead router are refused, sends cut
mid-request are indeterminate). After the restart, every id whose send was acknowledged must have its
side effect observed at least once (0 lost), nothing never sent may appear (0 unexpected); duplicates are
allowed and counted. The recovery time (restart to every acknowledged id observed) is printed in the
"fault suite" section of the run.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from tests.fault.checker import History, Recovery, SideEffects, wait_until_complete
from tests.fault.conftest import SCALE, FaultLog, recorder
from tests.fault.harness import OK, UNKNOWN, AmqpPublisher, Send, Sender, http_post, invoke_body
from tests.router_process import RouterFactory

pytestmark = pytest.mark.fault

REGION = "us-east-1"
SERVER = "server: {host: 127.0.0.1, port: @PORT@, shutdown_timeout: 5s}"


@dataclass
class Scenario:
    """One source under test: its config, how the load sends an id group, how fast, how much."""

    config: str
    send: Send
    limit: int
    group: int = 1
    workers: int = 4
    rate: float | None = None
    target: dict[str, int] | None = None  # the load goes to the router itself: {"port": ...} set by the test
    cleanup: Callable[[], None] | None = None


def _sqlite(tmp_path: Path) -> str:
    return f"state: sqlite:///{tmp_path / 'state.db'}"


def webhook_async(tmp_path: Path, effects: SideEffects, request: pytest.FixtureRequest) -> Scenario:
    config = f"""
        version: 1
        {SERVER}
        {_sqlite(tmp_path)}
        functions:{recorder("record", effects, concurrency=4, sleep=0.05,
                            extra="async: {retries: 2, backoff: {initial: 10ms, max: 100ms}}")}
        routes:
          - {{name: ingest, source: {{type: webhook, path: /ingest}}, function: record, invocation: async}}
    """
    port: dict[str, int] = {}

    def send(ids: list[str]) -> tuple[str, str]:
        return http_post(port["port"], "/ingest", ids[0].encode(), {"Content-Type": "text/plain"})

    return Scenario(config, send, limit=round(600 * SCALE), workers=6, rate=150, target=port)


def invoke_event(tmp_path: Path, effects: SideEffects, request: pytest.FixtureRequest) -> Scenario:
    config = f"""
        version: 1
        {SERVER}
        {_sqlite(tmp_path)}
        functions:{recorder("record", effects, concurrency=4, sleep=0.05,
                            extra="async: {retries: 2, backoff: {initial: 10ms, max: 100ms}}")}
    """
    port: dict[str, int] = {}

    def send(ids: list[str]) -> tuple[str, str]:
        return http_post(port["port"], "/2015-03-31/functions/record/invocations", invoke_body(ids),
                         {"X-Amz-Invocation-Type": "Event"})

    return Scenario(config, send, limit=round(600 * SCALE), workers=6, rate=150, target=port)


def async_queue(tmp_path: Path, effects: SideEffects, request: pytest.FixtureRequest) -> Scenario:
    amqp_url = request.getfixturevalue("amqp_url")
    function = f"rec{uuid.uuid4().hex[:8]}"
    config = f"""
        version: 1
        {SERVER}
        {_sqlite(tmp_path)}
        async_queue: "{amqp_url}"
        functions:{recorder(function, effects, concurrency=4, sleep=0.05,
                            extra="async: {retries: 2, backoff: {initial: 20ms, max: 100ms}}")}
    """
    port: dict[str, int] = {}

    def send(ids: list[str]) -> tuple[str, str]:
        return http_post(port["port"], f"/2015-03-31/functions/{function}/invocations", invoke_body(ids),
                         {"X-Amz-Invocation-Type": "Event"})

    def cleanup() -> None:
        pub = AmqpPublisher(amqp_url)
        try:
            levels = [10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100]
            pub.delete(f"router.async.{function}",
                       *(f"router.async.{function}.retry.{ms}ms" for ms in levels))
        finally:
            pub.close()

    return Scenario(config, send, limit=round(500 * SCALE), workers=6, rate=150, target=port, cleanup=cleanup)


def amqp(tmp_path: Path, effects: SideEffects, request: pytest.FixtureRequest) -> Scenario:
    amqp_url = request.getfixturevalue("amqp_url")
    queue = f"fault-kill-{uuid.uuid4().hex[:8]}"
    pub = AmqpPublisher(amqp_url)
    pub.declare(queue)
    config = f"""
        version: 1
        {SERVER}
        {_sqlite(tmp_path)}
        functions:{recorder("record", effects, concurrency=4, sleep=0.2)}
        routes:
          - name: orders
            source: {{type: amqp, url: "{amqp_url}", queue: {queue}, prefetch: 40, batch_size: 10,
                      declare: true,
                      batch_window: 50ms}}
            function: record
    """

    def cleanup() -> None:
        pub.delete(queue, queue + ".router-delay")
        pub.close()

    return Scenario(config, lambda ids: pub.publish(queue, ids), limit=round(2000 * SCALE), group=20,
                    workers=2, rate=400, cleanup=cleanup)


def _aws_send(call: Callable[[list[str]], None]) -> Send:
    def send(ids: list[str]) -> tuple[str, str]:
        try:
            call(ids)
        except Exception as exc:  # the client's own errors: the request's fate is unknown
            return UNKNOWN, type(exc).__name__
        return OK, "sent"

    return send


def _aws(moto: str) -> str:
    return f'aws: {{region: {REGION}, endpoint_url: "{moto}", account_id: "123456789012"}}'


def sqs(tmp_path: Path, effects: SideEffects, request: pytest.FixtureRequest) -> Scenario:
    moto = request.getfixturevalue("moto_server")
    client = boto3.client("sqs", region_name=REGION, endpoint_url=moto)
    url = client.create_queue(QueueName=f"fault-{uuid.uuid4().hex[:8]}",
                              Attributes={"VisibilityTimeout": "3"})["QueueUrl"]
    config = f"""
        version: 1
        {SERVER}
        {_sqlite(tmp_path)}
        {_aws(moto)}
        functions:{recorder("record", effects, concurrency=4, sleep=1.0, timeout="5s")}
        routes:
          - name: jobs
            source: {{type: sqs, queue_url: "{url}", batch_size: 10, max_concurrency: 4, wait_time: 1s}}
            function: record
    """

    def call(ids: list[str]) -> None:
        resp = client.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(n), "MessageBody": i} for n, i in enumerate(ids)])
        assert not resp.get("Failed"), resp["Failed"]

    def cleanup() -> None:
        client.delete_queue(QueueUrl=url)
        client.close()

    # moto's SQS costs grow with queue depth: a fixed rate keeps the queue short.
    return Scenario(config, _aws_send(call), limit=round(300 * SCALE), group=10, workers=1, rate=60,
                    cleanup=cleanup)


def kinesis(tmp_path: Path, effects: SideEffects, request: pytest.FixtureRequest) -> Scenario:
    moto = request.getfixturevalue("moto_server")
    client = boto3.client("kinesis", region_name=REGION, endpoint_url=moto)
    name = f"fault-{uuid.uuid4().hex[:8]}"
    client.create_stream(StreamName=name, ShardCount=2)
    arn = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    config = f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 10s}}
        {_sqlite(tmp_path)}
        {_aws(moto)}
        functions:{recorder("record", effects, concurrency=4, sleep=0.2)}
        routes:
          - name: clicks
            source: {{type: kinesis, stream_arn: "{arn}", starting_position: TRIM_HORIZON, batch_size: 10}}
            function: record
    """

    def call(ids: list[str]) -> None:
        resp = client.put_records(StreamName=name, Records=[
            {"Data": i.encode(), "PartitionKey": i} for i in ids])
        assert not resp.get("FailedRecordCount"), resp

    def cleanup() -> None:
        client.delete_stream(StreamName=name)
        client.close()

    return Scenario(config, _aws_send(call), limit=round(600 * SCALE), group=10, workers=1, rate=150,
                    cleanup=cleanup)


def dynamodb_stream(tmp_path: Path, effects: SideEffects, request: pytest.FixtureRequest) -> Scenario:
    moto = request.getfixturevalue("moto_server")
    client = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto)
    table = f"fault-{uuid.uuid4().hex[:8]}"
    resp = client.create_table(
        TableName=table, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"})
    arn = resp["TableDescription"]["LatestStreamArn"]
    config = f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 10s}}
        {_sqlite(tmp_path)}
        {_aws(moto)}
        functions:{recorder("record", effects, concurrency=4, sleep=0.3)}
        routes:
          - name: changes
            source: {{type: dynamodb_stream, stream_arn: "{arn}", starting_position: TRIM_HORIZON,
                      batch_size: 10}}
            function: record
    """

    def call(ids: list[str]) -> None:
        for i in ids:
            client.put_item(TableName=table, Item={"pk": {"S": i}})

    def cleanup() -> None:
        client.delete_table(TableName=table)
        client.close()

    return Scenario(config, _aws_send(call), limit=round(300 * SCALE), group=5, workers=1, rate=60,
                    cleanup=cleanup)


SOURCES: dict[str, Callable[[Path, SideEffects, pytest.FixtureRequest], Scenario]] = {
    "webhook_async": webhook_async,
    "invoke_event": invoke_event,
    "sqs": sqs,
    "amqp": amqp,
    "kinesis": kinesis,
    "dynamodb_stream": dynamodb_stream,
    "async_queue": async_queue,
}


@pytest.fixture
def scenario(request: pytest.FixtureRequest, tmp_path: Path, effects: SideEffects) -> Iterator[Scenario]:
    s = SOURCES[request.param](tmp_path, effects, request)
    try:
        yield s
    finally:
        if s.cleanup is not None:
            s.cleanup()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("scenario", list(SOURCES), indirect=True)
def test_sigkill_during_consumption_loses_nothing(
    scenario: Scenario, router_factory: RouterFactory, effects: SideEffects, history: History,
    fault_log: FaultLog,
) -> None:
    rp = router_factory(scenario.config, start=False)
    if scenario.target is not None:
        scenario.target["port"] = rp.port
    rp.start()
    sender = Sender(scenario.send, history, limit=scenario.limit, group=scenario.group,
                    workers=scenario.workers, rate=scenario.rate, deadline=time.monotonic() + 150)
    sender.start()
    try:
        # Kill once a quarter of the load is acknowledged and some of it was processed: batches are in
        # flight and more waits to be consumed.
        sender.wait_accepted(scenario.limit // 4, timeout=60)
        deadline = time.monotonic() + 60
        while len(effects.ids()) < scenario.limit // 10:
            assert time.monotonic() < deadline, f"nothing processed: {rp.logs()[-2000:]}"
            time.sleep(0.05)
        rp.kill()  # sends in progress to the router are cut: indeterminate
        killed = time.monotonic()
        at_kill = len(effects.ids())
        accepted_at_kill = sender.accepted
        assert at_kill < accepted_at_kill, "everything acknowledged was processed: the kill proves nothing"
        if scenario.target is not None:
            sender.pause()  # else the whole load would be refused while the router restarts

        rp2 = router_factory(scenario.config, port=rp.port, start=False)
        recovery = Recovery(effects, "SIGKILL")
        rp2.start()  # waits for /readyz
        ready_after = time.monotonic() - killed
        sender.resume()
        sender.join(150)
    finally:
        sender.stop()
    report = wait_until_complete(history, effects, timeout=120, recovery=recovery)
    fault_log(f"{report.summary()}; at the kill: {accepted_at_kill} acknowledged, {at_kill} observed; "
              f"send outcomes {dict(sorted(sender.outcomes.items()))}")
    fault_log(f"{recovery.line()}; restarted router ready {ready_after:.2f}s after the kill")
    report.assert_valid()
    assert report.sent_ok > accepted_at_kill, "nothing was acknowledged after the restart"
    assert rp2.stop() == 0
