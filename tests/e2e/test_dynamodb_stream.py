"""`router run` with a dynamodb_stream route against moto_server: a table's INSERT, MODIFY and REMOVE reach
the function in order with Lambda's record shape; a restart resumes after the checkpoint."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.router_process import RouterFactory
from tests.waiting import until_sync

REGION = "us-east-1"


@pytest.fixture
def ddb(moto_server: str) -> Any:
    client = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_server)
    yield client
    client.close()


def create_table(ddb: Any) -> tuple[str, str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    resp = ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return name, str(resp["TableDescription"]["LatestStreamArn"])


def config(tmp_path: Path, moto_server: str, arn: str, source: str = "") -> str:
    return f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 10s}}
        state: sqlite:///{tmp_path / 'state.db'}
        aws: {{region: {REGION}, endpoint_url: "{moto_server}", account_id: "123456789012"}}
        functions:
          record:
            runtime: python3.11
            handler: app.handler
            code: {tmp_path / 'functions' / 'record'}
        routes:
          - name: table-changes
            source: {{type: dynamodb_stream, stream_arn: "{arn}", starting_position: TRIM_HORIZON{source}}}
            function: record
    """


def events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_insert_modify_remove_in_order_and_restart(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str, ddb: Any,
) -> None:
    out = tmp_path / "records.jsonl"
    router_factory.write_function("record", f"""
        import json
        def handler(event, context):
            with open({str(out)!r}, "a") as f:
                for r in event["Records"]:
                    f.write(json.dumps(r) + "\\n")
    """)
    table, arn = create_table(ddb)
    key = {"pk": {"S": "order-1"}}
    ddb.put_item(TableName=table, Item={**key, "status": {"S": "new"}})
    ddb.update_item(TableName=table, Key=key, UpdateExpression="SET #s = :s",
                    ExpressionAttributeNames={"#s": "status"},
                    ExpressionAttributeValues={":s": {"S": "paid"}})
    ddb.delete_item(TableName=table, Key=key)
    cfg = config(tmp_path, moto_server, arn, ", batch_size: 2")
    rp = router_factory(cfg)
    until_sync(lambda: len(events(out)) >= 3, deadline=30, what="three records")
    got = events(out)
    assert [r["eventName"] for r in got] == ["INSERT", "MODIFY", "REMOVE"]
    for r in got:
        assert r["eventSource"] == "aws:dynamodb"
        assert r["eventSourceARN"] == arn
        assert r["dynamodb"]["Keys"] == key
        assert r["dynamodb"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert got[0]["dynamodb"]["NewImage"]["status"] == {"S": "new"}
    assert got[1]["dynamodb"]["OldImage"]["status"] == {"S": "new"}
    assert got[1]["dynamodb"]["NewImage"]["status"] == {"S": "paid"}
    assert got[2]["dynamodb"]["OldImage"]["status"] == {"S": "paid"}
    seqs = [int(r["dynamodb"]["SequenceNumber"]) for r in got]
    assert seqs == sorted(seqs)
    assert rp.stop() == 0

    # Restart: resumes after the checkpoint, so only the new change is delivered.
    ddb.put_item(TableName=table, Item={"pk": {"S": "order-2"}, "status": {"S": "new"}})
    rp2 = router_factory(cfg, port=rp.port, start=False)
    rp2.start()
    until_sync(lambda: len(events(out)) >= 4, deadline=30, what="the fourth record")
    assert rp2.stop() == 0
    got = events(out)
    assert len(got) == 4
    assert got[3]["eventName"] == "INSERT"
    assert got[3]["dynamodb"]["Keys"] == {"pk": {"S": "order-2"}}


def test_at_timestamp_is_a_config_error(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str,
) -> None:
    router_factory.write_function("record", "def handler(event, context):\n    return None\n")
    arn = f"arn:aws:dynamodb:{REGION}:123456789012:table/t/stream/2024-01-01T00:00:00.000"
    cfg = config(tmp_path, moto_server, arn).replace(
        "starting_position: TRIM_HORIZON", "starting_position: AT_TIMESTAMP, starting_position_timestamp: 1")
    rp = router_factory(cfg, start=False)
    rp.start(wait_ready=False)
    assert rp.proc is not None
    assert rp.proc.wait(30) == 1
    assert "DynamoDB Streams has no AT_TIMESTAMP starting position; use TRIM_HORIZON or LATEST" in rp.logs()


def test_tumbling_window_counts_a_tables_changes(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str, ddb: Any,
) -> None:
    """A DynamoDB stream in tumbling windows: the state counts the changes of a window across its
    invocations, and the window's final invocation has the count, the stream's ARN and the shard's id."""
    out = tmp_path / "windows.jsonl"
    router_factory.write_function("record", f"""
        import json
        def handler(event, context):
            state = dict(event["state"])
            for r in event["Records"]:
                state[r["eventName"]] = state.get(r["eventName"], 0) + 1
            with open({str(out)!r}, "a") as f:
                f.write(json.dumps({{"final": event["isFinalInvokeForWindow"], "state": event["state"],
                                    "records": len(event["Records"]), "arn": event["eventSourceARN"],
                                    "shard": event["shardId"], "window": event["window"]}}) + "\\n")
            return {{"state": state}}
    """)
    table, arn = create_table(ddb)
    for n in range(3):
        ddb.put_item(TableName=table, Item={"pk": {"S": f"order-{n}"}, "status": {"S": "new"}})
    ddb.delete_item(TableName=table, Key={"pk": {"S": "order-0"}})
    rp = router_factory(config(tmp_path, moto_server, arn, ", batch_size: 1, tumbling_window: 2s"))

    def finals() -> list[dict[str, Any]]:
        return [e for e in events(out) if e["final"]]

    def counted() -> dict[str, int]:
        total: dict[str, int] = {}
        for final in finals():
            for name, n in final["state"].items():
                total[name] = total.get(name, 0) + n
        return total

    until_sync(lambda: counted() == {"INSERT": 3, "REMOVE": 1}, deadline=30,
               what="the windows' final invocations counting 3 inserts and 1 remove")
    got = events(out)
    assert all(e["arn"] == arn and e["shard"].startswith("shardId-") for e in got)
    assert all(e["records"] == 1 for e in got if not e["final"])  # batch_size 1: the state carried them
    assert all(e["records"] == 0 for e in finals())
    assert all(e["window"]["start"].endswith("Z") and e["window"]["end"].endswith("Z") for e in got)
    assert rp.stop() == 0
