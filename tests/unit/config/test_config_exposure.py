"""DESIGN §9a: safe by default. Loopback unless told otherwise; an Invoke API without credentials is
refused on any other address unless the operator opts in; the HTTP front's timeouts and budgets."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from router.config.loader import load_config_text
from router.config.models import RouterConfig, ServerConfig, is_loopback
from router.errors import ConfigError
from router.http.server import exposure

from .conftest import BASE

ROOT = Path(__file__).resolve().parents[3]


def test_the_default_host_is_loopback(load: Callable[..., RouterConfig]) -> None:
    server = load(BASE).server
    assert server.host == "127.0.0.1"
    assert (server.header_timeout, server.body_timeout, server.idle_timeout) == (10.0, 30.0, 60.0)
    assert server.max_connections == 4096
    assert server.max_body_buffer == 128 * 1024 * 1024


@pytest.mark.parametrize(("host", "local"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.5", False), ("router.example.com", False),
])
def test_is_loopback(host: str, local: bool) -> None:
    assert is_loopback(host) is local


def test_an_open_invoke_api_on_every_interface_is_refused_with_where_and_how(
        problems: Callable[..., list[str]]) -> None:
    lines = problems("server:\n  port: 8080\n  host: 0.0.0.0\n" + BASE)
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith("router.yaml:3:9: server.host: the Invoke API would run any function for anyone "
                           "who can reach '0.0.0.0' port 8080")
    for fix in ("invoke_token", "127.0.0.1", "invoke_api: false", "allow_unauthenticated_invoke: true"):
        assert fix in line


def test_the_host_from_the_environment_is_not_echoed(problems: Callable[..., list[str]]) -> None:
    (line,) = problems("server: {host: '${BIND}', port: '${PORT}'}\n" + BASE, {"BIND": "192.0.2.7",
                                                                          "PORT": "18765"})
    assert "192.0.2.7" not in line
    assert "18765" not in line
    assert "reach value from ${BIND} port value from ${PORT}:" in line


@pytest.mark.parametrize("server", [
    "{host: 0.0.0.0, invoke_token: t}",
    "{host: 0.0.0.0, invoke_keys: {AKIA1: s}}",
    "{host: 0.0.0.0, invoke_api: false}",
    "{host: 0.0.0.0, allow_unauthenticated_invoke: true}",
    "{host: 127.0.0.1}",
    "{host: localhost}",
])
def test_what_is_accepted(load: Callable[..., RouterConfig], server: str) -> None:
    load(f"server: {server}\n" + BASE)


def test_an_empty_token_from_an_unset_variable_is_no_token(problems: Callable[..., list[str]]) -> None:
    (line,) = problems("server: {host: 0.0.0.0, invoke_token: '${TOKEN:-}'}\n" + BASE)
    assert "no server.invoke_token" in line


def test_the_body_buffer_must_hold_one_body(problems: Callable[..., list[str]]) -> None:
    (line,) = problems("server: {max_body: 6MB, max_body_buffer: 1MB}\n" + BASE)
    assert "max_body_buffer (1048576 bytes) must be at least max_body and max_async_body (6291456" in line


def test_the_container_config_is_safe_and_still_validates() -> None:
    """deploy/config.yaml listens on 0.0.0.0 with the Invoke API off unless asked for; asked for
    without a token, it is refused."""
    # The image's /app/examples is the repository's examples/.
    text = (ROOT / "deploy" / "config.yaml").read_text().replace("/app/examples", str(ROOT / "examples"))

    def load(**more: str) -> RouterConfig:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
        env["ROUTER_HOST"] = "0.0.0.0"  # as the Dockerfile sets it
        return load_config_text(text, "config.yaml", {**env, **more})

    cfg = load()
    assert cfg.server.host == "0.0.0.0"
    assert cfg.server.invoke_api is False
    assert load(ROUTER_INVOKE_API="true", ROUTER_INVOKE_TOKEN="t").server.invoke_api
    with pytest.raises(ConfigError, match="Invoke API would run any function"):
        load(ROUTER_INVOKE_API="true")
    assert "ROUTER_HOST=0.0.0.0" in (ROOT / "Dockerfile").read_text()


def _config(**server: Any) -> RouterConfig:
    return RouterConfig.model_validate({
        "server": server,
        "functions": {"f": {"http": {"url": "http://127.0.0.1:9/"}}},
        "routes": [
            {"name": "signed", "function": "f",
             "source": {"type": "webhook", "path": "/hooks/${SECRET_PART}",
                        "auth": {"type": "hmac", "secret": "s"}}},
            {"name": "open", "function": "f", "source": {"type": "webhook", "path": "/open"}},
        ],
    })


def test_start_up_line_says_what_is_exposed_and_how() -> None:
    level, line = exposure(_config(host="0.0.0.0", invoke_token="t"), 8080)
    assert level == logging.INFO
    assert line == ("listening on http://0.0.0.0:8080 (reachable from other machines): webhooks: "
                    "signed (hmac), open (no auth); Invoke API: token required; "
                    "/livez /healthz /readyz /metrics: no auth")
    assert "SECRET_PART" not in line  # route names only, never paths


def test_start_up_line_is_a_warning_for_an_open_invoke_api_off_loopback() -> None:
    level, line = exposure(_config(host="0.0.0.0", allow_unauthenticated_invoke=True), 8080)
    assert level == logging.WARNING
    assert "Invoke API: NO AUTH, anyone who reaches this address can run any function" in line
    level, line = exposure(_config(), 8080)
    assert level == logging.INFO
    assert "(loopback only)" in line
    assert "NO AUTH" in line
    level, line = exposure(_config(metrics_port=9090, invoke_keys={"A": "s"}), 9090, metrics_only=True)
    assert line == ("listening on http://127.0.0.1:9090 (loopback only): "
                    "/livez /healthz /readyz /metrics: no auth")
    level, line = exposure(_config(invoke_api=False), 8080, in_container=True)
    assert level == logging.WARNING
    assert "INSIDE A CONTAINER" in line
    assert "Invoke API: off" in line


def test_server_config_defaults_are_valid() -> None:
    ServerConfig()


async def test_a_config_built_in_code_is_refused_at_serve_too() -> None:
    from router.app import Router
    from router.errors import RouterError

    with pytest.raises(RouterError, match=r"server\.host: the Invoke API would run any function"):
        await Router(_config(host="0.0.0.0")).serve()
