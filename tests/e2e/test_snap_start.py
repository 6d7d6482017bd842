"""Fork-started and snap_start environments of a real ``router run``: they die with the router."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import sys
import threading
from pathlib import Path

import pytest

from router.runtime.template import fork_supported
from tests.router_process import RouterFactory
from tests.router_process import http as http_call
from tests.waiting import until_sync

FUNCTIONS = Path(__file__).resolve().parents[1] / "fixtures" / "functions"
RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"

pytestmark = pytest.mark.skipif(not fork_supported(), reason="fork-started environments need Linux "
                                "(x86_64 or aarch64) with pidfds")


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                found.add(int(entry))
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` exists and has not ended (a zombie waiting for a parent has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


def test_a_sigkilled_router_leaves_no_template_or_environment(
    router_factory: RouterFactory, tmp_path: Path
) -> None:
    rp = router_factory(f"""
version: 1
server: {{host: 127.0.0.1, port: @PORT@}}
state: sqlite:///{tmp_path / 'state.db'}
functions:
  probe:
    runtime: {RUNTIME}
    handler: app.handler
    code: {FUNCTIONS / 'fork_probe'}
  snap:
    runtime: {RUNTIME}
    handler: app.handler
    code: {FUNCTIONS / 'snap_hooks'}
    snap_start: true
    environment: {{SNAP_LOG: "{tmp_path / 'snap.jsonl'}"}}
""", env={"TMPDIR": str(tmp_path)})  # the scratch dirs a killed router leaves behind
    assert rp.proc is not None
    router = rp.proc.pid
    for name in ("probe", "snap"):
        status, _, body = http_call("POST", f"{rp.url}/2015-03-31/functions/{name}/invocations", b"{}")
        assert status == 200, body
        result = json.loads(body)
        assert result["pid"] != router
    probe = json.loads(http_call("POST", f"{rp.url}/2015-03-31/functions/probe/invocations", b"{}")[2])
    assert any(arg.endswith("python_template.py") for arg in probe["cmdline"])  # forked from a template
    assert probe["ppid"] == router
    # Two templates (the interpreter's, the snap_start function's), two environments and the process
    # watchdog, all the router's children.
    family = children_of(router)
    assert len(family) == 5, family
    assert sum(Path(f"/proc/{pid}/cmdline").read_bytes().endswith(b"proctree.py\0") for pid in family) == 1
    assert probe["pid"] in family

    # The probe's environment is busy in a long handler when the router dies (an idle one would also
    # end when its Runtime API connection does): only the router's watchdog ends it in time.
    marker = tmp_path / "handler-running"

    def call_until_the_router_dies() -> None:
        with contextlib.suppress(OSError, http.client.HTTPException):
            http_call("POST", f"{rp.url}/2015-03-31/functions/probe/invocations",
                      json.dumps({"sleep": 60, "touch": str(marker)}).encode(), timeout=90)

    busy = threading.Thread(target=call_until_the_router_dies, daemon=True)
    busy.start()
    until_sync(marker.exists, what="the long handler to run", deadline=20)
    assert children_of(router) == family  # it runs in the warm environment

    rp.kill()
    until_sync(lambda: not any(running(pid) for pid in family), deadline=10.0,
               what="every template and environment (and the watchdog) to end with the router")
