"""Invocation history and the async status API of a running router, on SQLite and on PostgreSQL: the 202's
``Location``, ``GET /invocations/{id}`` through queued, running, retrying, succeeded and failed,
``DELETE`` of a waiting event, the admin listing, logs, payloads only when asked for, pruning by count,
and credentials."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.e2e.test_amqp_async import Broker, async_config, broker, invoke_event, seen_dir
from tests.fault import conftest as fault
from tests.router_process import RouterFactory, RouterProcess, http
from tests.waiting import process_gone, until_sync

pg_database = fault.pg_database  # a database of the test's own, dropped afterwards
__all__ = ["broker"]  # RabbitMQ queues of the test's own, deleted afterwards (a fixture)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("pg_database"))


@pytest.fixture
def running(router_factory: RouterFactory, tmp_path: Path, state_url: str) -> Iterator[RouterProcess]:
    out = tmp_path / "out"
    out.mkdir()
    router_factory.write_function("echo", """
        def handler(event, context):
            print("echo says hello", context.aws_request_id)
            return {"event": event}
    """)
    router_factory.write_function("flaky", f"""
        import json, os
        def handler(event, context):
            with open(os.path.join("{out}", "flaky.txt"), "a") as f:
                f.write(context.aws_request_id + "\\n")
            raise ValueError("broken on purpose")
    """)
    router_factory.write_function("gate", f"""
        import os, time
        def handler(event, context):
            with open(os.path.join("{out}", "gate.txt"), "a") as f:
                f.write(context.aws_request_id + "\\n")
            while not os.path.exists(os.path.join("{out}", "open")) and event.get("wait"):
                time.sleep(0.02)
            return "through"
    """)
    code = tmp_path / "functions"
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: "{state_url}"
        functions:
          echo: {{runtime: python3.11, handler: app.handler, code: {code / 'echo'},
                 history: {{payloads: true, max_count: 4}}}}
          plain: {{runtime: python3.11, handler: app.handler, code: {code / 'echo'}}}
          flaky: {{runtime: python3.11, handler: app.handler, code: {code / 'flaky'},
                  async: {{retries: 1, backoff: {{initial: 0.5s, max: 0.5s}}}}}}
          slowretry: {{runtime: python3.11, handler: app.handler, code: {code / 'flaky'},
                      async: {{retries: 2, backoff: {{initial: 600s, max: 600s}}}}}}
          gate: {{runtime: python3.11, handler: app.handler, code: {code / 'gate'}, concurrency: 1,
                 timeout: 30s}}
        routes:
          - {{name: echo-sync, source: {{type: webhook, path: /echo}}, function: echo}}
          - {{name: echo-async, source: {{type: webhook, path: /echo-async}}, function: echo,
             invocation: async}}
          - {{name: plain-sync, source: {{type: webhook, path: /plain}}, function: plain}}
    """)
    yield rp
    assert rp.stop() == 0


def _get(rp: RouterProcess, path: str) -> tuple[int, dict[str, Any]]:
    status, _, body = http("GET", rp.url + path)
    return status, json.loads(body)


def _status(rp: RouterProcess, request_id: str) -> str:
    status, body = _get(rp, f"/invocations/{request_id}")
    assert status == 200, body
    return str(body["status"])


def _lambda(url: str) -> Any:
    return boto3.client("lambda", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x",
                        aws_secret_access_key="x", config=Config(retries={"max_attempts": 1}))


def _event(rp: RouterProcess, function: str, payload: dict[str, Any]) -> str:
    resp = _lambda(rp.url).invoke(FunctionName=function, InvocationType="Event",
                                  Payload=json.dumps(payload).encode())
    assert resp["StatusCode"] == 202
    headers = resp["ResponseMetadata"]["HTTPHeaders"]
    request_id = headers["x-amzn-requestid"]
    assert headers["location"] == f"/invocations/{request_id}"
    return str(request_id)


def test_sync_and_async_invocations_are_recorded_with_status_logs_and_result(running: RouterProcess) -> None:
    status, _, body = http("POST", running.url + "/echo", b'{"n": 1}')
    assert status == 200
    status, headers, body = http("POST", running.url + "/echo-async", b'{"n": 2}')
    assert status == 202
    request_id = json.loads(body)["requestId"]  # the webhook's 202 body
    assert headers["location"] == f"/invocations/{request_id}"
    # Right after the 202: known already (the recorder's buffer or the queue's row answers).
    assert _status(running, request_id) in ("queued", "running", "succeeded")
    until_sync(lambda: _status(running, request_id) == "succeeded", what="the async event to succeed")
    _, done = _get(running, headers["location"])
    assert done["function"] == "echo"
    assert done["route"] == "echo-async"
    assert done["invocation_type"] == "async"
    assert done["attempt_count"] == 1
    assert done["attempts"][0]["outcome"] == "success"
    assert done["attempts"][0]["started_at"] <= done["attempts"][0]["ended_at"]
    assert done["result"]["event"]["body"] == '{"n": 2}'
    assert "echo says hello" in done["logs"]
    assert done["payload_truncated"] is False

    event_id = _event(running, "echo", {"n": 3})
    until_sync(lambda: _status(running, event_id) == "succeeded", what="the Event invoke to succeed")
    _, invoked = _get(running, f"/invocations/{event_id}")
    assert invoked["source"] == "invoke_api"
    assert invoked["result"] == {"event": {"n": 3}}
    assert invoked["payload"] == {"n": 3}

    def listed() -> list[dict[str, Any]]:
        return list(_get(running, "/admin/invocations?function=echo")[1]["invocations"])

    rows = until_sync(lambda: len(listed()) == 3 and listed(), what="three echo invocations listed")
    assert [r["request_id"] for r in rows][:2] == [event_id, request_id]  # newest first
    assert {r["status"] for r in rows} == {"succeeded"}
    sync_row = rows[2]
    assert (sync_row["invocation_type"], sync_row["route"], sync_row["source"]) == ("sync", "echo-sync",
                                                                                   "webhook")
    status, page = _get(running, "/admin/invocations?function=echo&limit=2")
    assert len(page["invocations"]) == 2
    assert page["next_before"]
    _, rest = _get(running, f"/admin/invocations?function=echo&limit=2&before={page['next_before']}")
    assert [r["request_id"] for r in rest["invocations"]] == [sync_row["request_id"]]
    status, detail = _get(running, f"/admin/invocations/{sync_row['request_id']}")
    assert status == 200
    assert detail["payload"]["body"] == '{"n": 1}'
    # A webhook's answer goes out before its END and REPORT are written: the row has them all the same.
    rid = sync_row["request_id"]
    assert detail["logs"].split("\n")[-2:][0] == f"END RequestId: {rid}"
    assert detail["logs"].split("\n")[-1].startswith(f"REPORT RequestId: {rid}\tDuration: ")


def test_payload_is_kept_only_when_the_function_asks(running: RouterProcess) -> None:
    assert http("POST", running.url + "/plain", b'{"secret": "card"}')[0] == 200
    rows = until_sync(lambda: _get(running, "/admin/invocations?function=plain")[1]["invocations"],
                      what="the plain invocation listed")
    _, detail = _get(running, f"/invocations/{rows[0]['request_id']}")
    assert detail["status"] == "succeeded"
    assert "payload" not in detail
    assert "echo says hello" in detail["logs"]


def test_a_failing_async_event_fails_with_each_attempt_and_its_error(running: RouterProcess) -> None:
    # Between its attempts the event is retrying: with full jitter the wait may be too short to see here;
    # slowretry's long backoff shows it (test_delete_cancels_...).
    request_id = _event(running, "flaky", {"x": 1})
    until_sync(lambda: _status(running, request_id) == "failed", what="the flaky event to fail", deadline=20)
    _, body = _get(running, f"/invocations/{request_id}")
    assert body["attempt_count"] == 2
    assert [a["error_message"] for a in body["attempts"]] == ["broken on purpose"] * 2
    assert [a["error_type"] for a in body["attempts"]] == ["ValueError"] * 2
    assert (body["error_type"], body["error_message"]) == ("ValueError", "broken on purpose")
    assert body["error"]["errorType"] == "ValueError"  # Lambda's error object
    status, _, answer = http("DELETE", running.url + f"/invocations/{request_id}")
    assert status == 409
    assert "cannot be cancelled: it has finished (failed)" in json.loads(answer)["message"]


def test_delete_cancels_a_queued_or_retrying_event_and_refuses_a_running_one(
    running: RouterProcess, tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    busy = _event(running, "gate", {"wait": True})  # holds gate's one slot until "open" exists
    until_sync(lambda: _status(running, busy) == "running", what="the first gate event running")
    waiting = _event(running, "gate", {"wait": False})
    assert _status(running, waiting) == "queued"

    status, _, body = http("DELETE", running.url + f"/invocations/{busy}")
    assert status == 409
    assert "it is running now" in json.loads(body)["message"]
    status, _, body = http("DELETE", running.url + f"/invocations/{waiting}")
    assert status == 200, body
    assert json.loads(body)["status"] == "cancelled"
    assert _status(running, waiting) == "cancelled"

    (out / "open").touch()
    after = _event(running, "gate", {"wait": False})  # queued behind the cancelled one
    until_sync(lambda: _status(running, after) == "succeeded", what="the later gate event to run")
    assert _status(running, busy) == "succeeded"
    ran = (out / "gate.txt").read_text().split()
    assert waiting not in ran
    assert ran == [busy, after]

    retrying = _event(running, "slowretry", {})
    until_sync(lambda: _status(running, retrying) == "retrying", what="the first attempt to fail")
    _, between = _get(running, f"/invocations/{retrying}")
    assert [a["error_message"] for a in between["attempts"]] == ["broken on purpose"]
    status, _, body = http("DELETE", running.url + f"/invocations/{retrying}")
    assert status == 200, body
    cancelled = json.loads(body)
    assert cancelled["status"] == "cancelled"
    assert cancelled["attempt_count"] == 1
    assert http("DELETE", running.url + f"/invocations/{retrying}")[0] == 409
    status, _, body = http("DELETE", running.url + "/invocations/no-such-id")
    assert status == 404
    assert "not found" in json.loads(body)["message"]


def test_history_is_pruned_to_max_count_per_function(running: RouterProcess) -> None:
    for n in range(7):
        assert http("POST", running.url + "/echo", json.dumps({"n": n}).encode())[0] == 200

    def kept() -> list[dict[str, Any]]:
        return list(_get(running, "/admin/invocations?function=echo&limit=100")[1]["invocations"])

    rows = until_sync(lambda: len(kept()) == 4 and kept(), what="echo's history pruned to 4 rows")
    bodies = [_get(running, f"/admin/invocations/{r['request_id']}")[1]["payload"]["body"] for r in rows]
    assert bodies == [json.dumps({"n": n}) for n in (6, 5, 4, 3)]


def test_status_api_needs_the_invoke_api_credentials(router_factory: RouterFactory, tmp_path: Path) -> None:
    router_factory.write_function("echo", """
        def handler(event, context):
            return event
    """)
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, invoke_token: sesame}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          echo: {{runtime: python3.11, handler: app.handler, code: {tmp_path / 'functions' / 'echo'}}}
    """)
    for method, path in (("GET", "/invocations/abc"), ("DELETE", "/invocations/abc"),
                         ("GET", "/admin/invocations"), ("GET", "/admin/invocations/abc")):
        status, _, body = http(method, rp.url + path)
        assert status == 403, (method, path)
        assert "missing or wrong credentials" in json.loads(body)["message"]
        status, _, body = http(method, rp.url + path, headers={"Authorization": "Bearer sesame"})
        assert status == (200 if path == "/admin/invocations" else 404), (method, path, body)
    assert rp.stop() == 0


def test_delete_cancels_an_event_waiting_in_rabbitmq(
    router_factory: RouterFactory, tmp_path: Path, amqp_url: str, broker: Broker,
) -> None:
    function = f"rec{uuid.uuid4().hex[:8]}"
    broker.forget_function(function)
    seen = seen_dir(tmp_path, router_factory)
    rp = router_factory(async_config(tmp_path, amqp_url, function, sleep=2.0, concurrency=1))
    busy = invoke_event(rp, function, {"n": "busy"})  # holds the one slot for 2 s (the timeout is 3 s)
    until_sync(lambda: _status(rp, busy) == "running", what="the first event running")
    waiting = invoke_event(rp, function, {"n": "waiting"})  # in RabbitMQ, not delivered (prefetch 1)
    assert _status(rp, waiting) == "queued"
    status, _, body = http("DELETE", rp.url + f"/invocations/{waiting}")
    assert status == 200, body
    assert json.loads(body)["status"] == "cancelled"
    after = invoke_event(rp, function, {"n": "after"})
    until_sync(lambda: _status(rp, after) == "succeeded", deadline=30, what="the later event to run")
    assert sorted(p.name.split(".")[0] for p in seen.iterdir()) == ["after", "busy"]
    assert _status(rp, waiting) == "cancelled"
    assert rp.stop() == 0


@pytest.mark.postgres
def test_another_replica_sharing_postgresql_knows_an_event_at_once(
    router_factory: RouterFactory, tmp_path: Path, pg_database: str,
) -> None:
    router_factory.write_function("slow", """
        import time
        def handler(event, context):
            time.sleep(1)
            return "slept"
    """)
    config = f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: "{pg_database}"
        functions:
          slow: {{runtime: python3.11, handler: app.handler, code: {tmp_path / 'functions' / 'slow'}}}
    """
    a = router_factory(config, name="a.yaml")
    b = router_factory(config, name="b.yaml")
    request_id = _event(a, "slow", {})
    assert _status(b, request_id) in ("queued", "running")  # from the queue's row: nothing flushed yet
    until_sync(lambda: _status(b, request_id) == "succeeded", what="the event to succeed, seen from b")
    _, body = _get(a, f"/invocations/{request_id}")
    assert body["result"] == "slept"
    assert a.stop() == 0
    assert b.stop() == 0


def test_a_poller_s_invocations_are_recorded_with_their_route(router_factory: RouterFactory,
                                                               tmp_path: Path) -> None:
    router_factory.write_function("tick", """
        def handler(event, context):
            print("tick", event.get("source"))
            return "ticked"
    """)
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          tick: {{runtime: python3.11, handler: app.handler, code: {tmp_path / 'functions' / 'tick'}}}
        routes:
          - {{name: every-second, source: {{type: schedule, rate: 1s}}, function: tick}}
    """)
    rows = until_sync(lambda: _get(rp, "/admin/invocations?route=every-second")[1]["invocations"],
                      what="a schedule tick recorded", deadline=15)
    _, tick = _get(rp, f"/invocations/{rows[0]['request_id']}")
    assert (tick["function"], tick["source"], tick["invocation_type"]) == ("tick", "schedule", "sync")
    assert tick["status"] == "succeeded"
    assert tick["result"] == "ticked"
    assert "tick aws.events" in tick["logs"]
    assert rp.stop() == 0


def test_history_settings_follow_a_reload(router_factory: RouterFactory, tmp_path: Path) -> None:
    router_factory.write_function("echo", """
        def handler(event, context):
            return "echoed"
    """)
    config = f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          echo: {{runtime: python3.11, handler: app.handler, code: {tmp_path / 'functions' / 'echo'},
                 history: {{enabled: @ON@}}}}
    """
    rp = router_factory(config.replace("@ON@", "false"))
    status, headers, _ = http("POST", rp.url + "/2015-03-31/functions/echo/invocations", b"{}")
    assert status == 200
    assert http("GET", rp.url + f"/invocations/{headers['x-amzn-requestid']}")[0] == 404  # not recorded
    rp.config_path.write_text(rp.config_path.read_text().replace("enabled: false", "enabled: true"))
    status, _, body = http("POST", rp.url + "/admin/reload", b"", timeout=60)
    assert status == 200, body
    assert json.loads(body)["result"] == "applied"
    recorded = _event(rp, "echo", {})  # taken by the function's new async worker
    until_sync(lambda: _status(rp, recorded) == "succeeded", what="the event after the reload recorded")
    _, body_after = _get(rp, f"/invocations/{recorded}")
    assert body_after["attempt_count"] == 1
    assert body_after["attempts"][0]["outcome"] == "success"
    assert rp.stop() == 0


def _history_writers(router_pid: int) -> list[int]:
    """The router's children running the history's writer process (router.state.history_writer)."""
    pids = []
    for tid in os.listdir(f"/proc/{router_pid}/task"):
        with contextlib.suppress(OSError):
            pids += [int(p) for p in Path(f"/proc/{router_pid}/task/{tid}/children").read_text().split()]
    found = []
    for pid in pids:
        with contextlib.suppress(OSError):
            if b"history_writer.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_sqlite_history_is_written_by_a_process_of_its_own_that_ends_with_the_router(
        router_factory: RouterFactory, tmp_path: Path, sig: int) -> None:
    router_factory.write_function("echo", "def handler(event, context):\n    return event\n")
    db = tmp_path / "state.db"
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: "sqlite:///{db}"
        functions:
          echo: {{runtime: python3.11, handler: app.handler, code: {tmp_path / 'functions' / 'echo'}}}
        routes:
          - {{name: echo, source: {{type: webhook, path: /echo}}, function: echo}}
    """)
    assert rp.proc is not None
    assert http("POST", rp.url + "/echo", b'{"n": 0}')[0] == 200
    writers = until_sync(lambda: _history_writers(rp.proc.pid), what="the history writer process")
    assert len(writers) == 1
    until_sync(lambda: _get(rp, "/admin/invocations?function=echo")[1]["invocations"],
               what="the first invocation, written by it")
    for n in range(1, 20):  # held in the recorder's buffer for up to half a second
        assert http("POST", rp.url + "/echo", json.dumps({"n": n}).encode())[0] == 200
    code = rp.stop(sig)
    until_sync(lambda: process_gone(writers[0]), what="the history writer to exit with the router")
    if sig == signal.SIGTERM:  # the buffered rows were written at shutdown
        assert code == 0
        with contextlib.closing(sqlite3.connect(db)) as conn:
            assert conn.execute("SELECT count(*) FROM router_invocations WHERE function = 'echo'"
                                " AND status = 'succeeded'").fetchone() == (20,)
