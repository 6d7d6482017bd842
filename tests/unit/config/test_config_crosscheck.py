"""Cross-checks: function references, duplicate names and webhook paths, cron, time zones, code dirs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from router.config.models import RouterConfig

from .conftest import BASE

Problems = Callable[..., list[str]]
Load = Callable[..., RouterConfig]


def _route(name: str, source: str, function: str = "resize") -> str:
    return f"  - name: {name}\n    function: {function}\n    source: {source}\n"


def test_unknown_function_with_suggestion(problems: Problems) -> None:
    assert problems(BASE + "routes:\n" + _route("a", "{type: webhook, path: /a}", "resise")) == [
        "router.yaml:8:15: routes[0].function: unknown function 'resise'; did you mean 'resize'?"
    ]


def test_unknown_function_without_a_near_name_lists_the_functions(problems: Problems) -> None:
    assert problems(BASE + "routes:\n" + _route("a", "{type: webhook, path: /a}", "zzz")) == [
        "router.yaml:8:15: routes[0].function: unknown function 'zzz'; valid functions: resize"
    ]


def test_unknown_function_when_none_are_defined(problems: Problems) -> None:
    assert problems("routes:\n" + _route("a", "{type: webhook, path: /a}")) == [
        "router.yaml:3:15: routes[0].function: unknown function 'resize'; "
        "no functions are defined under 'functions'"
    ]


def test_function_destinations_must_name_known_functions(problems: Problems) -> None:
    assert problems(
        BASE
        + "    async:\n      on_success: {type: function, function: resise}\n"
        + "      on_failure: {type: function, function: resize}\n"
        + "routes:\n"
        + _route("k", "{type: kinesis, stream_arn: 'arn:aws:kinesis:us-east-1:123456789012:stream/s', "
                 "on_failure: {type: function, function: clean}}")
    ) == [
        "router.yaml:7:46: functions.resize.async.on_success.function: unknown function 'resise'; "
        "did you mean 'resize'?",
        "router.yaml:12:131: routes[0].source.on_failure.function: unknown function 'clean'; "
        "valid functions: resize",
    ]


def test_duplicate_route_names(problems: Problems) -> None:
    assert problems(
        BASE
        + "routes:\n"
        + _route("a", "{type: webhook, path: /a}")
        + _route("a", "{type: webhook, path: /b}")
    ) == ["router.yaml:10:11: routes[1].name: duplicate route name 'a' (first used at line 7)"]


def test_webhooks_on_the_same_path_with_overlapping_methods(problems: Problems) -> None:
    assert problems(
        BASE
        + "routes:\n"
        + _route("a", "{type: webhook, path: '/users/{id}', methods: [POST, put]}")
        + _route("b", "{type: webhook, path: '/users/{uid}/', methods: [PUT, GET]}")
    ) == [
        "router.yaml:12:35: routes[1].source.path: webhook path '/users/{uid}/' with PUT is already "
        "served by route 'a' (routes[0]); give one of them another path or other methods"
    ]


def test_any_method_overlaps_every_method(problems: Problems) -> None:
    (line,) = problems(
        BASE
        + "routes:\n"
        + _route("a", "{type: webhook, path: /a, methods: [GET]}")
        + _route("b", "{type: webhook, path: /a, methods: [ANY]}")
    )
    assert line.endswith("webhook path '/a' with GET is already served by route 'a' (routes[0]); "
                         "give one of them another path or other methods")


def test_same_path_with_other_methods_is_fine(load: Load) -> None:
    cfg = load(
        BASE
        + "routes:\n"
        + _route("a", "{type: webhook, path: /a, methods: [GET]}")
        + _route("b", "{type: webhook, path: /a}")
    )
    assert [r.name for r in cfg.routes] == ["a", "b"]


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("61 * * * *", "invalid cron '61 * * * *': Error validating expression '61': "
                       "the last value (61) is higher than the maximum value (59)"),
        ("* * *", "cron '* * *' has 3 fields; expected 5 (minute hour day month weekday) "
                  "or 6 (second minute hour day month weekday)"),
        ("0 0 3 * * mon-fru", "invalid cron '0 0 3 * * mon-fru': Invalid weekday name \"fru\""),
    ],
)
def test_bad_cron(problems: Problems, cron: str, message: str) -> None:
    assert problems(BASE + "routes:\n" + _route("a", f"{{type: schedule, cron: '{cron}'}}")) == [
        f"router.yaml:9:36: routes[0].source.cron: {message}"
    ]


@pytest.mark.parametrize("cron", ["0 3 * * *", "*/5 * * * 1-5", "30 0 3 * * *", "0 0 12 1 jan,jul sun"])
def test_good_cron(load: Load, cron: str) -> None:
    cfg = load(BASE + "routes:\n" + _route("a", f"{{type: schedule, cron: '{cron}'}}"))
    assert cfg.routes[0].source.cron == cron  # type: ignore[union-attr]


def test_bad_timezone_with_suggestion(problems: Problems) -> None:
    assert problems(
        BASE + "routes:\n" + _route("a", "{type: schedule, cron: '0 3 * * *', timezone: Europe/Berln}")
    ) == [
        "router.yaml:9:59: routes[0].source.timezone: unknown time zone 'Europe/Berln'; "
        "did you mean 'Europe/Berlin'?"
    ]


def test_schedule_needs_cron_or_rate(problems: Problems) -> None:
    assert problems(BASE + "routes:\n" + _route("a", "{type: schedule}")) == [
        "router.yaml:9:13: routes[0].source: a schedule needs exactly one of 'cron' or 'rate'"
    ]


def test_code_directory_not_found(problems: Problems, config_dir: Path) -> None:
    assert problems(BASE.replace("./fn", "./missing")) == [
        f"router.yaml:5:11: functions.resize.code: directory not found: {config_dir.resolve() / 'missing'}"
    ]


def test_code_path_that_is_a_file(problems: Problems, config_dir: Path) -> None:
    (config_dir / "app.py").write_text("")
    assert problems(BASE.replace("./fn", "app.py")) == [
        f"router.yaml:5:11: functions.resize.code: not a directory: {config_dir.resolve() / 'app.py'}"
    ]


def test_cross_checks_run_even_when_validation_fails(problems: Problems) -> None:
    assert problems(
        BASE + "    memory: 1\nroutes:\n" + _route("a", "{type: webhook, path: /a}", "nope")
    ) == [
        "router.yaml:6:13: functions.resize.memory: should be greater than or equal to 128, got 1",
        "router.yaml:9:15: routes[0].function: unknown function 'nope'; valid functions: resize",
    ]


def test_a_function_over_the_environment_memory_budget_could_never_start(problems: Problems) -> None:
    text = BASE.replace("    code: ./fn\n", "    code: ./fn\n    memory: 512\n")
    text += "limits: {environment_memory: 256MB}\n"
    assert problems(text) == [
        "router.yaml:6:13: functions.resize.memory: 512 MB is more than limits.environment_memory (256 MB), "
        "so no environment of this function could ever start; lower memory or raise the budget"
    ]


def test_limits_are_read(load: Load) -> None:
    config = load(BASE + "limits: {concurrent_executions: 5, environment_memory: 2GB,"
                         " environment_wait: 250ms, cpu_scaling: false}\n")
    assert config.limits.concurrent_executions == 5
    assert config.limits.environment_memory == 2 * 1024**3
    assert config.limits.environment_wait == 0.25
    assert config.limits.cpu_scaling is False
