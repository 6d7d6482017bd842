"""SIGTERM with ``server.drain_delay``: ``router run`` stays up for the delay, ``/readyz`` answering 503
(shutting down) while webhooks and the Invoke API are still served, then shuts down gracefully and exits 0;
a second signal ends the delay at once; with no delay the shutdown begins at once, as before."""

from __future__ import annotations

import json
import signal
import subprocess
from http.client import HTTPConnection
from pathlib import Path

from tests.router_process import RouterFactory, RouterProcess, http
from tests.waiting import until_sync

ECHO = """
    def handler(event, context):
        return {"statusCode": 200, "body": "served " + (event.get("body") or "")}
"""


def _start(router_factory: RouterFactory, tmp_path: Path, drain_delay: str) -> RouterProcess:
    code = router_factory.write_function("echo", ECHO)
    return router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 5s, drain_delay: {drain_delay}}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          echo: {{runtime: python3.11, handler: app.handler, code: {code}, timeout: 5s}}
        routes:
          - {{name: echo, source: {{type: webhook, path: /echo}}, function: echo}}
    """)


def _readyz(rp: RouterProcess) -> tuple[int, dict[str, object]]:
    status, _, body = http("GET", rp.url + "/readyz", timeout=5)
    return status, json.loads(body)


def _shutting_down(rp: RouterProcess) -> bool:
    """Whether /readyz says 503 because the router is shutting down (it still answers: it listens)."""
    status, body = _readyz(rp)
    reasons = body.get("reasons")
    return status == 503 and isinstance(reasons, list) and any(
        str(r).startswith("shutting down") for r in reasons)


def _exited(rp: RouterProcess) -> bool:
    assert rp.proc is not None
    return rp.proc.poll() is not None


def _keep_alive_answer(rp: RouterProcess) -> tuple[int, str | None]:
    """POST /echo over an HTTP/1.1 keep-alive connection (urllib always asks to close): the status
    and the answer's Connection header."""
    conn = HTTPConnection("127.0.0.1", rp.port, timeout=10)
    try:
        conn.request("POST", "/echo", body=b"kept", headers={"Content-Type": "text/plain"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("Connection")
    finally:
        conn.close()


def _serves_during_drain(rp: RouterProcess) -> None:
    """After SIGTERM: /readyz is 503 (shutting down), yet a webhook and the Invoke API are served."""
    assert rp.proc is not None
    assert _readyz(rp)[0] == 200
    assert _keep_alive_answer(rp) == (200, None)  # keep-alive while serving normally
    rp.proc.send_signal(signal.SIGTERM)
    until_sync(lambda: _shutting_down(rp), what="/readyz to answer 503 shutting down", deadline=10)
    status, body = _readyz(rp)
    assert body["status"] == "not ready"
    assert any("drain_delay" in str(r) for r in body["reasons"]), body  # type: ignore[union-attr]
    # Still served, on new connections, while Kubernetes would be taking the pod out of its endpoints.
    for i in range(3):
        status, _, answer = http("POST", rp.url + "/echo", f"during drain {i}".encode(), timeout=10)
        assert (status, answer) == (200, f"served during drain {i}".encode())
    status, _, answer = http("POST", rp.url + "/2015-03-31/functions/echo/invocations", b'{"body": "api"}',
                             timeout=10)
    assert (status, json.loads(answer)) == (200, {"statusCode": 200, "body": "served api"})
    assert http("GET", rp.url + "/livez", timeout=5)[0] == 200
    # Keep-alive clients are told to reconnect (to another replica) rather than hold this connection.
    assert _keep_alive_answer(rp) == (200, "close")
    assert not _exited(rp), "the router stopped before its drain delay ended"


def test_sigterm_keeps_serving_through_the_drain_delay_then_exits_zero(
    router_factory: RouterFactory, tmp_path: Path,
) -> None:
    rp = _start(router_factory, tmp_path, "8s")
    _serves_during_drain(rp)
    # After the delay the usual graceful shutdown runs and the process exits 0 by itself.
    until_sync(lambda: _exited(rp), what="the router to exit after its drain delay", deadline=60)
    assert rp.stop() == 0
    messages = [str(r.get("message", "")) for r in rp.log_records()]
    drained = next(i for i, m in enumerate(messages) if "server.drain_delay" in m)
    finishing = next(i for i, m in enumerate(messages) if m.startswith("shutting down: finishing"))
    assert drained < finishing
    assert "cut short" not in rp.logs()
    assert "router stopped" in messages


def test_a_second_signal_ends_the_drain_delay_at_once(router_factory: RouterFactory, tmp_path: Path) -> None:
    rp = _start(router_factory, tmp_path, "1h")  # only the second signal can end this one within the test
    _serves_during_drain(rp)
    assert rp.proc is not None
    rp.proc.send_signal(signal.SIGINT)
    try:
        rp.proc.wait(40)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"a second signal did not end the drain delay:\n{rp.logs()}") from None
    assert rp.stop() == 0
    assert "drain delay cut short by a second signal" in rp.logs()
    assert "router stopped" in rp.logs()


def test_without_a_drain_delay_sigterm_stops_listening_at_once(
    router_factory: RouterFactory, tmp_path: Path,
) -> None:
    rp = _start(router_factory, tmp_path, "0s")
    status, _, answer = http("POST", rp.url + "/echo", b"before", timeout=10)
    assert (status, answer) == (200, b"served before")
    assert rp.stop() == 0  # SIGTERM; as before drain_delay existed
    assert "server.drain_delay" not in rp.logs()
    assert "router stopped" in rp.logs()
    try:
        http("GET", rp.url + "/readyz", timeout=5)
    except OSError:
        pass  # refused: nothing listens any more
    else:
        raise AssertionError("something still answers on the router's port after it exited")
