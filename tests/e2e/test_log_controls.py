"""`router run` with functions.NAME.logging (Lambda's logging controls): the exact lines the router prints
for Python and Node functions in Text and JSON at levels, the tail the Invoke API returns (LogType: Tail),
AWS_LAMBDA_LOG_FORMAT/LEVEL as the handlers see them, Powertools' loggers under a log level, and a level
with Text format refused with file:line."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_node_npm import npm_function  # noqa: F401  (the session's npm install, shared)
from tests.router_process import RouterFactory, http, router
from tests.unavailable import unavailable
from tests.unit.runtime.node_support import FIXTURES, NODE_RUNTIME, require_node
from tests.waiting import until_sync

PYTHON_RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"


def function_lines(rp: Any, function: str, request_id: str | None) -> list[str]:
    return [r["message"] for r in rp.log_records()
            if r.get("logger") == "router.function" and r.get("function") == function
            and r.get("request_id") == request_id]


def init_lines(rp: Any, function: str) -> list[str]:
    """The lines of the function's one cold start: logged without a request id, and heading the tail of
    the invocation that waited on it (INIT_START, the init's output, what closed the init)."""
    return function_lines(rp, function, None)


def invoke(rp: Any, function: str, event: Any) -> tuple[Any, list[str], str]:
    """Invoke with LogType Tail; the payload, the tail's lines and the request id."""
    status, headers, body = http("POST", f"{rp.url}/2015-03-31/functions/{function}/invocations",
                                 json.dumps(event).encode(), {"X-Amz-Log-Type": "Tail"})
    assert status == 200, body
    tail = base64.b64decode(headers["x-amz-log-result"]).decode().split("\n")
    return json.loads(body), tail, headers["x-amzn-requestid"]


def printed(rp: Any, function: str, request_id: str, count: int) -> list[str]:
    """The invocation's lines in the router's log, once all ``count`` are there."""
    return until_sync(lambda: (lines := function_lines(rp, function, request_id)) and len(lines) >= count
                      and lines, deadline=20, what=f"{count} log lines of {function}")


def test_python_and_node_in_text_and_json(router_factory: RouterFactory, tmp_path: Path) -> None:
    require_node()
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          py-text:
            runtime: {PYTHON_RUNTIME}
            handler: app.handler
            code: {FIXTURES / 'log_levels'}
          py-json:
            runtime: {PYTHON_RUNTIME}
            handler: app.handler
            code: {FIXTURES / 'log_levels'}
            logging: {{log_format: JSON, application_log_level: WARN, system_log_level: DEBUG}}
          node-json:
            runtime: {NODE_RUNTIME}
            handler: index.handler
            code: {FIXTURES / 'node_log_levels'}
            logging: {{log_format: JSON, application_log_level: DEBUG}}
    """)
    # Text: today's lines
    payload, tail, rid = invoke(rp, "py-text", {})
    assert payload == {"format": None, "level": None, "root_level": "WARNING"}
    lines = printed(rp, "py-text", rid, 8)
    init = init_lines(rp, "py-text")
    assert tail == init + lines
    assert init[0].startswith("INIT_START Runtime Version: python:")
    assert lines[0] == f"START RequestId: {rid} Version: $LATEST"
    assert lines[-2] == f"END RequestId: {rid}"
    assert lines[-1].startswith(f"REPORT RequestId: {rid}\tDuration: ")

    # Python, JSON at WARN, system DEBUG
    payload, tail, rid = invoke(rp, "py-json", {})
    assert payload == {"format": "JSON", "level": "WARN", "root_level": "WARNING"}
    lines = printed(rp, "py-json", rid, 7)
    init = init_lines(rp, "py-json")
    assert tail == init + lines
    assert [json.loads(line)["type"] for line in init] == [
        "platform.initStart", "platform.initRuntimeDone", "platform.initReport"]  # system_log_level DEBUG
    assert lines[3] == "plain print"
    parsed = [json.loads(line) for line in lines if line != "plain print"]
    assert [r.get("type") or (r["level"], r["message"]) for r in parsed] == [
        "platform.start", ("WARNING", "warning record"), ("ERROR", "error record"),
        ("ERROR", "own json error"), "platform.runtimeDone", "platform.report"]
    assert parsed[1]["requestId"] == rid
    assert parsed[1]["logger"] == "root"
    # the invocation history keeps the same lines (its tail of the logs)
    def recorded() -> Any:
        status, _, body = http("GET", f"{rp.url}/invocations/{rid}")
        return status == 200 and json.loads(body).get("logs") and json.loads(body)

    history = until_sync(recorded, deadline=20, what="the invocation in the history")
    assert history["logs"].split("\n") == init + lines
    report = parsed[-1]["record"]
    assert report["requestId"] == rid
    assert report["status"] == "success"
    assert report["metrics"]["memorySizeMB"] == 128
    assert "initDurationMs" in report["metrics"]

    # Node, JSON at DEBUG: console.trace dropped, the handler's own DEBUG JSON line kept
    payload, tail, rid = invoke(rp, "node-json", {})
    assert payload == {"format": "JSON", "level": "DEBUG"}
    lines = printed(rp, "node-json", rid, 9)
    init = init_lines(rp, "node-json")
    assert [json.loads(line)["type"] for line in init] == ["platform.initStart"]  # system_log_level INFO
    assert tail == init + lines
    assert lines[-2] == "plain write"
    parsed = [json.loads(line) for line in lines[:-2] + lines[-1:]]
    assert [r.get("type") or r["level"] for r in parsed] == [
        "platform.start", "DEBUG", "INFO", "INFO", "WARN", "ERROR", "DEBUG", "platform.report"]
    assert all(r["requestId"] == rid for r in parsed[1:6])
    assert parsed[-2] == {"level": "DEBUG", "message": "own json debug"}
    rp.stop()


def test_a_level_with_text_format_is_refused_with_file_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "version: 1\n"
        "functions:\n"
        "  api:\n"
        f"    runtime: {PYTHON_RUNTIME}\n"
        "    handler: app.handler\n"
        "    code: .\n"
        "    logging:\n"
        "      application_log_level: DEBUG\n"
    )
    v = router("validate", str(cfg))
    assert v.returncode == 1, v.stdout
    assert v.stderr.strip().splitlines() == [
        f"{cfg}:8:7: functions.api.logging: application_log_level need log_format: JSON (Lambda filters "
        "log levels only in JSON format), got log_format: Text; add log_format: JSON or remove the level"]
    r = router("run", "--config", str(cfg))
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == v.stderr.strip().splitlines()


@pytest.fixture(scope="session")
def powertools_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A function code directory with aws-lambda-powertools installed into it (once per session)."""
    target = tmp_path_factory.mktemp("powertools") / "code"
    target.mkdir()
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "--target", str(target), "aws-lambda-powertools"],
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        unavailable(f"pip install aws-lambda-powertools failed (exit {done.returncode}): "
                    f"{done.stderr[-1000:]}")
    (target / "app.py").write_text(
        "from aws_lambda_powertools import Logger\n"
        "logger = Logger(service='orders')\n"
        "def handler(event, context):\n"
        "    logger.debug('powertools debug')\n"
        "    logger.info('powertools info')\n"
        "    logger.warning('powertools warning')\n"
        "    return {'level': logger.log_level}\n")
    return target


def test_powertools_python_logger_honours_the_application_level(
        router_factory: RouterFactory, tmp_path: Path, powertools_code: Path) -> None:
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          orders:
            runtime: {PYTHON_RUNTIME}
            handler: app.handler
            code: {powertools_code}
            timeout: 10s
            logging: {{log_format: JSON, application_log_level: INFO, system_log_level: WARN}}
    """)
    payload, tail, rid = invoke(rp, "orders", {})
    assert payload == {"level": 20}  # INFO, from AWS_LAMBDA_LOG_LEVEL
    lines = printed(rp, "orders", rid, 2)
    assert lines == tail
    records = [json.loads(line) for line in lines]
    assert [(r["level"], r["message"]) for r in records] == [
        ("INFO", "powertools info"), ("WARNING", "powertools warning")]
    assert all(r["service"] == "orders" for r in records)
    rp.stop()


def test_powertools_node_logger_honours_the_application_level(
        router_factory: RouterFactory, tmp_path: Path, npm_function: Path) -> None:  # noqa: F811
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          orders:
            runtime: {NODE_RUNTIME}
            handler: logger.handler
            code: {npm_function}
            memory: 256
            logging: {{log_format: JSON, application_log_level: WARN}}
          chatty:
            runtime: {NODE_RUNTIME}
            handler: logger.handler
            code: {npm_function}
            memory: 256
            logging: {{log_format: JSON, application_log_level: INFO}}
    """)
    _, quiet, _ = invoke(rp, "orders", {"orderId": "o-1"})
    _, chatty, _ = invoke(rp, "chatty", {"orderId": "o-2"})
    assert not any("order received" in line for line in quiet), quiet  # INFO below WARN: dropped
    found = [json.loads(line) for line in chatty if "order received" in line]
    assert len(found) == 1
    assert found[0]["level"] == "INFO"
    assert found[0]["orderId"] == "o-2"
    rp.stop()
