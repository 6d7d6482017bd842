"""The platform's lines in Text and JSON (router.runtime.platform_log) and the level filter."""

from __future__ import annotations

import json
import re

import pytest

from router.config.models import FunctionLoggingConfig
from router.runtime.platform_log import TEXT, PlatformLog, application_level
from router.runtime.results import RestoreDuration

RID = "8f5e5d5c-0000-4000-8000-000000000001"
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def platform(**fields: str) -> PlatformLog:
    return PlatformLog.of(FunctionLoggingConfig(**fields))  # type: ignore[arg-type]


def parsed(line: str | None) -> dict[str, object]:
    assert line is not None
    record = json.loads(line)
    assert set(record) == {"time", "type", "record"}
    assert TIME.fullmatch(record["time"]), record
    return record  # type: ignore[no-any-return]


def test_text_is_todays_lines() -> None:
    log = platform()
    assert log is TEXT
    assert log.start(RID) == f"START RequestId: {RID} Version: $LATEST"
    assert log.end(RID, 0.01, None) == f"END RequestId: {RID}"
    assert log.report(RID, 0.0123, 128, 40, 0.2) == (
        f"REPORT RequestId: {RID}\tDuration: 12.30 ms\tBilled Duration: 213 ms\tMemory Size: 128 MB"
        "\tMax Memory Used: 40 MB\tInit Duration: 200.00 ms")  # the init is billed (Lambda, since 2025-08)
    assert "\tBilled Duration: 13 ms\t" in log.report(RID, 0.0123, 128, 40, None)  # a warm one: its own time
    # a handler error does not show on Text lines, as on Lambda
    assert "Status" not in (log.report(RID, 0.01, 128, 40, None, function_error="ValueError") or "")
    assert log.keep is None


def test_init_report_in_both_formats() -> None:
    failed = TEXT.init_report(0.08049, phase="invoke", status="error", error_type="Runtime.ImportModuleError")
    assert failed == ("INIT_REPORT Init Duration: 80.49 ms\tPhase: invoke\tStatus: error"
                      "\tError Type: Runtime.ImportModuleError")
    assert TEXT.init_report(10.0, status="timeout") == (
        "INIT_REPORT Init Duration: 10000.00 ms\tPhase: init\tStatus: timeout")
    assert TEXT.init_report(0.5) == "INIT_REPORT Init Duration: 500.00 ms"  # a snapshot's init that went well
    log = platform(log_format="JSON")
    record = parsed(log.init_report(0.080493, phase="invoke", status="error", error_type="Runtime.ExitError",
                                    initialization_type="provisioned-concurrency"))
    assert record["type"] == "platform.initReport"
    assert record["record"] == {
        "initializationType": "provisioned-concurrency", "phase": "invoke", "status": "error",
        "errorType": "Runtime.ExitError", "metrics": {"durationMs": 80.493}}
    snapshot = parsed(log.init_report(0.125, initialization_type="snap-start"))
    assert snapshot["record"] == {
        "initializationType": "snap-start", "phase": "init", "status": "success",
        "metrics": {"durationMs": 125.0}}
    assert platform(log_format="JSON", system_log_level="WARN").init_report(0.1, status="error") is None


def test_init_start_and_restore_lines_in_both_formats() -> None:
    arn = "arn:aws:lambda:us-east-1::runtime:" + "ab" * 32
    assert TEXT.init_start("python:3.11.7", arn, "fn", "$LATEST", "stream", 128) == (
        f"INIT_START Runtime Version: python:3.11.7\tRuntime Version ARN: {arn}")
    assert TEXT.init_start("python:3.11.7", arn, "fn", "3", "stream", 128, restore=True) == (
        f"RESTORE_START Runtime Version: python:3.11.7\tRuntime Version ARN: {arn}")
    assert TEXT.init_done(0.2) == []  # Text: a successful init's duration is on REPORT
    assert TEXT.init_done(0.0031, restore=True) == ["RESTORE_REPORT Restore Duration: 3.10 ms"]
    assert TEXT.restore_report(1.23604, status="error", error_type="Runtime.ExitError") == (
        "RESTORE_REPORT Restore Duration: 1236.04 ms\tStatus: error\tError Type: Runtime.ExitError")
    log = platform(log_format="JSON", system_log_level="DEBUG")
    started = parsed(log.init_start("nodejs:20.20.2", arn, "fn", "$LATEST", "2026/12/07/[$LATEST]ab", 256,
                                    initialization_type="provisioned-concurrency"))
    assert started["type"] == "platform.initStart"
    assert started["record"] == {
        "initializationType": "provisioned-concurrency", "phase": "init", "runtimeVersion": "nodejs:20.20.2",
        "runtimeVersionArn": arn, "functionName": "fn", "functionVersion": "$LATEST",
        "instanceId": "2026/12/07/[$LATEST]ab", "instanceMaxMemory": 268435456}
    restore = parsed(log.init_start("python:3.11.7", arn, "fn", "3", "s", 128, restore=True))
    assert restore["type"] == "platform.restoreStart"
    assert "initializationType" not in restore["record"]
    done, report = (parsed(line) for line in log.init_done(0.2))
    assert (done["type"], report["type"]) == ("platform.initRuntimeDone", "platform.initReport")
    assert report["record"] == {"initializationType": "on-demand", "phase": "init", "status": "success",
                                "metrics": {"durationMs": 200.0}}
    failed = parsed(log.restore_report(0.5, status="error", error_type="Runtime.ExitError"))
    assert failed["record"] == {"status": "error", "errorType": "Runtime.ExitError",
                                "metrics": {"durationMs": 500.0}}
    # at the default INFO only what Lambda writes at INFO: initStart; restoreReport
    info = platform(log_format="JSON")
    assert info.init_done(0.2) == []
    assert [parsed(line)["type"] for line in info.init_done(0.2, restore=True)] == ["platform.restoreReport"]
    warn = platform(log_format="JSON", system_log_level="WARN")
    assert warn.init_start("python:3.11.7", arn, "fn", "$LATEST", "s", 128) is None


def test_json_start_and_report() -> None:
    log = platform(log_format="JSON")
    start = parsed(log.start(RID))
    assert start["type"] == "platform.start"
    assert start["record"] == {"requestId": RID, "version": "$LATEST"}
    report = parsed(log.report(RID, 0.0123, 256, 40, 0.2))
    assert report["type"] == "platform.report"
    assert report["record"] == {
        "requestId": RID, "status": "success",
        "metrics": {"durationMs": 12.3, "billedDurationMs": 213, "memorySizeMB": 256, "maxMemoryUsedMB": 40,
                    "initDurationMs": 200.0},
    }
    warm = parsed(log.report(RID, 0.0004, 256, 40, None))
    assert warm["record"]["metrics"] == {  # type: ignore[index]
        "durationMs": 0.4, "billedDurationMs": 1, "memorySizeMB": 256, "maxMemoryUsedMB": 40}


def test_json_report_of_failures_and_restores() -> None:
    log = platform(log_format="JSON")
    timeout = parsed(log.report(RID, 3.0, 128, 40, None, "timeout"))["record"]
    assert timeout["status"] == "timeout"
    assert "errorType" not in timeout
    died = parsed(log.report(RID, 0.1, 128, 40, None, "error", "Runtime.ExitError"))["record"]
    assert died["status"] == "error"
    assert died["errorType"] == "Runtime.ExitError"
    raised = parsed(log.report(RID, 0.1, 128, 40, None, function_error="ValueError"))["record"]
    assert raised["status"] == "error"
    assert raised["errorType"] == "ValueError"
    restored = parsed(log.report(RID, 0.1, 128, 40, RestoreDuration(0.0301)))["record"]
    assert restored["metrics"]["restoreDurationMs"] == 30.1  # type: ignore[index]
    assert restored["metrics"]["billedRestoreDurationMs"] == 31  # type: ignore[index]
    assert "initDurationMs" not in restored["metrics"]  # type: ignore[index]
    assert restored["metrics"]["billedDurationMs"] == 100  # type: ignore[index]  # the restore is billed apart


def test_system_log_level_filters_platform_records() -> None:
    info = platform(log_format="JSON")
    assert info.end(RID, 0.01, None) is None  # runtimeDone is DEBUG
    debug = platform(log_format="JSON", system_log_level="DEBUG")
    done = parsed(debug.end(RID, 0.0125, None, function_error="TypeError"))
    assert done["type"] == "platform.runtimeDone"
    assert done["record"] == {"requestId": RID, "status": "error", "errorType": "TypeError",
                              "metrics": {"durationMs": 12.5}}
    assert debug.start(RID) is not None
    assert debug.report(RID, 0.01, 128, 1, None) is not None
    warn = platform(log_format="JSON", system_log_level="WARN")
    assert warn.start(RID) is None
    assert warn.end(RID, 0.01, None) is None
    assert warn.report(RID, 0.01, 128, 1, None) is None


@pytest.mark.parametrize(("level", "kept"), [
    ("TRACE", {"trace", "debug", "info", "warning", "warn", "error", "critical", "fatal", "bogus", "plain"}),
    ("DEBUG", {"debug", "info", "warning", "warn", "error", "critical", "fatal", "bogus", "plain"}),
    ("INFO", {"info", "warning", "warn", "error", "critical", "fatal", "bogus", "plain"}),
    ("WARN", {"warning", "warn", "error", "critical", "fatal", "plain"}),
    ("ERROR", {"error", "critical", "fatal", "plain"}),
    ("FATAL", {"critical", "fatal", "plain"}),
])
def test_application_level_drops_json_lines_below_it(level: str, kept: set[str]) -> None:
    log = platform(log_format="JSON", application_log_level=level)
    lines = {name: json.dumps({"level": name.upper(), "message": name})
             for name in ("trace", "debug", "info", "warning", "warn", "error", "critical", "fatal", "bogus")}
    # an unknown level is INFO; a line that is not a JSON object is kept at every level
    lines["plain"] = "just text"
    keep = log.keep
    if level == "TRACE":
        assert keep is None  # nothing is below TRACE: no per-line work
        return
    assert keep is not None
    assert {name for name, line in lines.items() if keep(line)} == kept
    assert keep('{"message": "no level"}') == (level in {"DEBUG", "INFO"})
    assert keep('{"level": "DEBUG", broken') == (level in {"DEBUG", "INFO"})  # not JSON: INFO
    assert keep('{"level": 10}') == (level in {"DEBUG", "INFO"})


def test_application_level_defaults_to_info_in_json_and_is_none_in_text() -> None:
    assert application_level(FunctionLoggingConfig()) is None
    assert application_level(FunctionLoggingConfig(log_format="JSON")) == "INFO"
    errors_only = FunctionLoggingConfig(log_format="JSON", application_log_level="ERROR")
    assert application_level(errors_only) == "ERROR"
    keep = platform(log_format="JSON").keep
    assert keep is not None
    assert keep(json.dumps({"level": "DEBUG"})) is False
    assert keep(json.dumps({"level": "INFO"})) is True


def test_lines_at_info_and_above_are_kept_whatever_they_say() -> None:
    keep = platform(log_format="JSON", application_log_level="INFO").keep
    assert keep is not None
    assert keep('{"level": "INFO", "message": "debug"}') is True  # "debug" in the text, not the level
    assert keep('{"message": {"level": "debug"}, "level": "ERROR"}') is True
    assert keep('{"level": "debug", "message": "x"}') is False
    assert keep('{"level":"Trace"}') is False
