"""`router run` with kinesis routes against moto_server: per-shard order, bisect, failure records to SQS,
record age, partial batch responses, parallelization, restart from the checkpoint, a missing stream.

The function is a real Python handler in an execution environment; its side effects are lines appended
to files, read back here. moto's resharding differs from Kinesis (children stay empty): the split is
covered in tests/unit/sources/test_stream_kinesis.py and test_stream_engine.py.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from router.mappings import mapping_uuid
from tests.router_process import RouterFactory, http
from tests.waiting import until_sync

REGION = "us-east-1"


@pytest.fixture
def kinesis(moto_server: str) -> Any:
    client = boto3.client("kinesis", region_name=REGION, endpoint_url=moto_server)
    yield client
    client.close()


@pytest.fixture
def sqs(moto_server: str) -> Any:
    client = boto3.client("sqs", region_name=REGION, endpoint_url=moto_server)
    yield client
    client.close()


def create_stream(client: Any, shards: int, name: str | None = None) -> str:
    name = name or f"s-{uuid.uuid4().hex[:10]}"
    client.create_stream(StreamName=name, ShardCount=shards)
    return str(client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"])


def put(client: Any, arn: str, data: str, *, shard: int = 0, shards: int = 1, key: str = "k") -> str:
    resp = client.put_record(StreamARN=arn, Data=data.encode(), PartitionKey=key,
                             ExplicitHashKey=str(shard * (2**128 // shards) + 1))
    return str(resp["SequenceNumber"])


RECORDER = """
    import base64, json, os
    OUT = {out!r}
    def handler(event, context):
        lines = []
        for r in event["Records"]:
            data = base64.b64decode(r["kinesis"]["data"]).decode()
            if data == "poison":
                raise ValueError("poison record")
            lines.append(r["eventID"].split(":")[0] + " " + r["kinesis"]["partitionKey"] + " " + data)
        with open(OUT, "a") as f:
            f.write("".join(line + "\\n" for line in lines))
"""


def config(tmp_path: Path, moto_server: str, arn: str, source: str = "", fn: str = "record",
           timeout: str = "10s") -> str:
    return f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 10s}}
        state: sqlite:///{tmp_path / 'state.db'}
        aws: {{region: {REGION}, endpoint_url: "{moto_server}", account_id: "123456789012"}}
        functions:
          {fn}:
            runtime: python3.11
            handler: app.handler
            code: {tmp_path / 'functions' / fn}
            timeout: {timeout}
        routes:
          - name: clicks
            source: {{type: kinesis, stream_arn: "{arn}", starting_position: TRIM_HORIZON{source}}}
            function: {fn}
    """


def lines(path: Path) -> list[tuple[str, str, str]]:
    if not path.exists():
        return []
    return [tuple(line.split(" ", 2)) for line in path.read_text().splitlines()]  # type: ignore[misc]


def failure_records(sqs: Any, queue_url: str, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []

    def more() -> bool:
        resp = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for m in resp.get("Messages", []):
            got.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
        return len(got) >= count

    until_sync(more, deadline=30, what=f"{count} failure records")
    return got


def test_four_shards_in_order_bisect_isolates_poison(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str, kinesis: Any, sqs: Any,
) -> None:
    out = tmp_path / "seen.txt"
    router_factory.write_function("record", RECORDER.format(out=str(out)))
    arn = create_stream(kinesis, 4)
    queue_url = sqs.create_queue(QueueName=f"failed-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    expected: dict[str, list[str]] = {}
    poison_seq = ""
    for n in range(12):
        for i in range(4):
            data = "poison" if (i, n) == (1, 7) else f"{i}-{n}"
            seq = put(kinesis, arn, data, shard=i, shards=4)
            if data == "poison":
                poison_seq = seq
            else:
                expected.setdefault(f"shardId-{i:012d}", []).append(data)
    source = (", batch_size: 12, bisect_on_error: true, max_retry_attempts: 1, "
              f'on_failure: {{type: sqs, queue_url: "{queue_url}"}}')
    rp = router_factory(config(tmp_path, moto_server, arn, source))

    def per_shard() -> dict[str, list[str]]:
        got: dict[str, list[str]] = {}
        for shard, _key, data in lines(out):
            got.setdefault(shard, []).append(data)
        return got

    # A failed batch wrote nothing (the handler raises before writing): each good record exactly once,
    # in order per shard.
    until_sync(lambda: per_shard() == expected, deadline=40, what="every good record, in order per shard")
    [record] = failure_records(sqs, queue_url, 1)
    info = record["KinesisBatchInfo"]
    assert info["shardId"] == "shardId-000000000001"
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == poison_seq
    assert info["batchSize"] == 1
    assert info["streamArn"] == arn
    assert info["approximateArrivalOfFirstRecord"].endswith("Z")
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["functionArn"] == "arn:aws:lambda:us-east-1:123456789012:function:record"
    assert record["responseContext"]["functionError"] == "Unhandled"
    _, _, metrics = http("GET", rp.url + "/metrics")
    assert b'router_source_events_total{route="clicks",type="kinesis"} 48.0' in metrics
    assert b'router_iterator_age_seconds{route="clicks",shard="shardId-000000000001"}' in metrics
    assert b'router_stream_records_discarded_total{condition="RetryAttemptsExhausted",route="clicks"} 1.0' \
        in metrics
    assert rp.stop() == 0


def test_max_record_age_sends_failure_record_and_the_shard_moves_on(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str, kinesis: Any, sqs: Any,
) -> None:
    out = tmp_path / "seen.txt"
    router_factory.write_function("record", RECORDER.format(out=str(out)))
    arn = create_stream(kinesis, 1)
    queue_url = sqs.create_queue(QueueName=f"aged-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    first = put(kinesis, arn, "old-1")
    put(kinesis, arn, "old-2")
    put_at = time.time()
    until_sync(lambda: time.time() - put_at > 2.5, deadline=10, what="the records to be older than 2s")
    source = f', max_record_age: 2s, on_failure: {{type: sqs, queue_url: "{queue_url}"}}'
    rp = router_factory(config(tmp_path, moto_server, arn, source))
    [record] = failure_records(sqs, queue_url, 1)
    assert record["requestContext"]["condition"] == "RecordAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert record["KinesisBatchInfo"]["startSequenceNumber"] == first
    assert record["KinesisBatchInfo"]["batchSize"] == 2
    put(kinesis, arn, "fresh")
    until_sync(lambda: [d for _, _, d in lines(out)] == ["fresh"], deadline=20, what="the fresh record")
    assert rp.stop() == 0


def test_max_retry_attempts_without_bisect(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str, kinesis: Any, sqs: Any,
) -> None:
    out = tmp_path / "seen.txt"
    attempts = tmp_path / "attempts.txt"
    router_factory.write_function("record", f"""
        import base64
        def handler(event, context):
            with open({str(attempts)!r}, "a") as f:
                f.write(str(len(event["Records"])) + "\\n")
            datas = [base64.b64decode(r["kinesis"]["data"]).decode() for r in event["Records"]]
            if "poison" in datas:
                raise ValueError("poison")
            with open({str(out)!r}, "a") as f:
                f.write("".join("s k " + d + "\\n" for d in datas))
    """)
    arn = create_stream(kinesis, 1)
    queue_url = sqs.create_queue(QueueName=f"retries-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    put(kinesis, arn, "a")
    put(kinesis, arn, "poison")
    source = f', max_retry_attempts: 2, on_failure: {{type: sqs, queue_url: "{queue_url}"}}'
    rp = router_factory(config(tmp_path, moto_server, arn, source))
    [record] = failure_records(sqs, queue_url, 1)
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["KinesisBatchInfo"]["batchSize"] == 2
    assert attempts.read_text().split() == ["2", "2", "2"]  # the first try and 2 retries, whole batch
    put(kinesis, arn, "after")
    until_sync(lambda: [d for _, _, d in lines(out)] == ["after"], deadline=20, what="the shard moved on")
    assert rp.stop() == 0


def test_an_s3_on_failure_destination_gets_the_record_and_the_batch(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str, kinesis: Any,
) -> None:
    """Lambda's S3 destination for a stream mapping: the failure record with the batch's records as
    ``payload``, named ``aws/lambda/MAPPING-UUID/SHARD/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-UUID``."""
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_server, aws_access_key_id="x",
                      aws_secret_access_key="x")
    bucket = f"stream-failures-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    router_factory.write_function("record", RECORDER.format(out=str(tmp_path / "seen.txt")))
    arn = create_stream(kinesis, 1)
    seqs = [put(kinesis, arn, "poison"), put(kinesis, arn, "b")]
    source = f', max_retry_attempts: 0, on_failure: {{type: s3, bucket_arn: "arn:aws:s3:::{bucket}"}}'
    rp = router_factory(config(tmp_path, moto_server, arn, source))
    [key] = until_sync(lambda: [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])],
                       deadline=30, what="the failure record's object")
    assert key.startswith(f"aws/lambda/{mapping_uuid('clicks')}/shardId-000000000000/"), key
    assert re.fullmatch(r".*/\d{4}/\d{2}/\d{2}/\d{4}-\d{2}-\d{2}T\d{2}\.\d{2}\.\d{2}-[0-9a-f-]{36}", key), key
    record = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["KinesisBatchInfo"]["startSequenceNumber"] == seqs[0]
    records = record["payload"]["Records"]
    assert [r["kinesis"]["sequenceNumber"] for r in records] == seqs
    assert base64.b64decode(records[0]["kinesis"]["data"]) == b"poison"
    s3.close()
    assert rp.stop() == 0


def test_report_batch_item_failures_and_parallelization_keep_key_order(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str, kinesis: Any,
) -> None:
    out = tmp_path / "seen.txt"
    failed = tmp_path / "failed-once"
    failed.mkdir()
    router_factory.write_function("record", f"""
        import base64, os, time
        def handler(event, context):
            failures, lines = [], []
            for r in event["Records"]:
                data = base64.b64decode(r["kinesis"]["data"]).decode()
                marker = os.path.join({str(failed)!r}, data)
                if failures or (data.endswith("-3") and not os.path.exists(marker)):
                    # the first failure of a batch: it and everything after it come back
                    if not failures:
                        open(marker, "w").close()
                    failures.append({{"itemIdentifier": r["kinesis"]["sequenceNumber"]}})
                    continue
                lines.append("s " + r["kinesis"]["partitionKey"] + " " + data)
            with open({str(out)!r}, "a") as f:
                f.write("".join(line + "\\n" for line in lines))
            time.sleep(0.02)
            return {{"batchItemFailures": failures}}
    """)
    arn = create_stream(kinesis, 1)
    keys = [f"key{k}" for k in range(5)]
    sent = 0
    for n in range(8):
        for key in keys:
            put(kinesis, arn, f"{key}-{n}", key=key)
            sent += 1
    source = ", batch_size: 4, parallelization: 3, report_batch_item_failures: true"
    rp = router_factory(config(tmp_path, moto_server, arn, source))
    until_sync(lambda: len(lines(out)) >= sent, deadline=40, what="every record")
    got = lines(out)
    assert len(got) == sent  # a record reported failed was not written, so nothing appears twice
    for key in keys:
        mine = [int(d.rsplit("-", 1)[1]) for _, k, d in got if k == key]
        assert mine == list(range(8)), (key, mine)  # in order per key, the failed one retried in place
    assert len(list(failed.iterdir())) == len(keys)
    assert rp.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_restart_resumes_from_the_checkpoint(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str, kinesis: Any, sig: signal.Signals,
) -> None:
    out = tmp_path / "seen.txt"
    router_factory.write_function("record", f"""
        import base64, time
        def handler(event, context):
            with open({str(out)!r}, "a") as f:
                for r in event["Records"]:
                    data = base64.b64decode(r["kinesis"]["data"]).decode()
                    f.write(r["eventID"].split(":")[0] + " k " + data + "\\n")
            time.sleep(0.05)
    """)
    arn = create_stream(kinesis, 2)
    total = 400
    for n in range(total // 2):
        for i in range(2):
            put(kinesis, arn, f"{i}-{n}", shard=i, shards=2)
    cfg = config(tmp_path, moto_server, arn, ", batch_size: 5")
    rp = router_factory(cfg)
    until_sync(lambda: len(lines(out)) >= 40, deadline=30, what="some records processed")
    assert rp.stop(sig) in (0, -signal.SIGKILL)
    before = len(lines(out))
    assert before < total, "everything was processed before the stop; the test proves nothing"
    rp2 = router_factory(cfg, port=rp.port, start=False)
    rp2.start()
    everything = {f"{i}-{n}" for i in range(2) for n in range(total // 2)}
    until_sync(lambda: {d for _, _, d in lines(out)} == everything, deadline=60,
               what="every record observed")  # 0 lost
    got = lines(out)
    for i in range(2):
        shard = [int(d.split("-")[1]) for s, _, d in got if s == f"shardId-{i:012d}"]
        first_seen = list(dict.fromkeys(shard))
        assert first_seen == list(range(total // 2))  # first deliveries in order per shard
    duplicates = len(got) - total
    if sig == signal.SIGTERM:
        assert duplicates == 0  # in-flight batches finished and were checkpointed; nothing ran twice
    else:
        # Checkpoints are written per shard as batches finish, several advances per write when they
        # come faster than the store: a kill repeats the batches in flight and those not yet written,
        # never what was checkpointed. Resuming from the checkpoint, not from the start, repeats less
        # than everything processed before the kill.
        assert duplicates < before, f"{duplicates} records ran twice of {before} before the kill"
    assert rp2.stop() == 0


def test_missing_stream_not_ready_then_recovers(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str, kinesis: Any,
) -> None:
    out = tmp_path / "seen.txt"
    router_factory.write_function("record", RECORDER.format(out=str(out)))
    name = f"later-{uuid.uuid4().hex[:8]}"
    arn = f"arn:aws:kinesis:{REGION}:123456789012:stream/{name}"
    rp = router_factory(config(tmp_path, moto_server, arn), start=False)
    rp.start(wait_ready=False)

    def not_ready_reason() -> str:
        try:
            status, _, body = http("GET", rp.url + "/readyz", timeout=2)
        except OSError:  # not listening yet
            return ""
        return body.decode() if status == 503 and b"stream not found" in body else ""

    reason = until_sync(not_ready_reason, deadline=30, what="/readyz names the missing stream")
    assert "route clicks: stream not found (ResourceNotFoundException); check source.stream_arn" in reason

    def errors() -> float:
        _, _, metrics = http("GET", rp.url + "/metrics")
        for line in metrics.decode().splitlines():
            if line.startswith('router_source_errors_total{route="clicks",type="kinesis"}'):
                return float(line.split()[-1])
        return 0.0

    until_sync(lambda: errors() >= 2, deadline=30, what="errors counted")
    assert create_stream(kinesis, 1, name=name) == arn
    put(kinesis, arn, "hello")
    rp.wait_ready(timeout=60)
    until_sync(lambda: [d for _, _, d in lines(out)] == ["hello"], deadline=30,
               what="processed after recovery")
    logged = [r for r in rp.log_records() if "stream not found" in r.get("message", "")]
    assert logged
    assert logged[0]["error_type"] == "config"
    assert logged[0]["route"] == "clicks"
    assert rp.stop() == 0


def test_data_is_base64_in_the_event(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str, kinesis: Any,
) -> None:
    out = tmp_path / "event.json"
    router_factory.write_function("record", f"""
        import json
        def handler(event, context):
            with open({str(out)!r}, "w") as f:
                json.dump(event, f)
    """)
    arn = create_stream(kinesis, 1)
    seq = put(kinesis, arn, '{"hello": "world"}', key="pk-1")
    rp = router_factory(config(tmp_path, moto_server, arn))
    until_sync(out.exists, deadline=30, what="the function ran")
    [record] = json.loads(out.read_text())["Records"]
    assert base64.b64decode(record["kinesis"]["data"]) == b'{"hello": "world"}'
    assert record["kinesis"]["sequenceNumber"] == seq
    assert record["kinesis"]["partitionKey"] == "pk-1"
    assert record["eventSource"] == "aws:kinesis"
    assert record["eventSourceARN"] == arn
    assert record["eventID"] == f"shardId-000000000000:{seq}"
    assert rp.stop() == 0


def test_tumbling_window_state_and_final_invocation(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str, kinesis: Any,
) -> None:
    """Lambda's stateful stream processing: each invocation of a window gets the state the one before
    returned, and the window's final invocation (no records, ``isFinalInvokeForWindow``) the whole count,
    once the window's end has passed; the checkpoint is written once the final invocation succeeded."""
    out = tmp_path / "windows.jsonl"
    router_factory.write_function("record", f"""
        import json
        def handler(event, context):
            n = event["state"].get("n", 0) + len(event["Records"])
            with open({str(out)!r}, "a") as f:
                f.write(json.dumps({{k: event[k] for k in ("window", "state", "shardId", "eventSourceARN",
                                    "isFinalInvokeForWindow", "isWindowTerminatedEarly")}}
                                   | {{"records": len(event["Records"])}}) + "\\n")
            return {{"state": {{"n": n}}}}
    """)
    arn = create_stream(kinesis, 1)
    seqs = [put(kinesis, arn, f"r{i}") for i in range(6)]
    rp = router_factory(config(tmp_path, moto_server, arn, ", batch_size: 2, tumbling_window: 2s"))

    def events() -> list[dict[str, Any]]:
        return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []

    def finals() -> list[dict[str, Any]]:
        return [e for e in events() if e["isFinalInvokeForWindow"]]

    until_sync(lambda: sum(f["state"].get("n", 0) for f in finals()) == 6, deadline=30,
               what="the final invocations of the windows, 6 records counted in all")
    for event in events():
        assert (event["shardId"], event["eventSourceARN"]) == ("shardId-000000000000", arn)
        assert not event["isWindowTerminatedEarly"]
        assert event["window"]["start"] < event["window"]["end"]
    for final in finals():
        assert final["records"] == 0
        batches = [e for e in events() if not e["isFinalInvokeForWindow"] and e["window"] == final["window"]]
        assert sum(b["records"] for b in batches) == final["state"]["n"]
        assert [b["state"].get("n", 0) for b in batches] == [sum(x["records"] for x in batches[:i])
                                                             for i in range(len(batches))]
    store = tmp_path / "state.db"

    def checkpoint() -> str | None:
        with sqlite3.connect(store) as db:
            row = db.execute(
                "SELECT sequence_number FROM router_checkpoints WHERE route = 'clicks'").fetchone()
        return None if row is None else str(row[0])

    until_sync(lambda: checkpoint() == seqs[-1], deadline=10, what="the checkpoint at the last record")
    assert rp.stop() == 0
