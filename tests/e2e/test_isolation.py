"""A real ``router run`` and its functions: the router's secrets are not readable from a function, and
what a function started ends when the router is SIGKILLed."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.router_process import RouterFactory, RouterProcess, http
from tests.unit.runtime.node_support import NODE_MAJOR, NODE_RUNTIME, require_node
from tests.waiting import process_gone, until_sync

FUNCTIONS = Path(__file__).resolve().parents[1] / "fixtures" / "functions"
SECRET = "s3cr3t-0f-the-r0uter-4c1d"
_CAP_SYS_PTRACE = 19
_PR_CAPBSET_DROP = 24


def _has_cap_sys_ptrace() -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> _CAP_SYS_PTRACE & 1)
    return False


def _without_cap_sys_ptrace() -> None:
    """preexec_fn: drop CAP_SYS_PTRACE from the bounding set, so root loses it at exec (as a container
    started with Docker's or podman's default capabilities has it)."""
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_CAPBSET_DROP, _CAP_SYS_PTRACE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")


def _start(rp: RouterProcess, preexec: Callable[[], None] | None = None) -> RouterProcess:
    """``RouterProcess.start`` with a ``preexec_fn``."""
    rp._log = open(rp.log_path, "ab")  # noqa: SIM115 - closed by stop()
    rp.proc = subprocess.Popen(
        [sys.executable, "-m", "router", "run", "--config", str(rp.config_path)],
        stdout=rp._log, stderr=subprocess.STDOUT, env=rp.env, cwd=str(rp.config_path.parent),
        preexec_fn=preexec,
    )
    rp.wait_ready()
    return rp


@pytest.fixture
def leftovers() -> Iterator[set[int]]:
    pids: set[int] = set()
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


FUNCTION_DEFS = f"""
  probe: {{runtime: python{sys.version_info.major}.{sys.version_info.minor}, handler: app.handler,
           code: {FUNCTIONS / 'probe_proc'}}}
  escape: {{runtime: python{sys.version_info.major}.{sys.version_info.minor}, handler: app.handler,
            code: {FUNCTIONS / 'escape'}, timeout: 30s}}
  escape-exec: {{runtime: python{sys.version_info.major}.{sys.version_info.minor}, handler: app.handler,
                 code: {FUNCTIONS / 'escape'}, timeout: 30s, fork_start: false}}
  escape-provided: {{runtime: provided, handler: app.handler, code: {FUNCTIONS / 'escape'}, timeout: 30s,
                     environment: {{PYTHON: {sys.executable}}}}}
  holder: {{runtime: python{sys.version_info.major}.{sys.version_info.minor}, handler: app.handler,
            code: {FUNCTIONS / 'echo'}, environment: {{API_TOKEN: "${{ISOLATION_SECRET}}"}},
            fork_start: false}}
  holder-snap: {{runtime: python{sys.version_info.major}.{sys.version_info.minor}, handler: app.handler,
                 code: {FUNCTIONS / 'echo'}, environment: {{API_TOKEN: "${{ISOLATION_SECRET}}"}},
                 snap_start: true}}
"""


# Only where node is installed: a nodejs function without node is a config error (require_node() fails
# the Node test under CI=true).
NODE_DEFS = "" if NODE_MAJOR is None else f"""
  escape-node: {{runtime: {NODE_RUNTIME}, handler: index.handler, code: {FUNCTIONS / 'node_escape'},
                 timeout: 30s}}"""
NODE_ROUTES = "" if NODE_MAJOR is None else (
    "  - {name: escape-node, source: {type: webhook, path: /escape-node}, function: escape-node}")


def _config(tmp_path: Path) -> str:
    return f"""
version: 1
server: {{host: 127.0.0.1, port: @PORT@}}
state: sqlite:///{tmp_path / 'state.db'}
functions:
{FUNCTION_DEFS}{NODE_DEFS}
routes:
  - {{name: probe, source: {{type: webhook, path: /probe}}, function: probe}}
  - {{name: escape, source: {{type: webhook, path: /escape}}, function: escape}}
  - {{name: escape-exec, source: {{type: webhook, path: /escape-exec}}, function: escape-exec}}
  - {{name: escape-provided, source: {{type: webhook, path: /escape-provided}}, function: escape-provided}}
{NODE_ROUTES}
"""




def test_a_function_cannot_read_the_routers_secrets_from_proc(router_factory: RouterFactory,
                                                              tmp_path: Path) -> None:
    rp = router_factory(_config(tmp_path), env={"ISOLATION_SECRET": SECRET}, start=False)
    # Root with CAP_SYS_PTRACE reads any process's /proc entries whatever is done; a container's root
    # (Docker's and podman's defaults) and any other user do not have it.
    _start(rp, _without_cap_sys_ptrace if _has_cap_sys_ptrace() else None)
    # Another function was given the secret: its warm worker runs beside the probe.
    for holder in ("holder", "holder-snap"):  # exec'd; forked from a template that ran its init
        status, _, body = http("POST", rp.url + f"/2015-03-31/functions/{holder}/invocations", b"{}")
        assert status == 200, body
    status, _, body = http("POST", rp.url + "/probe", json.dumps({"look_for": SECRET}).encode())
    assert status == 200, body
    probe = json.loads(body)
    assert rp.proc is not None
    assert probe["router_pid"] == rp.proc.pid
    # Not readable (another uid, or the same non-root one), or blanked (root may open it).
    assert probe["router_environ"] in ("PermissionError", "readable, secret absent")
    assert probe["router_mem"] == "PermissionError"  # non-dumpable: nor is its memory
    # Nor from any other process's environ it may read: fork templates, the watchdog, the workers of the
    # functions that have the secret in their environment, the snap_start template that ran the init of
    # one of them (each blanked the block /proc shows).
    assert probe["secret_readable_in"] == []


@pytest.mark.parametrize("function", ["escape", "escape-exec", "escape-provided", "escape-node"])
def test_what_a_function_started_ends_when_the_router_is_sigkilled(
    function: str, router_factory: RouterFactory, leftovers: set[int], tmp_path: Path
) -> None:
    if function == "escape-provided":
        pytest.importorskip("awslambdaric", reason="the provided runtime runs awslambdaric")
    if function == "escape-node":
        require_node()
    rp = router_factory(_config(tmp_path), env={"ISOLATION_SECRET": SECRET})
    event = json.dumps({"daemon": True, "child": True}).encode()
    status, _, body = http("POST", f"{rp.url}/{function}", event)
    assert status == 200, body
    pids = json.loads(body)
    started = [pids["pid"], pids["daemon"], pids["child"]]
    leftovers.update(started)
    assert not any(process_gone(pid) for pid in started)
    rp.kill()  # SIGKILL: no shutdown of the router's own
    until_sync(lambda: all(process_gone(pid) for pid in started), deadline=20,
               what="the worker, its child and its double-forked daemon to end with the router")


@pytest.mark.skipif(os.geteuid() != 0, reason="run_as switches users: only a router running as root can")
@pytest.mark.skipif(not os.access("/usr/bin/python3", os.X_OK),
                    reason="needs /usr/bin/python3, a Python any user may run")
def test_a_root_router_without_cap_sys_ptrace_serves_a_run_as_function(
    router_factory: RouterFactory, tmp_path: Path
) -> None:
    # As in a container with the default capabilities: root, but it may not inspect another user's
    # processes, so the Runtime API recognises the worker by its socket's user.
    rp = router_factory(f"""
version: 1
server: {{host: 127.0.0.1, port: @PORT@}}
state: sqlite:///{tmp_path / 'state.db'}
functions:
  confined: {{runtime: provided, handler: app.handler, code: {FUNCTIONS / 'run_as'}, run_as: nobody,
              timeout: 10s}}
""", start=False)
    _start(rp, _without_cap_sys_ptrace if _has_cap_sys_ptrace() else None)
    status, _, body = http("POST", rp.url + "/2015-03-31/functions/confined/invocations", b"{}")
    assert status == 200, body
    probe = json.loads(body)
    assert "uid" in probe, (probe, rp.logs()[-3000:])
    assert probe["uid"] != 0
    assert probe["parent_environ"] == "PermissionError"
