"""The platform's log lines of an init that fails or times out, as Lambda writes them: the init's own
output, ``INIT_REPORT ... Phase: invoke  Status: error  Error Type: ...``, then the waiting invocation's
START, END and a REPORT whose Duration includes the failed init (Text and JSON, Python and ``provided``,
on demand and provisioned)."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import pytest

from router.invocation import Outcome
from router.invokers.local import LocalInvoker
from router.runtime import environment
from tests.waiting import until

from .conftest import MakeInvoker, invocation

INIT_REPORT = re.compile(
    r"INIT_REPORT Init Duration: (?P<init>\d+\.\d\d) ms\tPhase: (?P<phase>\w+)\tStatus: (?P<status>\w+)"
    r"(?:\tError Type: (?P<error>\S+))?")
REPORT = re.compile(
    r"REPORT RequestId: (?P<rid>\S+)\tDuration: (?P<duration>\d+\.\d\d) ms"
    r"\tBilled Duration: (?P<billed>\d+) ms"
    r"\tMemory Size: (?P<memory>\d+) MB\tMax Memory Used: (?P<max>\d+) MB\tStatus: (?P<status>\w+)"
    r"(?:\tError Type: (?P<error>\S+))?")


def platform_lines(logs: str) -> list[str]:
    return [line for line in logs.splitlines() if line.startswith(("INIT_REPORT", "START", "END", "REPORT"))]


def check_text_lines(logs: str, request_id: str, status: str, error_type: str | None) -> re.Match[str]:
    """The four platform lines in Lambda's order and shape; returns REPORT's match."""
    init_report, start, end, report = platform_lines(logs)
    init = INIT_REPORT.fullmatch(init_report)
    assert init is not None, init_report
    assert (init["phase"], init["status"], init["error"]) == ("invoke", status, error_type)
    assert start == f"START RequestId: {request_id} Version: $LATEST"
    assert end == f"END RequestId: {request_id}"
    matched = REPORT.fullmatch(report)
    assert matched is not None, report
    assert (matched["rid"], matched["status"], matched["error"]) == (request_id, status, error_type)
    # Duration includes the failed init (no Init Duration field); billed is it rounded up
    assert "Init Duration" not in report
    assert float(matched["duration"]) >= float(init["init"]) - 0.01  # each rounded to 1/100 ms
    # (Duration is printed rounded to 1/100 ms, Billed is the exact time rounded up: 18.003 ms bills 19)
    assert math.ceil(float(matched["duration"]) - 0.005) <= int(matched["billed"]) <= max(
        1, math.ceil(float(matched["duration"]) + 0.005))
    return matched


async def test_a_python_import_error_logs_init_report_and_the_invocations_lines(
        make_invoker: MakeInvoker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="router.function")
    invoker = await make_invoker("init_error", memory=256)
    for _ in range(2):  # each cold start fails alike
        event = invocation()
        result = await invoker.invoke(event)
        assert json.loads(result.payload)["errorType"] == "Runtime.ImportModuleError"
        report = check_text_lines(result.logs, event.request_id, "error", "Runtime.ImportModuleError")
        assert report["memory"] == "256"
        assert int(report["max"]) > 0  # read before the environment was killed
        # the init's own output comes first
        lines = result.logs.splitlines()
        traceback = next(
            i for i, line in enumerate(lines) if line.startswith("[ERROR] Runtime.ImportModuleError"))
        assert traceback < lines.index(platform_lines(result.logs)[0])
    # the same lines reach the function's log, START/END/REPORT with the request id
    logged = [(r.getMessage(), getattr(r, "request_id", None)) for r in caplog.records if
              r.name == "router.function" and r.getMessage().startswith(("INIT_REPORT", "START", "REPORT"))]
    assert [m.split(" ", 1)[0] for m, _ in logged] == ["INIT_REPORT", "START", "REPORT"] * 2
    assert logged[0][1] is None  # INIT_REPORT: no request id, as on Lambda
    assert logged[1][1] is not None


async def test_a_json_format_function_gets_platform_init_report(make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("init_error", logging={"log_format": "JSON", "system_log_level": "DEBUG"})
    event = invocation()
    result = await invoker.invoke(event)
    records: list[dict[str, Any]] = [
        json.loads(line) for line in result.logs.splitlines()
        if line.startswith('{"time"') and '"type":"platform.' in line.replace(" ", "")]
    assert [r["type"] for r in records] == [
        "platform.initStart", "platform.initReport", "platform.start", "platform.runtimeDone",
        "platform.report"]
    started, init, _, done, report = (r["record"] for r in records)
    assert (started["functionName"], started["phase"], started["initializationType"]) == (
        "init_error", "init", "on-demand")
    assert {k: v for k, v in init.items() if k != "metrics"} == {
        "initializationType": "on-demand", "phase": "invoke", "status": "error",
        "errorType": "Runtime.ImportModuleError"}
    assert init["metrics"]["durationMs"] > 0
    for record in (done, report):
        assert (record["requestId"], record["status"], record["errorType"]) == (
            event.request_id, "error", "Runtime.ImportModuleError")
    assert "initDurationMs" not in report["metrics"]
    # the same span printed to 2 places vs 3: 46.795 (3 places) of 46.79499.. ms is 46.79 at 2 places
    assert report["metrics"]["durationMs"] >= init["metrics"]["durationMs"] - 0.01
    duration = report["metrics"]["durationMs"]  # rounded to 1/100 ms; billed is the exact time rounded up
    assert math.ceil(duration - 0.005) <= report["metrics"]["billedDurationMs"] <= max(
        1, math.ceil(duration + 0.005))


async def test_a_provided_bootstrap_that_exits_at_init(make_invoker: MakeInvoker, tmp_path: Path) -> None:
    bootstrap = tmp_path / "bootstrap"
    bootstrap.write_text("#!/bin/sh\necho 'cannot start: missing config' >&2\nexit 3\n")
    bootstrap.chmod(0o755)
    invoker = await make_invoker(str(tmp_path), name="exits_at_init", runtime="provided")
    event = invocation()
    result = await invoker.invoke(event)
    error = json.loads(result.payload)
    assert error["errorType"] == "Runtime.ExitError"
    assert error["errorMessage"] == (
        f"RequestId: {event.request_id} Error: Runtime exited with error: exit status 3")
    check_text_lines(result.logs, event.request_id, "error", "Runtime.ExitError")
    assert result.logs.splitlines()[0].startswith(
        "INIT_START Runtime Version: provided\tRuntime Version ARN: ")
    assert result.logs.splitlines()[1] == "cannot start: missing config"


async def test_an_init_timeout_says_status_timeout_and_the_time_limit(
        make_invoker: MakeInvoker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(environment, "INIT_TIMEOUT", 0.5)  # the init phase's limit (Lambda: 10 s)
    (tmp_path / "app.py").write_text("import time\nprint('initialising', flush=True)\ntime.sleep(60)\n\n"
                                     "def handler(event, context):\n    return 1\n")
    invoker = await make_invoker(str(tmp_path), name="slow_init", timeout=0.5)
    event = invocation()
    result = await invoker.invoke(event)
    assert result.outcome is Outcome.TIMEOUT
    assert json.loads(result.payload)["errorMessage"] == (
        f"RequestId: {event.request_id} Error: Init phase timed out after 0.50 seconds")
    report = check_text_lines(result.logs, event.request_id, "timeout", None)
    assert (report["duration"], report["billed"]) == ("500.00", "500")
    assert INIT_REPORT.fullmatch(platform_lines(result.logs)[0])["init"] == "500.00"  # type: ignore[index]
    assert "initialising" in result.logs


async def test_a_provisioned_environment_that_fails_logs_phase_init_alone(
        make_invoker: MakeInvoker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="router.function")

    def reports() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == "router.function" and r.getMessage().startswith(("INIT_REPORT", "START"))]

    await make_invoker("init_error", provisioned=1)
    await until(lambda: bool(reports()), what="the provisioned environment's INIT_REPORT")
    line = reports()[0]
    matched = INIT_REPORT.fullmatch(line)
    assert matched is not None, line
    assert (matched["phase"], matched["status"], matched["error"]) == (
        "init", "error", "Runtime.ImportModuleError")
    assert not [m for m in reports() if m.startswith("START")]  # no invocation waited on it


SLOW_INIT = '''import os, time
time.sleep(float(os.environ["INIT_SECONDS"]))


def handler(event, context):
    remaining = context.get_remaining_time_in_millis()
    time.sleep(event.get("sleep", 0))
    return {"remaining": remaining}
'''


async def slow_init(make_invoker: MakeInvoker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str,
                    *, function_timeout: float, init_seconds: float) -> LocalInvoker:
    """A function whose init sleeps ``init_seconds``, with Lambda's 10 s init phase shortened to 0.3 s."""
    monkeypatch.setattr(environment, "INIT_TIMEOUT", 0.3)
    (tmp_path / "app.py").write_text(SLOW_INIT)
    return await make_invoker(str(tmp_path), name=name, timeout=function_timeout,
                              environment={"INIT_SECONDS": str(init_seconds)})


async def test_an_init_past_the_init_phase_spends_the_invocations_time(
        make_invoker: MakeInvoker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Lambda ends the init phase at 10 s (here 0.3 s) and runs the init again inside the invoke phase,
    under the function's timeout: the cold invocation's time limit, Duration and Billed Duration include
    it, its REPORT has no Init Duration, and the log says the init phase timed out."""
    caplog.set_level(logging.INFO, logger="router.function")
    invoker = await slow_init(make_invoker, tmp_path, monkeypatch, "slow_init", function_timeout=1.5,
                              init_seconds=0.6)
    cold = invocation({})
    result = await invoker.invoke(cold)
    assert result.ok, result.payload
    assert json.loads(result.payload)["remaining"] <= 900  # 1.5 s less the 0.6 s init, not 1.5 s
    report = result.logs.splitlines()[-1]
    matched = re.fullmatch(r"REPORT RequestId: \S+\tDuration: (\d+\.\d\d) ms\tBilled Duration: (\d+) ms"
                           r"\tMemory Size: 128 MB\tMax Memory Used: \d+ MB", report)
    assert matched is not None, report  # no Init Duration: the init is in Duration
    assert float(matched[1]) >= 600
    assert math.ceil(float(matched[1]) - 0.005) <= int(matched[2]) <= math.ceil(float(matched[1]) + 0.005)
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("INIT_REPORT")] == [
        "INIT_REPORT Init Duration: 300.00 ms\tPhase: init\tStatus: timeout"]
    warm = await invoker.invoke(invocation({}))  # the next invocation has its whole time limit again
    assert json.loads(warm.payload)["remaining"] > 1000  # (not <= 900; 500 ms of slack for a busy host)

    # the init and the handler together past the time limit: the invocation times out
    second = await slow_init(make_invoker, tmp_path, monkeypatch, "slow_init_timeout", function_timeout=1.5,
                             init_seconds=0.6)
    late = invocation({"sleep": 1.2})
    timed_out = await second.invoke(late)
    assert timed_out.outcome is Outcome.TIMEOUT
    assert json.loads(timed_out.payload)["errorMessage"] == (
        f"RequestId: {late.request_id} Error: Task timed out after 1.50 seconds")
    assert timed_out.logs.splitlines()[-1].startswith(
        f"REPORT RequestId: {late.request_id}\tDuration: 1500.00 ms\tBilled Duration: 1500 ms\t")


async def test_an_init_past_the_function_timeout_is_a_task_timeout(
        make_invoker: MakeInvoker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the init phase (10 s, here 0.3 s) the init runs in the invoke phase: running past the function's
    timeout too, the invocation's task timed out, as Lambda words it (`Task timed out after 45.05 seconds`
    after `INIT_REPORT ... Phase: init Status: timeout`)."""
    invoker = await slow_init(make_invoker, tmp_path, monkeypatch, "slower_init", function_timeout=0.8,
                              init_seconds=30)
    event = invocation({})
    result = await invoker.invoke(event)
    assert result.outcome is Outcome.TIMEOUT
    assert json.loads(result.payload)["errorMessage"] == (
        f"RequestId: {event.request_id} Error: Task timed out after 0.80 seconds")
    lines = result.logs.splitlines()
    assert lines.pop(0).startswith("INIT_START Runtime Version: python:")
    assert lines[:3] == [
        "INIT_REPORT Init Duration: 300.00 ms\tPhase: init\tStatus: timeout",
        "INIT_REPORT Init Duration: 800.00 ms\tPhase: invoke\tStatus: timeout",
        f"START RequestId: {event.request_id} Version: $LATEST"]
    assert re.fullmatch(rf"\S+Z {event.request_id} Task timed out after 0\.80 seconds", lines[3]), lines[3]
    assert lines[4] == f"END RequestId: {event.request_id}"
    assert lines[5].startswith(
        f"REPORT RequestId: {event.request_id}\tDuration: 800.00 ms\tBilled Duration: 800 ms")
    assert lines[5].endswith("\tStatus: timeout")
