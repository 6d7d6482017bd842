"""The init phase's platform lines of a cold start that succeeded, with real worker processes: INIT_START
(RESTORE_START and RESTORE_REPORT for a snap_start restore) in the function's log once per environment,
and at the head of the tail (``Result.logs``) of the invocation that waited on the cold start, as
Lambda's; JSON's ``platform.initStart`` at INFO, ``platform.initRuntimeDone`` and the successful
``platform.initReport`` at DEBUG."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from router.runtime.launch import runtime_version
from tests.waiting import until

from .conftest import PYTHON_RUNTIME, MakeInvoker, invocation

INIT_START = re.compile(
    r"(?P<kind>INIT_START|RESTORE_START) Runtime Version: (?P<version>\S+)\tRuntime Version ARN: "
    r"arn:aws:lambda:us-east-1::runtime:(?P<digest>[0-9a-f]{64})")


def platform(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines if line.startswith('{"time"') and '"type":"platform.' in line]


def logged(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str | None]]:
    return [(r.getMessage(), getattr(r, "request_id", None)) for r in caplog.records
            if r.name == "router.function"]


async def test_text_init_start_heads_the_cold_invocations_tail_only(
        make_invoker: MakeInvoker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="router.function")
    invoker = await make_invoker("output")
    cold, warm = invocation(), invocation()
    first = await invoker.invoke(cold)
    second = await invoker.invoke(warm)
    lines = first.logs.splitlines()
    matched = INIT_START.fullmatch(lines[0])
    assert matched is not None, lines[0]
    assert matched["kind"] == "INIT_START"
    # the interpreter that runs it, the family first as in Lambda's python:3.11.v29
    assert re.fullmatch(r"python:\d+\.\d+\.\d+", matched["version"]), matched["version"]
    assert matched["version"].startswith(f"python:{PYTHON_RUNTIME.removeprefix('python')}.")
    assert lines[1] == "init output"  # the init's output, before START
    assert lines[2] == f"START RequestId: {cold.request_id} Version: $LATEST"
    assert "Init Duration" in lines[-1]  # Text: a successful init's duration is on REPORT, no INIT_REPORT
    assert not [line for line in lines if line.startswith("INIT_REPORT")]
    # the warm invocation: its own lines
    assert second.logs.splitlines()[0] == f"START RequestId: {warm.request_id} Version: $LATEST"
    assert "INIT_START" not in second.logs
    # the function's log: INIT_START once, with no request id, before the init's output
    messages = logged(caplog)
    starts = [(m, rid) for m, rid in messages if m.startswith("INIT_START")]
    assert starts == [(lines[0], None)]
    assert messages.index(starts[0]) < messages.index(("init output", None))


def test_the_runtime_version_names_what_runs() -> None:
    name, arn = runtime_version("python3.11", "3.11.7", "eu-west-1")
    assert name == "python:3.11.7"
    assert re.fullmatch(r"arn:aws:lambda:eu-west-1::runtime:[0-9a-f]{64}", arn)
    assert runtime_version("python3.11", "3.11.7", "eu-west-1") == (name, arn)  # stable
    assert runtime_version("python3.11", "3.11.8", "eu-west-1")[1] != arn  # another build, another ARN
    assert runtime_version("python3.12", "", "us-east-1")[0] == "python:3.12"  # a python3.12 on PATH
    assert runtime_version("nodejs20.x", "v20.20.2", "us-east-1")[0] == "nodejs:20.20.2"
    assert runtime_version("provided", "", "us-east-1")[0] == "provided"


@pytest.mark.parametrize(("level", "expected"), [
    ("INFO", ["platform.initStart", "platform.start", "platform.report"]),
    ("DEBUG", ["platform.initStart", "platform.initRuntimeDone", "platform.initReport", "platform.start",
               "platform.runtimeDone", "platform.report"]),
    ("WARN", []),
])
async def test_json_init_records_at_each_system_level(
        make_invoker: MakeInvoker, level: str, expected: list[str]) -> None:
    invoker = await make_invoker("output", name=f"json-{level.lower()}", memory=256,
                                 logging={"log_format": "JSON", "system_log_level": level})
    event = invocation()
    result = await invoker.invoke(event)
    records = platform(result.logs.splitlines())
    assert [r["type"] for r in records] == expected
    if level == "WARN":
        return
    started = records[0]["record"]
    assert re.fullmatch(r"python:\d+\.\d+\.\d+", started.pop("runtimeVersion"))
    assert re.fullmatch(r"arn:aws:lambda:us-east-1::runtime:[0-9a-f]{64}", started.pop("runtimeVersionArn"))
    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", started.pop("instanceId"))
    assert started == {"initializationType": "on-demand", "phase": "init",
                       "functionName": f"json-{level.lower()}", "functionVersion": "$LATEST",
                       "instanceMaxMemory": 256 * 1024 * 1024}
    # the init's output comes between initStart and what closes the init
    lines = result.logs.splitlines()
    assert lines.index("init output") == 1
    if level == "DEBUG":
        done, report = records[1]["record"], records[2]["record"]
        assert done == {"initializationType": "on-demand", "phase": "init", "status": "success"}
        assert {k: v for k, v in report.items() if k != "metrics"} == done
        # the same init as the platform.report's initDurationMs (3 places against 2)
        init_ms = records[-1]["record"]["metrics"]["initDurationMs"]
        assert abs(report["metrics"]["durationMs"] - init_ms) <= 0.01


async def test_a_provisioned_environment_logs_its_init_and_its_first_invocation_does_not(
        make_invoker: MakeInvoker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="router.function")
    invoker = await make_invoker("output", name="provisioned", provisioned=1,
                                 logging={"log_format": "JSON"})
    await until(lambda: any("platform.initStart" in m for m, _ in logged(caplog)),
                what="the provisioned environment's platform.initStart")
    (started,) = [json.loads(m)["record"] for m, _ in logged(caplog) if "platform.initStart" in m]
    assert started["initializationType"] == "provisioned-concurrency"
    result = await invoker.invoke(invocation())
    assert "platform.initStart" not in result.logs  # its init was not this invocation's
    assert "init output" not in result.logs


async def test_a_snap_start_restore_logs_restore_start_and_restore_report(
        make_forked: MakeInvoker, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.INFO, logger="router.function")
    invoker = await make_forked("snap_hooks", snap_start=True, timeout=30,
                                environment={"SNAP_LOG": str(tmp_path / "snap.jsonl")})
    result = await invoker.invoke(invocation({}))
    lines = result.logs.splitlines()
    matched = INIT_START.fullmatch(lines[0])
    assert matched is not None, lines[0]
    assert matched["kind"] == "RESTORE_START"
    restore_report = next(line for line in lines if line.startswith("RESTORE_REPORT"))
    restored = re.fullmatch(r"RESTORE_REPORT Restore Duration: (\d+\.\d\d) ms", restore_report)
    assert restored is not None, restore_report
    # the REPORT line's Restore Duration is the same span
    report = re.search(r"\tRestore Duration: (\d+\.\d\d) ms", lines[-1])
    assert report is not None
    assert report[1] == restored[1]
    assert lines.index(restore_report) < lines.index(next(x for x in lines if x.startswith("START ")))
    # the snapshot's own init, once in the template: INIT_START, then its INIT_REPORT
    messages = [m for m, rid in logged(caplog) if rid is None]
    init_starts = [m for m in messages if m.startswith("INIT_START")]
    assert len(init_starts) == 1
    assert messages.index(init_starts[0]) < messages.index(
        next(m for m in messages if m.startswith("INIT_REPORT")))
