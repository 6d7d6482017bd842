"""Logging controls with real worker processes: Python and Node functions in Text and JSON, at levels.

What the router logs for each invocation (the ``router.function`` records) and ``Result.logs`` (the tail
the Invoke API returns) are checked line by line; JSON lines are parsed."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest

from router.invocation import Result

from .conftest import MakeInvoker, ended, invocation
from .node_support import NODE_RUNTIME, require_node

TIME_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")  # Node's records
TIME_S = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")  # Python's: awslambdaric's whole seconds


async def run(make_invoker: MakeInvoker, caplog: pytest.LogCaptureFixture, code: str, event: Any = None,
              **fields: Any) -> tuple[Result, list[str], str]:
    """Invoke once; the result, the lines the router logged for the invocation and its request id."""
    caplog.set_level(logging.INFO, logger="router.function")
    invoker = await make_invoker(code, **fields)
    inv = invocation(event)
    before = len(caplog.records)  # of an earlier run in the same test
    result = await invoker.invoke(inv)
    await ended(result)
    logged = [(r.getMessage(), getattr(r, "request_id", None)) for r in caplog.records[before:]
              if r.name == "router.function"]
    lines = [message for message, rid in logged if rid == inv.request_id]
    init = [message for message, rid in logged if rid is None]
    # the tail holds the same lines, after the cold start's: INIT_START (unless filtered out), the init's
    # output and the platform's closing lines (JSON, at DEBUG)
    assert result.logs.split("\n") == init + lines
    return result, lines, inv.request_id


def records(lines: list[str]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        record = json.loads(line)
        assert isinstance(record, dict), line
        out.append(record)
    return out


def check_platform(record: dict[str, Any], kind: str, request_id: str) -> dict[str, Any]:
    assert record["type"] == kind, record
    assert TIME_MS.fullmatch(record["time"]), record
    assert record["record"]["requestId"] == request_id
    return record["record"]  # type: ignore[no-any-return]


# --- Python ---------------------------------------------------------------------------------------------


async def test_python_text_is_unchanged(make_invoker: MakeInvoker, caplog: pytest.LogCaptureFixture) -> None:
    result, lines, rid = await run(make_invoker, caplog, "log_levels")
    assert json.loads(result.payload) == {"format": None, "level": None, "root_level": "WARNING"}
    assert lines[0] == f"START RequestId: {rid} Version: $LATEST"
    assert lines[-2] == f"END RequestId: {rid}"
    assert lines[-1].startswith(f"REPORT RequestId: {rid}\tDuration: ")
    # the root logger stays at Python's WARNING, as on Lambda without a log level
    assert re.fullmatch(rf"\[WARNING\]\t\S+Z\t{rid}\twarning record", lines[1])
    assert re.fullmatch(rf"\[ERROR\]\t\S+Z\t{rid}\terror record", lines[2])
    assert lines[3:-2] == ["plain print", '{"level": "DEBUG", "message": "own json debug"}',
                           '{"level": "ERROR", "message": "own json error"}']


async def test_python_json_at_info(make_invoker: MakeInvoker, caplog: pytest.LogCaptureFixture) -> None:
    result, lines, rid = await run(make_invoker, caplog, "log_levels", logging={"log_format": "JSON"})
    assert json.loads(result.payload) == {"format": "JSON", "level": "INFO", "root_level": "INFO"}
    start = check_platform(records(lines[:1])[0], "platform.start", rid)
    assert start == {"requestId": rid, "version": "$LATEST"}
    report = check_platform(records(lines[-1:])[0], "platform.report", rid)
    assert report["status"] == "success"
    assert set(report["metrics"]) == {"durationMs", "billedDurationMs", "memorySizeMB", "maxMemoryUsedMB",
                                      "initDurationMs"}
    app = lines[1:-1]
    info, warning, error = records(app[:3])
    for record in (info, warning, error):
        assert TIME_S.fullmatch(record.pop("timestamp")), record
    # awslambdaric's fields: level, message, logger, requestId, then the record's extra fields
    assert info == {"level": "INFO", "message": "info record", "logger": "root", "requestId": rid,
                    "orderId": "o-1"}
    assert warning == {"level": "WARNING", "message": "warning record", "logger": "root", "requestId": rid}
    assert error == {"level": "ERROR", "message": "error record", "logger": "root", "requestId": rid}
    # print() stays plain; the platform drops the function's own JSON line below INFO
    assert app[3:] == ["plain print", '{"level": "ERROR", "message": "own json error"}']
    assert not any("debug" in line for line in lines)


async def test_python_json_at_debug_and_system_debug(
        make_invoker: MakeInvoker, caplog: pytest.LogCaptureFixture) -> None:
    result, lines, rid = await run(make_invoker, caplog, "log_levels", logging={
        "log_format": "JSON", "application_log_level": "DEBUG", "system_log_level": "DEBUG"})
    assert json.loads(result.payload) == {"format": "JSON", "level": "DEBUG", "root_level": "DEBUG"}
    parsed = records([line for line in lines if line != "plain print"])
    assert [r.get("type") or r["level"] for r in parsed] == [
        "platform.start", "DEBUG", "INFO", "WARNING", "ERROR", "DEBUG", "ERROR",
        "platform.runtimeDone", "platform.report"]
    done = check_platform(parsed[-2], "platform.runtimeDone", rid)
    assert done["status"] == "success"
    assert set(done["metrics"]) == {"durationMs"}


async def test_python_json_at_error_and_system_warn(
        make_invoker: MakeInvoker, caplog: pytest.LogCaptureFixture) -> None:
    result, lines, rid = await run(make_invoker, caplog, "log_levels", {"fail": True}, logging={
        "log_format": "JSON", "application_log_level": "ERROR", "system_log_level": "WARN"})
    assert json.loads(result.payload)["errorType"] == "ValueError"
    # no platform line at WARN; the application's lines at ERROR and above, and the plain print
    assert lines[1] == "plain print"
    error, own, failure = records([lines[0], *lines[2:]])
    assert (error["level"], error["message"]) == ("ERROR", "error record")
    assert own == {"level": "ERROR", "message": "own json error"}
    # the runtime's error record, as awslambdaric writes it in JSON
    assert TIME_S.fullmatch(failure.pop("timestamp"))
    assert failure["level"] == "ERROR"
    assert (failure["errorType"], failure["errorMessage"], failure["requestId"]) == (
        "ValueError", "failing on purpose", rid)
    assert isinstance(failure["stackTrace"], list)
    assert failure["stackTrace"]


async def test_python_json_report_of_a_failed_invocation(
        make_invoker: MakeInvoker, caplog: pytest.LogCaptureFixture) -> None:
    _, lines, rid = await run(make_invoker, caplog, "log_levels", {"fail": True},
                              logging={"log_format": "JSON"})
    report = check_platform(json.loads(lines[-1]), "platform.report", rid)
    assert (report["status"], report["errorType"]) == ("error", "ValueError")


# --- Node -----------------------------------------------------------------------------------------------


async def test_node_text_is_unchanged(make_invoker: MakeInvoker, caplog: pytest.LogCaptureFixture) -> None:
    require_node()
    result, lines, rid = await run(make_invoker, caplog, "node_log_levels", runtime=NODE_RUNTIME,
                                   handler="index.handler")
    assert json.loads(result.payload) == {"format": None, "level": None}
    assert lines[0] == f"START RequestId: {rid} Version: $LATEST"
    assert lines[-2] == f"END RequestId: {rid}"
    assert lines[-1].startswith(f"REPORT RequestId: {rid}\t")
    levels = [line.split("\t")[2] for line in lines[1:7]]
    assert levels == ["TRACE", "DEBUG", "INFO", "INFO", "WARN", "ERROR"]
    assert lines[7:-2] == ['{"level":"DEBUG","message":"own json debug"}', "plain write"]


@pytest.mark.parametrize(("level", "expected"), [
    ("TRACE", ["TRACE", "DEBUG", "INFO", "INFO", "WARN", "ERROR"]),
    ("INFO", ["INFO", "INFO", "WARN", "ERROR"]),
    ("WARN", ["WARN", "ERROR"]),
])
async def test_node_json_at_levels(make_invoker: MakeInvoker, caplog: pytest.LogCaptureFixture, level: str,
                                   expected: list[str]) -> None:
    require_node()
    result, lines, rid = await run(make_invoker, caplog, "node_log_levels", runtime=NODE_RUNTIME,
                                   handler="index.handler",
                                   logging={"log_format": "JSON", "application_log_level": level})
    assert json.loads(result.payload) == {"format": "JSON", "level": level}
    check_platform(json.loads(lines[0]), "platform.start", rid)
    check_platform(json.loads(lines[-1]), "platform.report", rid)
    app = lines[1:-1]
    assert app[-1] == "plain write"
    console = records(app[:len(expected)])
    assert [r["level"] for r in console] == expected
    for record in console:
        assert TIME_MS.fullmatch(record["timestamp"]), record
        assert record["requestId"] == rid
        assert record["message"].endswith(" record")
    own = app[len(expected):-1]  # the handler's own JSON debug line: dropped by the platform above DEBUG
    assert own == (['{"level":"DEBUG","message":"own json debug"}'] if level == "TRACE" else [])


async def test_node_json_error_record(make_invoker: MakeInvoker, caplog: pytest.LogCaptureFixture) -> None:
    require_node()
    result, lines, rid = await run(make_invoker, caplog, "node_log_levels", {"fail": True},
                                   runtime=NODE_RUNTIME, handler="index.handler",
                                   logging={"log_format": "JSON", "application_log_level": "ERROR"})
    assert json.loads(result.payload)["errorType"] == "TypeError"
    errors = [json.loads(line) for line in lines if line.startswith('{"timestamp"')]
    assert errors[0]["message"] == "error record"
    # the runtime's record of the error, as the Node RIC writes it: the error object is the message
    failure = errors[-1]
    assert failure["level"] == "ERROR"
    assert failure["requestId"] == rid
    assert (failure["message"]["errorType"], failure["message"]["errorMessage"]) == (
        "TypeError", "failing on purpose")
    assert failure["message"]["stackTrace"][0] == "TypeError: failing on purpose"
    report = check_platform(json.loads(lines[-1]), "platform.report", rid)
    assert (report["status"], report["errorType"]) == ("error", "TypeError")


# --- parity with awslambdaric ---------------------------------------------------------------------------


def _comparable(lines: list[str]) -> list[dict[str, Any]]:
    """The application records of an invocation, without what differs run to run (times, paths)."""
    out = []
    for record in records([line for line in lines if line.startswith('{"timestamp"')]):
        assert TIME_S.fullmatch(record.pop("timestamp")), record
        record.pop("location", None)
        if "stackTrace" in record:
            record["stackTrace"] = len(record["stackTrace"])
        out.append(record)
    return out


@pytest.mark.parametrize("event", [{}, {"fail": True}])
async def test_python_json_records_match_awslambdaric(
        make_invoker: MakeInvoker, caplog: pytest.LogCaptureFixture, event: dict[str, Any]) -> None:
    pytest.importorskip("awslambdaric")
    import sys

    fields = {"logging": {"log_format": "JSON", "application_log_level": "DEBUG"}, "handler": "app.logs"}
    _, ours, _ = await run(make_invoker, caplog, "provided", event, name="ours-logs", **fields)
    _, theirs, _ = await run(make_invoker, caplog, "provided", event, name="ric-logs", runtime="provided",
                             environment={"PYTHON": sys.executable}, **fields)
    mine = _comparable(ours)
    expected = ["DEBUG", "INFO", "WARNING", "INFO", "ERROR"] + (["ERROR"] if event else [])
    assert [r["level"] for r in mine] == expected
    assert mine[3]["message"] == {"order": "o-2", "items": 3}  # a dict logged alone stays an object
    for record in mine:
        record.pop("requestId")
    ric = _comparable(theirs)
    for record in ric:
        record.pop("requestId")
    assert mine == ric


async def test_json_report_of_a_timeout(make_invoker: MakeInvoker, caplog: pytest.LogCaptureFixture) -> None:
    result, lines, rid = await run(make_invoker, caplog, "sleep", {"seconds": 30}, timeout=1.0,
                                   logging={"log_format": "JSON"})
    assert json.loads(result.payload)["errorType"] == "Sandbox.Timedout"
    check_platform(json.loads(lines[0]), "platform.start", rid)
    assert re.fullmatch(rf"\S+Z {rid} Task timed out after 1\.00 seconds", lines[-2])
    report = check_platform(json.loads(lines[-1]), "platform.report", rid)
    assert report["status"] == "timeout"
