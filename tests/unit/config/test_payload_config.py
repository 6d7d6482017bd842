"""A webhook route's ``payload`` (v2, v1, alb) and ``alb_multi_value_headers``: defaults, and bad values
refused with file:line."""

from __future__ import annotations

from typing import Any

ROUTE_CONFIG = """\
functions:
  f: {{runtime: python3.11, handler: app.handler, code: ./fn}}
routes:
  - name: hook
    source: {{type: webhook, path: /hook, {source}}}
    function: f
"""


def test_payload_defaults_to_v2_and_takes_v1_and_alb(load: Any) -> None:
    assert load(ROUTE_CONFIG.format(source="methods: [POST]")).routes[0].source.payload == "v2"
    assert load(ROUTE_CONFIG.format(source="payload: v1")).routes[0].source.payload == "v1"
    source = load(ROUTE_CONFIG.format(source="payload: alb, alb_multi_value_headers: true")).routes[0].source
    assert (source.payload, source.alb_multi_value_headers) == ("alb", True)


def test_bad_payload_settings_say_where(problems: Any) -> None:
    (line,) = problems(ROUTE_CONFIG.format(source="payload: v3"))
    assert line.startswith("router.yaml:5:"), line
    assert "v1" in line
    assert "alb" in line
    (line,) = problems(ROUTE_CONFIG.format(source="payload: v1, alb_multi_value_headers: true"))
    assert line.startswith("router.yaml:5:"), line
    assert "alb_multi_value_headers is for payload: alb, got payload: v1" in line


def test_lambda_url_paths_are_reserved_for_function_urls(problems: Any) -> None:
    (line,) = problems(ROUTE_CONFIG.format(source="payload: v2").replace("/hook", "/lambda-url/x"))
    assert line.startswith("router.yaml:5:"), line
    assert "'/lambda-url/x' is reserved by the router" in line
