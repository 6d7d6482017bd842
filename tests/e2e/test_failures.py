"""Failed events of a running router (SQLite and PostgreSQL): kept when an async event's retries run out
or it grows too old and when a Kinesis batch is given up; listed, shown, redriven (once, however often
asked) and purged through `router failures` (a subprocess) and the admin API; refused without the token.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.fault import conftest as fault
from tests.router_process import RouterFactory, RouterProcess, http, router
from tests.waiting import until_sync

pg_database = fault.pg_database  # a database of the test's own, dropped afterwards

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

FLAKY = """
    import json, os
    def handler(event, context):
        if not os.path.exists({flag!r}):
            raise RuntimeError("not yet")
        with open({out!r}, "a") as f:
            f.write(json.dumps(event) + "\\n")
"""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def running(request: pytest.FixtureRequest, router_factory: RouterFactory,
            tmp_path: Path) -> Iterator[RouterProcess]:
    state = (f"sqlite:///{tmp_path / 'state.db'}" if request.param == "sqlite"
             else request.getfixturevalue("pg_database"))
    router_factory.write_function("flaky", FLAKY.format(flag=str(tmp_path / "flag"),
                                                        out=str(tmp_path / "out.jsonl")))
    router_factory.write_function("slow", """
        import time
        def handler(event, context):
            time.sleep(1.5)
            raise RuntimeError("too slow")
    """)
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, invoke_token: {TOKEN}, shutdown_timeout: 5s}}
        state: "{state}"
        functions:
          flaky:
            runtime: python3.11
            handler: app.handler
            code: {tmp_path / 'functions' / 'flaky'}
            async: {{retries: 1, backoff: {{initial: 10ms, max: 20ms}}}}
          slow:
            runtime: python3.11
            handler: app.handler
            code: {tmp_path / 'functions' / 'slow'}
            timeout: 10s
            async: {{retries: 2, max_event_age: 1s}}
        routes:
          - {{name: uploads, source: {{type: webhook, path: /uploads}}, function: flaky, invocation: async}}
    """)
    yield rp
    assert rp.stop() == 0


def api(rp: RouterProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    status, _, raw = http(method, rp.url + path, None if body is None else json.dumps(body).encode(),
                          headers=AUTH)
    return status, json.loads(raw) if raw else None


def cli(rp: RouterProcess, *args: str) -> tuple[int, str, str]:
    done = router("failures", *args, "-c", str(rp.config_path), cwd=rp.config_path.parent)
    return done.returncode, done.stdout, done.stderr


def listed(rp: RouterProcess, query: str) -> list[dict[str, Any]]:
    status, body = api(rp, "GET", "/admin/failures?" + query)
    assert status == 200, body
    return list(body["failures"])


def metric(rp: RouterProcess, name: str) -> float:
    _, _, raw = http("GET", rp.url + "/metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in raw.decode().splitlines() if line.startswith(name))


def test_kept_listed_shown_redriven_once_and_purged(running: RouterProcess, tmp_path: Path) -> None:
    rp = running
    status, _, _ = http("POST", rp.url + "/uploads", b'{"n": 1}')
    assert status == 202
    items = until_sync(lambda: listed(rp, "function=flaky"), what="failed event kept", deadline=30)
    [item] = items
    assert (item["route"], item["source"], item["condition"], item["attempts"]) == (
        "uploads", "webhook", "RetriesExhausted", 2)
    assert item["error_message"] == "RuntimeError: not yet"
    assert item["redriven_as"] is None
    assert "payload" not in item

    code, out, err = cli(rp, "list", "--function", "flaky")
    assert code == 0, err
    header, row = out.splitlines()[:2]
    assert header.split() == ["ID", "FAILED_AT", "FUNCTION", "ROUTE", "CONDITION", "ATTEMPTS", "ERROR",
                              "REDRIVEN_AS"]
    assert row.split()[:6] == [str(item["id"]), item["failed_at"], "flaky", "uploads", "RetriesExhausted",
                               "2"]
    assert header.index("FUNCTION") == row.index("flaky")  # aligned
    code, out, _ = cli(rp, "list", "--condition", "EventAgeExceeded", "--function", "flaky", "--json")
    assert code == 0
    assert json.loads(out)["failures"] == []

    code, out, err = cli(rp, "show", str(item["id"]))
    assert code == 0, err
    shown = json.loads(out)
    assert shown["payload"]["body"] == '{"n": 1}'  # the API Gateway event the webhook made
    context = shown["record"]["requestContext"]
    assert (context["requestId"], context["condition"], context["approximateInvokeCount"]) == (
        item["request_id"], "RetriesExhausted", 2)
    assert shown["record"]["requestPayload"] == shown["payload"]
    assert shown["record"]["responseContext"]["functionError"] == "Unhandled"

    (tmp_path / "flag").touch()  # the function succeeds from now on
    code, out, err = cli(rp, "redrive", "--ids", str(item["id"]), "--rate", "50")
    assert code == 0, err
    assert out.startswith("1 failed events scheduled for redrive at 50/s")
    status, again = api(rp, "POST", "/admin/failures/redrive", {"ids": [item["id"]]})
    assert (status, again["scheduled"]) == (202, 0)  # already redriven: nothing
    code, out, _ = cli(rp, "redrive", "--function", "flaky")
    assert (code, out.splitlines()[0]) == (0, "0 failed events scheduled for redrive at 10/s")

    out_file = tmp_path / "out.jsonl"
    until_sync(lambda: out_file.exists() and out_file.read_text(), what="redrive invoked", deadline=30)
    done = until_sync(lambda: [e for e in listed(rp, "function=flaky") if e["redriven_at"]],
                      what="redrive accepted", deadline=10)
    assert done[0]["redriven_as"] not in (None, item["request_id"])
    until_sync(lambda: metric(rp, "router_async_events_received_total") == 2, what="two events", deadline=5)
    [ran] = out_file.read_text().splitlines()  # the function ran once more, not twice
    assert json.loads(ran) == shown["payload"]
    assert metric(rp, "router_failed_events_redriven_total") == 1
    assert any(r.get("request_id") == done[0]["redriven_as"]  # the log links both ids
               and f"(request {item['request_id']}) redriven as request" in r.get("message", "")
               for r in rp.log_records())
    new_id = done[0]["redriven_as"]
    for path in (f"/invocations/{new_id}", f"/admin/invocations/{new_id}"):  # the redrive links back
        status, redrive = api(rp, "GET", path)
        assert (status, redrive["source"]) == (200, "redrive"), redrive
        assert redrive["redrive_of"] == {"request_id": item["request_id"], "failed_event": item["id"]}
    status, original = api(rp, "GET", f"/invocations/{item['request_id']}")
    assert (status, original["source"]) == (200, "webhook")
    assert "redrive_of" not in original

    code, _, err = cli(rp, "purge")
    assert code == 2
    assert "--ids or a filter" in err
    status, body = api(rp, "DELETE", "/admin/failures")
    assert status == 400
    assert "all=true" in body["message"]
    code, out, err = cli(rp, "purge", "--ids", str(item["id"]))
    assert (code, out.strip()) == (0, "1 failed events purged"), err
    assert listed(rp, "function=flaky") == []
    assert api(rp, "GET", f"/invocations/{new_id}")[1]["redrive_of"] is None  # its event is gone
    code, _, err = cli(rp, "show", str(item["id"]))
    assert code == 1
    assert err.strip().endswith("not found (purged, pruned, or never kept); `router failures list` shows "
                                "the kept ones")


def test_too_old_event_is_kept_and_strangers_are_refused(running: RouterProcess) -> None:
    rp = running
    status, _, _ = http("POST", rp.url + "/2015-03-31/functions/slow/invocations", b'{"big": true}',
                        headers={**AUTH, "X-Amz-Invocation-Type": "Event"})
    assert status == 202
    [item] = until_sync(lambda: listed(rp, "function=slow"), what="too-old event kept", deadline=30)
    assert (item["condition"], item["source"], item["route"]) == ("EventAgeExceeded", "invoke_api", None)
    assert metric(rp, 'router_failed_events_kept_total{condition="EventAgeExceeded"') == 1

    for method, path in (("GET", "/admin/failures"), ("GET", f"/admin/failures/{item['id']}"),
                         ("POST", "/admin/failures/redrive"), ("DELETE", "/admin/failures?all=true")):
        status, _, raw = http(method, rp.url + path, b"{}" if method == "POST" else None)
        assert status == 403, (method, path)
        assert b"missing or wrong credentials" in raw
    assert len(listed(rp, "")) == 1  # nothing was purged
    status, body = api(rp, "GET", "/admin/failures?since=yesterday")
    assert status == 400
    assert body["message"].startswith("since: expected epoch seconds, an ISO-8601 time")
    status, body = api(rp, "POST", "/admin/failures/redrive", {"ids": [item["id"]], "rate": 0})
    assert status == 400
    assert body["message"].startswith("rate: events per second")

    code, _, err = cli(rp, "list", "--url", "http://127.0.0.1:1")
    assert code == 1
    assert err.startswith("router failures list: cannot reach the router at http://127.0.0.1:1")


def test_kinesis_poison_batch_is_kept_and_redriven(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str,
) -> None:
    kinesis = boto3.client("kinesis", region_name="us-east-1", endpoint_url=moto_server)
    name = f"s-{uuid.uuid4().hex[:10]}"
    kinesis.create_stream(StreamName=name, ShardCount=1)
    arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    kinesis.put_record(StreamARN=arn, Data=b"poison", PartitionKey="k")
    kinesis.close()
    router_factory.write_function("flaky", FLAKY.format(flag=str(tmp_path / "flag"),
                                                        out=str(tmp_path / "out.jsonl")))
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 5s}}
        state: sqlite:///{tmp_path / 'state.db'}
        aws: {{region: us-east-1, endpoint_url: "{moto_server}", account_id: "123456789012"}}
        functions:
          flaky:
            runtime: python3.11
            handler: app.handler
            code: {tmp_path / 'functions' / 'flaky'}
        routes:
          - name: clicks
            source: {{type: kinesis, stream_arn: "{arn}", starting_position: TRIM_HORIZON,
                      max_retry_attempts: 0}}
            function: flaky
    """)
    [item] = until_sync(lambda: listed(rp, "route=clicks"), what="poison batch kept", deadline=60)
    assert (item["function"], item["source"], item["condition"]) == ("flaky", "kinesis",
                                                                     "RetryAttemptsExhausted")
    status, shown = api(rp, "GET", f"/admin/failures/{item['id']}")
    assert status == 200
    assert shown["record"]["KinesisBatchInfo"]["streamArn"] == arn
    assert shown["record"]["requestContext"]["condition"] == "RetryAttemptsExhausted"
    [record] = shown["payload"]["Records"]
    assert base64.b64decode(record["kinesis"]["data"]) == b"poison"

    (tmp_path / "flag").touch()
    status, body = api(rp, "POST", "/admin/failures/redrive", {"route": "clicks"})
    assert (status, body["scheduled"]) == (202, 1)
    out_file = tmp_path / "out.jsonl"
    line = until_sync(lambda: out_file.exists() and out_file.read_text(), what="batch redriven", deadline=30)
    assert json.loads(line)["Records"][0]["kinesis"]["data"] == record["kinesis"]["data"]
    assert rp.stop() == 0
