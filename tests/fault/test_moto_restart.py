"""moto_server killed (SIGKILL) and restarted on the same port while the router polls SQS and Kinesis.

moto keeps its state in memory: a restart loses every queue, stream and message it held, which AWS never
does. So "0 lost" means here: every id acknowledged by moto and not yet observed when moto died is
*indeterminate* (moto lost it, not the router; counted and printed as "held by moto"), and every id
sent after the restart, to the queue or stream created again under the same name, must be observed: the
router rides out the outage (errors, not ready), reconnects by itself and loses nothing it can still get.

Kinesis sequence numbers restart at 1 in a new moto stream, whereas AWS's only grow. The router's
checkpoint from before the outage would then skip the new stream's first records, an artefact of moto;
so after the restart the test first puts as many filler records as the old shard held (never counted,
allowed to appear), to bring the new sequence numbers past the checkpoint, as AWS's would be.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from tests.fault.checker import History, Recovery, SideEffects, wait_until_complete
from tests.fault.conftest import FaultLog, MotoProcess, recorder
from tests.fault.harness import OK, REFUSED, UNKNOWN, Send, Sender
from tests.router_process import RouterFactory, RouterProcess, http
from tests.waiting import until_sync

pytestmark = pytest.mark.fault

REGION = "us-east-1"


def _readyz(rp: RouterProcess) -> int:
    try:
        return http("GET", rp.url + "/readyz", timeout=5)[0]
    except OSError:
        return 0


def _aws_send(call: Callable[[list[str]], None]) -> Send:
    def send(ids: list[str]) -> tuple[str, str]:
        try:
            call(ids)
        except EndpointConnectionError:
            return REFUSED, "moto down"
        except ClientError as exc:  # e.g. the queue does not exist (yet) after the restart
            return REFUSED, exc.response.get("Error", {}).get("Code", "ClientError")
        except Exception as exc:  # a reset or a timeout: the request's fate is unknown
            return UNKNOWN, type(exc).__name__
        return OK, "sent"

    return send


def _config(tmp_path: Path, moto: MotoProcess, effects: SideEffects, source: str, sleep: float) -> str:
    return f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 5s}}
        state: sqlite:///{tmp_path / 'state.db'}
        aws: {{region: {REGION}, endpoint_url: "{moto.url}", account_id: "123456789012"}}
        functions:{recorder("record", effects, concurrency=4, sleep=sleep, timeout="5s")}
        routes:
          - name: r
            source: {source}
            function: record
    """


def _outage(moto: MotoProcess, rp: RouterProcess, history: History, effects: SideEffects,
            recreate: Callable[[], None], fault_log: FaultLog, sender: Sender, pause: bool) -> Recovery:
    """Kill moto, wait until the router noticed, restart it, create the resources again. With ``pause``
    the load stops from the kill until the resources exist again (else it meets the outage too)."""
    sender.pause()  # no send in progress at the kill: each acknowledged id was surely held by moto
    moto.kill()
    held = history.demote(history.ok - effects.ids(), "held by moto when it was killed")
    if not pause:
        sender.resume()
    until_sync(lambda: _readyz(rp) == 503, deadline=60, what="the router not ready while moto is down")
    moto.start()
    recreate()
    sender.resume()
    recovery = Recovery(effects, "moto restart")
    until_sync(lambda: _readyz(rp) == 200, deadline=90, what="the router ready again after moto came back")
    fault_log(f"moto killed with {held} acknowledged ids not yet observed (lost with moto's memory); "
              f"router ready again {time.monotonic() - recovery.fault_ended:.2f}s after moto was back")
    return recovery


@pytest.mark.timeout(240)
def test_sqs_moto_killed_and_restarted(own_moto: MotoProcess, router_factory: RouterFactory, tmp_path: Path,
                                      effects: SideEffects, history: History, fault_log: FaultLog) -> None:
    name = f"fault-{uuid.uuid4().hex[:8]}"
    client = boto3.client("sqs", region_name=REGION, endpoint_url=own_moto.url)

    def create() -> str:
        return str(client.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "3"})["QueueUrl"])

    url = create()

    def recreate() -> None:
        assert create() == url

    def call(ids: list[str]) -> None:
        resp = client.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(n), "MessageBody": i} for n, i in enumerate(ids)])
        assert not resp.get("Failed"), resp["Failed"]

    source = f'{{type: sqs, queue_url: "{url}", batch_size: 10, max_concurrency: 4, wait_time: 1s}}'
    rp = router_factory(_config(tmp_path, own_moto, effects, source, 0.5))
    sender = Sender(_aws_send(call), history, limit=100_000, group=10, workers=1, rate=40,
                    deadline=time.monotonic() + 180)
    sender.start()
    try:
        sender.wait_accepted(100, timeout=60)
        until_sync(lambda: len(effects.ids()) >= 50, deadline=60, what="50 messages processed")
        recovery = _outage(own_moto, rp, history, effects, recreate, fault_log, sender, pause=False)
        sender.wait_accepted(sender.accepted + 150, timeout=90)
    finally:
        sender.stop()
    report = wait_until_complete(history, effects, timeout=90, recovery=recovery)
    fault_log(f"{report.summary()}; send outcomes {dict(sorted(sender.outcomes.items()))}")
    fault_log(recovery.line())
    report.assert_valid()
    assert report.sent_ok >= 150  # sent after the restart, all observed
    assert rp.stop() == 0
    client.close()


@pytest.mark.timeout(240)
def test_kinesis_moto_killed_and_restarted(own_moto: MotoProcess, router_factory: RouterFactory,
                                          tmp_path: Path, effects: SideEffects, history: History,
                                          fault_log: FaultLog) -> None:
    name = f"fault-{uuid.uuid4().hex[:8]}"
    client = boto3.client("kinesis", region_name=REGION, endpoint_url=own_moto.url)
    client.create_stream(StreamName=name, ShardCount=1)
    arn = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    last_seq = {"n": 0}

    def call(ids: list[str]) -> None:
        resp = client.put_records(StreamName=name, Records=[
            {"Data": i.encode(), "PartitionKey": i} for i in ids])
        assert not resp.get("FailedRecordCount"), resp
        last_seq["n"] = max(last_seq["n"], *(int(r["SequenceNumber"]) for r in resp["Records"]))

    def recreate() -> None:
        client.create_stream(StreamName=name, ShardCount=1)
        until_sync(lambda: client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
                   ["StreamStatus"] == "ACTIVE", what="the stream active again", deadline=20)
        fillers = [f"filler{n}" for n in range(last_seq["n"])]
        history.sent_unknown(fillers, "filler: brings moto's sequence numbers past the old checkpoint")
        for i in range(0, len(fillers), 100):
            client.put_records(StreamName=name, Records=[
                {"Data": f.encode(), "PartitionKey": f} for f in fillers[i:i + 100]])

    rp = router_factory(_config(tmp_path, own_moto, effects,
                                f'{{type: kinesis, stream_arn: "{arn}", starting_position: TRIM_HORIZON, '
                                'batch_size: 10}', 0.1))
    sender = Sender(_aws_send(call), history, limit=100_000, group=10, workers=1, rate=60,
                    deadline=time.monotonic() + 180)
    sender.start()
    try:
        sender.wait_accepted(100, timeout=60)
        until_sync(lambda: len(effects.ids()) >= 50, deadline=60, what="50 records processed")
        recovery = _outage(own_moto, rp, history, effects, recreate, fault_log, sender, pause=True)
        sender.wait_accepted(sender.accepted + 150, timeout=90)
    finally:
        sender.stop()
    report = wait_until_complete(history, effects, timeout=90, recovery=recovery)
    fault_log(f"{report.summary()}; send outcomes {dict(sorted(sender.outcomes.items()))}")
    fault_log(recovery.line())
    report.assert_valid()
    assert rp.stop() == 0
    client.close()
