"""``stream: true`` on a webhook source (README "Response streaming"): read, and refused on an async route
with the route's file:line."""

from __future__ import annotations

from typing import Any

CONFIG = """\
functions:
  f: {{runtime: python3.11, handler: app.handler, code: ./fn}}
routes:
  - name: live
    source: {{type: webhook, path: /live, stream: true}}
    function: f
{invocation}
"""


def test_stream_is_read(load: Any) -> None:
    route = load(CONFIG.format(invocation="")).routes[0]
    assert route.source.stream is True
    plain = load(CONFIG.replace(", stream: true", "").format(invocation="")).routes[0]
    assert plain.source.stream is False


def test_stream_on_an_async_route_is_refused_with_where_and_how(problems: Any) -> None:
    (line,) = problems(CONFIG.format(invocation="    invocation: async"))
    assert line.startswith("router.yaml:4:"), line
    assert "source.stream" in line
    assert "remove stream or set invocation: sync" in line
