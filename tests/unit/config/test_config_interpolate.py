"""${VAR} interpolation: the pure function, and through the loader (positions, secrets never echoed)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from router.config.interpolate import InterpolationError, interpolate
from router.config.models import RouterConfig

from .conftest import BASE

Problems = Callable[..., list[str]]
Load = Callable[..., RouterConfig]

ENV = {"SET": "value", "EMPTY": "", "PORT": "8080"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("${SET}", "value"),
        ("a-${SET}-b", "a-value-b"),
        ("${EMPTY}", ""),
        ("${UNSET:-dflt}", "dflt"),
        ("${EMPTY:-dflt}", "dflt"),
        ("${SET:-dflt}", "value"),
        ("${UNSET-dflt}", "dflt"),
        ("${EMPTY-dflt}", ""),
        ("${UNSET:-}", ""),
        ("${UNSET:-${SET}}", "value"),
        ("${UNSET:-x${UNSET2:-y}z}", "xyz"),
        ("${SET:?required}", "value"),
        ("${EMPTY?required}", ""),
        ("${SET:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        ("$$", "$"),
        ("$${SET}", "${SET}"),
        ("cost: 5$", "cost: 5$"),
        ("^a$|b", "^a$|b"),
        ("$SET", "$SET"),
        ("${UNSET:-a:b}c", "a:bc"),
    ],
)
def test_interpolate(text: str, expected: str) -> None:
    assert interpolate(text, ENV).value == expected


def test_records_the_variables_read() -> None:
    result = interpolate("${SET}/${UNSET:-x}/$$", ENV)
    assert result.variables == ["SET", "UNSET"]
    assert result.substituted
    assert not interpolate("$$ only", ENV).substituted


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${UNSET}", "variable UNSET is not set; set it, or give a default with ${UNSET:-default}"),
        ("${UNSET:?give the bucket name}", "variable UNSET is not set: give the bucket name"),
        ("${EMPTY:?give the bucket name}", "variable EMPTY is empty: give the bucket name"),
        ("${UNSET?}", "variable UNSET is not set"),
        ("${UNSET:?costs $$5}", "variable UNSET is not set: costs $5"),
        ("${SET", "unterminated ${ in '${SET'; close it with } or write $$ for a literal $"),
        ("${}", "invalid interpolation ${}: expected a variable name such as ${NAME}; "
                "write $$ for a literal $"),
        ("${1X}", "invalid interpolation ${1X}: expected a variable name such as ${NAME}; "
                  "write $$ for a literal $"),
        ("${SET:x}", "invalid interpolation ${SET:x}: after the name expected }, :-, -, :?, ?, :+ or +"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(InterpolationError) as info:
        interpolate(text, ENV)
    assert str(info.value) == message.replace("'${SET'", "${SET")


def test_error_message_of_required_variable_is_not_expanded() -> None:
    with pytest.raises(InterpolationError, match=r"^variable UNSET is not set: see \$\{SET\}$"):
        interpolate("${UNSET:?see ${SET}}", ENV)


# --- through the loader ------------------------------------------------------------------------------


def test_values_are_interpolated_before_validation(load: Load) -> None:
    cfg = load(
        "server: {port: '${PORT}', host: '${HOST:-127.0.0.1}'}\n"
        "aws: {endpoint_url: '${AWS_ENDPOINT_URL:-}', region: '$${literal}'}\n"
        + BASE
        + "    timeout: ${TIMEOUT:-30s}\n    environment: {A: '${SET}', B: 'cost $$5'}\n",
        {"PORT": "9000", "SET": "v"},
    )
    assert (cfg.server.port, cfg.server.host) == (9000, "127.0.0.1")
    assert cfg.aws.endpoint_url is None
    assert cfg.aws.region == "${literal}"
    assert cfg.functions["resize"].timeout == 30.0
    assert cfg.functions["resize"].environment == {"A": "v", "B": "cost $5"}


def test_keys_are_not_interpolated(load: Load) -> None:
    cfg = load(BASE + "    environment: {'${X}': 1}\n", {"X": "nope"})
    assert cfg.functions["resize"].environment == {"${X}": "1"}


def test_missing_variable_is_a_positioned_error(problems: Problems) -> None:
    assert problems(BASE + "    environment:\n      TOKEN: ${API_TOKEN}\n") == [
        "router.yaml:7:14: functions.resize.environment.TOKEN: variable API_TOKEN is not set; "
        "set it, or give a default with ${API_TOKEN:-default}"
    ]


def test_required_variable_message(problems: Problems) -> None:
    assert problems("aws:\n  region: ${AWS_REGION:?set the AWS region}\n", {"AWS_REGION": ""}) == [
        "router.yaml:2:11: aws.region: variable AWS_REGION is empty: set the AWS region"
    ]


def test_unresolved_variable_is_reported_once(problems: Problems) -> None:
    assert problems("server: {port: '${PORT}'}\n") == [
        "router.yaml:1:16: server.port: variable PORT is not set; "
        "set it, or give a default with ${PORT:-default}"
    ]


# Secrets: a value that came from the environment never appears in any message.

SECRET = "hunter2 s3cr3t!"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "server: {port: '${PORT}'}\n" + BASE,
            "router.yaml:1:16: server.port: should be a valid integer, got value from ${PORT}",
        ),
        (
            BASE + "    timeout: ${PORT}\n",
            "router.yaml:6:14: functions.resize.timeout: expected a duration such as 30s, 500ms or 5m, "
            "got value from ${PORT}",
        ),
        (
            BASE + "    memory: 'x${PORT}'\n",
            "router.yaml:6:13: functions.resize.memory: should be a valid integer, got value from 'x${PORT}'",
        ),
        (
            "functions:\n  f: {runtime: '${PORT}', code: ./fn, handler: a.b}\n",
            "router.yaml:2:6: functions.f: unsupported runtime value from ${PORT}; "
            "use python3.X (e.g. python3.11), nodejsNN.x (e.g. nodejs20.x) or provided",
        ),
        (
            BASE + "routes:\n- {name: a, function: '${PORT}', source: {type: webhook, path: /a}}\n",
            "router.yaml:7:23: routes[0].function: unknown function value from ${PORT}",
        ),
        (
            BASE + "routes:\n- {name: '${PORT}', function: resize, source: {type: webhook, path: /a}}\n",
            "router.yaml:7:10: routes[0].name: route name must be 1-64 of A-Z a-z 0-9 _ -, "
            "got value from ${PORT}",
        ),
        (
            BASE + "routes:\n- {name: a, function: resize, source: {type: schedule, cron: '${PORT}'}}\n",
            "router.yaml:7:62: routes[0].source.cron: invalid cron (value from ${PORT})",
        ),
        (
            BASE + "routes:\n- {name: a, function: resize, source: {type: schedule, cron: '* * * * *', "
            "timezone: '${PORT}'}}\n",
            "router.yaml:7:85: routes[0].source.timezone: invalid timezone (value from ${PORT})",
        ),
        (
            BASE + "routes:\n- {name: a, function: resize, source: {type: '${PORT}'}}\n",
            "router.yaml:7:46: routes[0].source.type: unknown type value from ${PORT}; "
            "valid types: webhook, schedule, sqs, kinesis, dynamodb_stream, amqp",
        ),
        (
            "functions:\n  f: {runtime: python3.11, code: '${PORT}', handler: a.b}\n",
            "router.yaml:2:34: functions.f.code: directory not found: value from ${PORT}",
        ),
        (
            "logging: {level: '${PORT}'}\n",
            "router.yaml:1:18: logging.level: should be one of 'debug', 'info', 'warning', 'error', "
            "got value from ${PORT}",
        ),
    ],
)
def test_interpolated_values_are_never_echoed(problems: Problems, text: str, expected: str) -> None:
    lines = problems(text, {"PORT": SECRET})
    assert lines == [expected]
    assert all(SECRET not in line and "s3cr3t" not in line for line in lines)


def test_interpolated_state_url_is_not_echoed(problems: Problems) -> None:
    assert problems("state: ${STATE_URL}\n", {"STATE_URL": "mysql://admin:pw@db/x"}) == [
        "router.yaml:1:8: state: state must be sqlite:///PATH or postgresql://..., got mysql://..."
    ]
    (line,) = problems("state: ${STATE_URL}\n", {"STATE_URL": "hunter2pw"})
    assert "hunter2pw" not in line
    assert line == (
        "router.yaml:1:8: state: state must be sqlite:///PATH or postgresql://..., "
        "got value from ${STATE_URL}://..."
    )
