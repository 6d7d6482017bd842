"""REPORT's Duration and Init Duration from a real ``router run``: measured, not counted in the event
loop's ticks.

``router run`` serves on uvloop by default, whose ``loop.time()`` moves in whole milliseconds (libuv's
``uv_now``). Durations taken on that clock came out as 0.00, 1.00, 2.00 ms: a `provided` runtime's every
Duration and every Init Duration a whole number of milliseconds, and the Python and Node runtimes'
Duration (the smaller of the router's and the runtime's own time) 0.00 ms whenever an invocation began
and ended within one tick. The in-process tests run on asyncio's own loop, whose clock is exact, so
only a router process shows it."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

from tests.router_process import RouterFactory, http
from tests.unit.runtime.node_support import FIXTURES

PYTHON_RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"
INVOCATIONS = 12


def report_metrics(url: str, function: str) -> dict[str, float]:
    """One invocation with LogType Tail: its platform.report record's metrics."""
    status, headers, body = http("POST", f"{url}/2015-03-31/functions/{function}/invocations",
                                 json.dumps({"n": 1}).encode(), {"X-Amz-Log-Type": "Tail"})
    assert status == 200, body
    tail = base64.b64decode(headers["x-amz-log-result"]).decode().splitlines()
    reports = [json.loads(line) for line in tail if '"platform.report"' in line]
    assert len(reports) == 1, tail
    metrics: dict[str, float] = reports[0]["record"]["metrics"]
    return metrics


def test_durations_are_not_whole_ticks_of_the_event_loop(
        router_factory: RouterFactory, tmp_path: Path) -> None:
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          python:
            runtime: {PYTHON_RUNTIME}
            handler: app.handler
            code: {FIXTURES / 'echo'}
            logging: {{log_format: JSON}}
          custom:
            runtime: provided
            handler: app.echo
            code: {FIXTURES / 'provided'}
            environment: {{PYTHON: {sys.executable}}}
            logging: {{log_format: JSON}}
    """)
    python = [report_metrics(rp.url, "python") for _ in range(INVOCATIONS)]
    custom = [report_metrics(rp.url, "custom") for _ in range(INVOCATIONS)]

    # The Python runtime's handler takes tens of microseconds at least (the event's JSON, the context,
    # the result's JSON): a Duration of 0.00 is a clock that did not move.
    assert all(m["durationMs"] > 0 for m in python), [m["durationMs"] for m in python]
    # A `provided` runtime sends no time of its own: the router's clock is its Duration. Twelve exact
    # multiples of a millisecond by chance: about one in 10^24.
    custom_ms = [m["durationMs"] for m in custom]
    assert any(ms != round(ms) for ms in custom_ms), custom_ms
    # One cold start each (the first invocation); two whole numbers by chance: about one in 10^4.
    inits = [python[0]["initDurationMs"], custom[0]["initDurationMs"]]
    assert all("initDurationMs" not in m for m in python[1:] + custom[1:])
    assert any(ms != round(ms) for ms in inits), inits
    rp.stop()
