"""The ``history:`` settings of a function: defaults, and bad values refused with file:line."""

from __future__ import annotations

from collections.abc import Callable

from router.config.models import RouterConfig

CONFIG = """\
functions:
  resize:
    runtime: python3.11
    handler: app.handler
    code: functions/resize
{history}
routes: []
"""


def test_defaults_keep_a_day_and_a_thousand_rows_without_payloads(load: Callable[..., RouterConfig]) -> None:
    history = load(CONFIG.format(history="")).functions["resize"].history
    assert (history.enabled, history.payloads, history.max_payload) == (True, False, 64 * 1024)
    assert (history.max_age, history.max_count) == (86400.0, 1000)


def test_settings_are_read(load: Callable[..., RouterConfig]) -> None:
    history = load(CONFIG.format(
        history="    history: {payloads: true, max_payload: 1KiB, max_age: 2h, max_count: 50}",
    )).functions["resize"].history
    assert (history.payloads, history.max_payload, history.max_age, history.max_count) == (
        True, 1024, 7200.0, 50)
    off = load(CONFIG.format(history="    history: {enabled: false}"))
    assert not off.functions["resize"].history.enabled


def test_bad_values_say_where(problems: Callable[..., list[str]]) -> None:
    lines = problems(CONFIG.format(history="    history:\n      max_count: 0\n      keep: forever"))
    assert any(ln.startswith("router.yaml:7:18: functions.resize.history.max_count:") for ln in lines), lines
    assert any(ln.startswith("router.yaml:8:7: functions.resize.history.keep:") for ln in lines), lines
    (line,) = problems(CONFIG.format(history="    history: {payloads: maybe}"))
    assert line.startswith("router.yaml:6:25: functions.resize.history.payloads:"), line
