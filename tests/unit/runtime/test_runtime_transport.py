"""How a Python environment reaches its Runtime API: with one invocation at a time, over a unix socket
the router hands it at start (no connection to make at a cold start, cheaper round trips than loopback
TCP), which neither the function's variables nor its child processes see; the runtime workers of a
multi-concurrent environment over TCP, each its own connection. When the router ends the handed-over
connection, a Python or Node.js environment goes on over TCP. (Node's own side: test_node_transport.py.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from router.invocation import Outcome
from router.runtime import launch
from router.runtime.bootstrap import python_bootstrap

from .conftest import MakeInvoker, invocation, socket_kinds
from .node_support import NODE_RUNTIME, require_node
from .template_support import needs_fork, payload


async def _transport(invoker: Any) -> dict[str, Any]:
    result = await invoker.invoke(invocation())
    assert "a line before the result" in result.logs
    got: dict[str, Any] = payload(result)
    got["sockets"] = socket_kinds(got["pid"])  # the environment is warm and idle: its sockets now
    return got


def test_the_bootstrap_reads_the_variable_the_spawner_sets() -> None:
    """The bootstrap runs standalone (it cannot import the router): its copy of the name must match."""
    assert python_bootstrap.RUNTIME_FD_VAR == launch.RUNTIME_FD_VAR


@pytest.mark.parametrize("kind", ["exec", pytest.param("template", marks=needs_fork),
                                  pytest.param("snap_start", marks=needs_fork)])
async def test_the_runtime_api_comes_over_the_socket_handed_over_at_start(
        kind: str, make_invoker: MakeInvoker, make_forked: MakeInvoker) -> None:
    """Spawned, forked from a template, or restored from a snap_start one: the environment's only socket
    is a unix one (the router's), no TCP connection; nothing of the router's in its variables or its
    /proc environ block; a child process of the function inherits no socket; the same process each time."""
    if kind == "exec":
        invoker = await make_invoker("transport", name="transport-exec", fork_start=False)
    else:
        invoker = await make_forked("transport", name=f"transport-{kind}", snap_start=kind == "snap_start")
    runs = [await _transport(invoker) for _ in range(3)]
    assert len({got["pid"] for got in runs}) == 1
    for got in runs:
        assert got["sockets"] == ["unix"], got
        assert got["routerVars"] == [], got
        assert got["routerVarsInBlock"] is False, got
        assert got["childSockets"] == 0, got


@pytest.mark.parametrize("runtime", ["python", "node"])
async def test_after_the_router_ends_the_handed_over_connection_the_environment_goes_on_over_tcp(
        runtime: str, make_invoker: MakeInvoker) -> None:
    """A response over 6 MB is refused and its connection closed (the router does not read the rest):
    the same process takes its next event over a TCP connection of its own."""
    if runtime == "node":
        require_node()
        invoker = await make_invoker("node_basic", runtime=NODE_RUNTIME, handler="index.bigResult",
                                     memory=512)
    else:
        invoker = await make_invoker("big_response", memory=512)
    within = await invoker.invoke(invocation({"bytes": 10}))
    assert within.ok
    (environment,) = invoker.pool._all
    assert environment.pid is not None
    assert socket_kinds(environment.pid) == ["unix"]
    over = await invoker.invoke(invocation({"bytes": 7 * 1024 * 1024}))
    assert over.outcome is Outcome.ERROR
    assert json.loads(over.payload)["errorType"] == "Function.ResponseSizeTooLarge"
    again = await invoker.invoke(invocation({"bytes": 10}))
    assert again.ok
    assert json.loads(again.payload) == "x" * 10
    assert "Init Duration" not in again.logs
    assert invoker.pool._all == {environment}
    assert socket_kinds(environment.pid) == ["tcp"]


async def test_a_multi_concurrent_environment_keeps_its_tcp_connections(make_invoker: MakeInvoker) -> None:
    """AWS_LAMBDA_MAX_CONCURRENCY > 1: each runtime worker is a process with a TCP connection of its
    own; no socket is handed over."""
    invoker = await make_invoker("transport", per_environment_concurrency=2)
    got = await _transport(invoker)
    assert got["sockets"] == ["tcp"], got
    assert got["routerVars"] == []
    assert got["childSockets"] == 0
