"""`router invoke` and `router validate` with Node.js functions, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.router_process import ROOT, RouterFactory, http
from tests.unit.runtime.node_support import FIXTURES, NODE_MAJOR, NODE_RUNTIME, require_node


@pytest.fixture(autouse=True)
def _node() -> None:
    require_node()


def router(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "router", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=full_env)


def write_config(tmp_path: Path, runtime: str = NODE_RUNTIME) -> Path:
    config = tmp_path / "router.yaml"
    config.write_text(
        "version: 1\n"
        "functions:\n"
        "  greet:\n"
        f"    runtime: {runtime}\n"
        "    handler: src/api/index.handler\n"
        f"    code: {FIXTURES / 'node_esm'}\n"
        "  broken:\n"
        f"    runtime: {runtime}\n"
        "    handler: index.throws\n"
        f"    code: {FIXTURES / 'node_basic'}\n"
        "  chatty:\n"
        f"    runtime: {runtime}\n"
        "    handler: index.logs\n"
        f"    code: {FIXTURES / 'node_basic'}\n"
    )
    return config


def test_invoke_prints_the_result_and_the_logs(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"value": 42}))
    done = router("invoke", "-c", str(config), "greet", "--event", str(event))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"kind": "sub-folder", "helped": "helped 42"}
    assert "START RequestId: " in done.stderr
    assert "REPORT RequestId: " in done.stderr
    assert "Init Duration: " in done.stderr


def test_invoke_of_a_failing_function_exits_1_with_lambdas_error(tmp_path: Path) -> None:
    done = router("invoke", "-c", str(write_config(tmp_path)), "broken")
    assert done.returncode == 1
    error = json.loads(done.stdout)
    assert (error["errorType"], error["errorMessage"]) == ("TypeError", "bad thing happened")
    assert "Invoke Error" in done.stderr


def test_invoke_shows_the_functions_console_lines(tmp_path: Path) -> None:
    done = router("invoke", "-c", str(write_config(tmp_path)), "chatty")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == "logged"
    assert "\tWARN\twarn line" in done.stderr
    assert "raw stderr" in done.stderr


def test_validate_refuses_a_runtime_whose_node_is_missing(tmp_path: Path) -> None:
    assert NODE_MAJOR is not None
    other = f"nodejs{NODE_MAJOR + 2}.x"
    config = write_config(tmp_path, runtime=other)
    done = router("validate", str(config))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert any(line.startswith(f"{config}:4:14: functions.greet.runtime: runtime {other} needs node "
                               f"{NODE_MAJOR + 2} on PATH, got v{NODE_MAJOR}.") for line in lines), lines
    assert any(f"install Node.js {NODE_MAJOR + 2} or set runtime: {NODE_RUNTIME}" in line for line in lines)


def test_a_node_webhook_route_and_the_invoke_api(router_factory: RouterFactory, tmp_path: Path) -> None:
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          echo:
            runtime: {NODE_RUNTIME}
            handler: index.echo
            code: {FIXTURES / 'node_basic'}
          hang:
            runtime: {NODE_RUNTIME}
            handler: index.hangs
            code: {FIXTURES / 'node_basic'}
            timeout: 1s
        routes:
          - name: echo
            source: {{type: webhook, path: /echo, methods: [POST]}}
            function: echo
    """)
    status, _, body = http("POST", rp.url + "/echo?x=1", b'{"a": 1}')
    assert status == 200, body
    event = json.loads(body)
    assert event["rawQueryString"] == "x=1"
    assert event["body"] == '{"a": 1}'
    status, headers, body = http("POST", rp.url + "/2015-03-31/functions/hang/invocations", b"{}")
    assert status == 200
    assert headers["x-amz-function-error"] == "Unhandled"
    assert json.loads(body)["errorType"] == "Sandbox.Timedout"
    status, _, body = http("POST", rp.url + "/echo", b'{"after": "timeout"}')
    assert status == 200, body  # the router goes on serving
    rp.stop()
