"""How a Node.js environment reaches its Runtime API: with one invocation at a time, over a socket the
router hands it at start (no connection to make, no ``net`` module to load at a cold start); the lanes
of a multi-concurrent environment over TCP, each its own connection. (When the router ends the handed-over
connection, over TCP from then on: test_runtime_transport.py, for both runtimes.)"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import MakeInvoker, invocation
from .node_support import NODE_RUNTIME, require_node
from .template_support import needs_fork, payload


async def _transport(invoker: Any) -> dict[str, Any]:
    result = await invoker.invoke(invocation())
    assert result.ok, result.payload
    assert "a line before the result" in result.logs
    got: dict[str, Any] = payload(result)
    return got


@pytest.mark.parametrize("kind", ["exec", pytest.param("template", marks=needs_fork)])
async def test_the_runtime_api_comes_over_the_socket_handed_over_at_start(
        kind: str, make_invoker: MakeInvoker, make_forked: MakeInvoker) -> None:
    """The environment's only socket is a unix one (the router's), no TCP connection, and nothing of the
    router's in its environment. Until its first result, no `net` module although the function logged;
    from then on the same socket is read by node's event loop (`net` loaded after the result went out)."""
    require_node()
    make = make_forked if kind == "template" else make_invoker
    invoker = await make("node_basic", name=f"transport-{kind}", runtime=NODE_RUNTIME,
                         handler="index.transport")
    cold = await _transport(invoker)
    warm = await _transport(invoker)
    again = await _transport(invoker)
    assert warm["pid"] == again["pid"] == cold["pid"]
    for got in (cold, warm, again):
        assert got["sockets"] == ["unix"], got
        assert got["routerVars"] == [], got
    assert cold["netLoaded"] is False
    assert warm["netLoaded"] is True


@pytest.mark.parametrize("kind", ["exec", pytest.param("template", marks=needs_fork)])
async def test_a_child_process_of_the_function_does_not_get_the_handed_over_socket(
        kind: str, make_invoker: MakeInvoker, make_forked: MakeInvoker) -> None:
    """node cannot set close-on-exec itself, but it marks the low descriptors it inherits so at start: the
    template hands the socket over at the lowest free number, the exec spawner (``fork_start: false``,
    ``run_as``) at the low number it reserves, and a process the function starts holds no socket of the
    worker's."""
    require_node()
    make = make_forked if kind == "template" else make_invoker
    invoker = await make("node_basic", name=f"children-{kind}", runtime=NODE_RUNTIME,
                         handler="index.childSockets")
    for _ in range(2):  # cold (the lane reads the fd) and warm (a net socket on it)
        got = payload(await invoker.invoke(invocation()))
        assert got["childSockets"] == 0, got


async def test_a_multi_concurrent_environment_keeps_its_tcp_lanes(make_invoker: MakeInvoker) -> None:
    """AWS_LAMBDA_MAX_CONCURRENCY > 1: each lane is a TCP connection of its own; no socket is handed over."""
    require_node()
    invoker = await make_invoker("node_basic", runtime=NODE_RUNTIME, handler="index.transport",
                                 per_environment_concurrency=2)
    got = await _transport(invoker)
    assert got["sockets"] == ["tcp", "tcp"], got
    assert got["netLoaded"] is True
    assert got["routerVars"] == []
