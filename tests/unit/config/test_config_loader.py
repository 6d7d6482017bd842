"""load_config: YAML with positions, model validation turned into FILE:LINE:COL: path: message lines."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from router.config.loader import load_config, load_config_text
from router.config.models import RouterConfig
from router.errors import ConfigError

from .conftest import BASE, EXAMPLE, EXAMPLE_ENV

Problems = Callable[..., list[str]]
Load = Callable[..., RouterConfig]


def test_design_example_loads(load: Load, config_dir: Path) -> None:
    cfg = load(EXAMPLE, EXAMPLE_ENV)
    assert cfg.config_dir == config_dir.resolve()
    assert cfg.server.max_body == 6 * 1024 * 1024
    assert cfg.aws.endpoint_url is None  # ${AWS_ENDPOINT_URL:-} with the variable unset
    resize = cfg.functions["resize"]
    assert (resize.timeout, resize.memory, resize.kind) == (30.0, 256, "local")
    assert resize.async_.max_event_age == 6 * 3600
    assert resize.async_.backoff.max == 300.0
    assert cfg.functions["billing"].http is not None
    assert cfg.functions["billing"].http.headers == {"Authorization": "Bearer tok-123"}
    assert cfg.functions["thumbs"].lambda_ is not None
    assert cfg.functions["thumbs"].lambda_.qualifier == "prod"
    assert [r.name for r in cfg.routes] == [
        "github", "nightly", "every-5m", "uploads", "clicks", "table-changes", "orders"
    ]
    assert cfg.routes[0].invocation_type == "async"


def test_load_config_text_resolves_against_given_dir(config_dir: Path) -> None:
    cfg = load_config_text(BASE, "inline.yaml", env={}, config_dir=config_dir)
    assert cfg.config_dir == config_dir.resolve()


def test_config_dir_defaults_to_cwd_for_models_built_in_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert RouterConfig().config_dir == tmp_path


def test_code_dir_is_relative_to_the_config_file_not_the_cwd(
    load: Load, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert load(BASE).functions["resize"].code == "./fn"


# --- reading the file --------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"^.*nope\.yaml:1:1: \(top level\): file not found$"):
        load_config(path, env={})


def test_malformed_yaml_reports_line_and_column(problems: Problems) -> None:
    assert problems("functions:\n  a: [1, 2\nroutes: []\n") == [
        "router.yaml:3:7: (yaml): invalid YAML: did not find expected ',' or ']' "
        "(while parsing a flow sequence at line 2)"
    ]


def test_unquoted_interpolation_in_flow_mapping_gets_a_hint(problems: Problems) -> None:
    assert problems("version: 1\nserver: {port: ${PORT}}\n") == [
        "router.yaml:2:17: (yaml): invalid YAML: did not find expected ',' or '}' "
        "(while parsing a flow mapping at line 2); inside {...} or [...], quote values that use "
        '${...}: key: "${VAR}"'
    ]


def test_tab_indentation_is_a_yaml_error(problems: Problems) -> None:
    (line,) = problems("functions:\n\tresize: {}\n")
    assert line.startswith(
        "router.yaml:2:1: (yaml): invalid YAML: found character that cannot start any token"
    )


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "~\n"])
def test_empty_file(problems: Problems, text: str) -> None:
    assert problems(text) == [
        "router.yaml:1:1: (top level): the file is empty; expected a mapping with 'functions' and 'routes'"
    ]


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n- b\n", "a list"), ("just text\n", "a single value")]
)
def test_top_level_must_be_a_mapping(problems: Problems, text: str, kind: str) -> None:
    assert problems(text) == [
        f"router.yaml:1:1: (top level): expected a mapping (version, server, functions, routes, ...), "
        f"got {kind}"
    ]


def test_several_documents_are_an_error(problems: Problems) -> None:
    (line,) = problems("routes: []\n---\nroutes: []\n")
    assert line.startswith(
        "router.yaml:2:1: (yaml): invalid YAML: found another document (expected a single document"
    )


def test_duplicate_yaml_key(problems: Problems) -> None:
    assert problems(BASE + "    timeout: 3s\n    timeout: 5s\n") == [
        "router.yaml:7:5: functions.resize.timeout: duplicate key 'timeout' (first at line 6)"
    ]


def test_keys_are_taken_as_written(load: Load) -> None:
    cfg = load(BASE + "    environment: {on: 1, 8080: yes, ok: true}\n")
    assert cfg.functions["resize"].environment == {"on": "1", "8080": "true", "ok": "true"}


def test_merge_keys(load: Load) -> None:
    cfg = load(
        """\
        functions:
          a: &defaults {runtime: python3.11, handler: app.a, code: ./fn, timeout: 10s}
          b: {<<: *defaults, handler: app.b}
        """
    )
    assert cfg.functions["b"].handler == "app.b"
    assert cfg.functions["b"].timeout == 10.0


# --- model validation --------------------------------------------------------------------------------


def test_unknown_key_points_at_the_key_and_suggests(problems: Problems) -> None:
    assert problems(BASE + "    timeuot: 3s\n") == [
        "router.yaml:6:5: functions.resize.timeuot: unknown key 'timeuot'; did you mean 'timeout'?"
    ]


def test_unknown_top_level_key(problems: Problems) -> None:
    assert problems(BASE + "route: []\n") == [
        "router.yaml:6:1: route: unknown key 'route'; did you mean 'routes'?"
    ]


def test_unknown_key_without_a_near_name_lists_the_valid_ones(problems: Problems) -> None:
    assert problems("aws: {zzz: 1}\n") == [
        "router.yaml:1:7: aws.zzz: unknown key 'zzz'; valid keys: account_id, endpoint_url, region"
    ]


def test_unknown_key_in_a_typed_source_suggests_that_sources_fields(problems: Problems) -> None:
    assert problems(
        BASE + "routes:\n- name: q\n  function: resize\n"
        "  source: {type: sqs, queue_url: http://sqs/q, batchsize: 5}\n"
    ) == ["router.yaml:9:48: routes[0].source.batchsize: unknown key 'batchsize'; did you mean 'batch_size'?"]


def test_unknown_key_in_an_optional_typed_destination_suggests_its_fields(problems: Problems) -> None:
    assert problems(
        "functions:\n  f: {http: {url: 'http://x/'}, async: {on_failure: {type: amqp, url: 'amqp://x/', "
        "exchang: dlx}}}\n"
    ) == ["router.yaml:2:84: functions.f.async.on_failure.exchang: unknown key 'exchang'; "
          "did you mean 'exchange'?"]


def test_yaml_key_lambda_is_suggested_by_its_alias(problems: Problems) -> None:
    assert problems("functions:\n  t: {lamda: {function_name: x}}\n") == [
        # (the model check "exactly one of runtime, http, lambda" only runs once the keys are right)
        "router.yaml:2:7: functions.t.lamda: unknown key 'lamda'; did you mean 'lambda'?",
    ]


def test_missing_required_key_points_at_the_parent_mapping(problems: Problems) -> None:
    assert problems(
        BASE + "routes:\n  - name: q\n    function: resize\n    source:\n      type: sqs\n"
    ) == ["router.yaml:10:7: routes[0].source.queue_url: required key is missing"]


def test_missing_route_keys(problems: Problems) -> None:
    assert problems(BASE + "routes:\n  - {name: a}\n") == [
        "router.yaml:7:5: routes[0].source: required key is missing",
        "router.yaml:7:5: routes[0].function: required key is missing",
    ]


@pytest.mark.parametrize(
    ("body", "got"),
    [
        ("{handler: a.b}", "none"),
        ("{runtime: python3.11, handler: a.b, code: ./fn, http: {url: 'http://x'}}", "runtime, http"),
    ],
)
def test_exactly_one_of_runtime_http_lambda(problems: Problems, body: str, got: str) -> None:
    assert problems(f"functions:\n  f: {body}\n") == [
        f"router.yaml:2:6: functions.f: a function needs exactly one of 'runtime', 'http', 'lambda', "
        f"got {got}"
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5 minutes", "expected a duration such as 30s, 500ms or 5m, got '5 minutes'"),
        ("-3", "a duration cannot be negative, got -3"),
        ("0", "should be more than 0, got 0"),
        ("16m", "should be at most 15m, got '16m'"),
    ],
)
def test_bad_durations(problems: Problems, value: str, message: str) -> None:
    assert problems(BASE + f"    timeout: {value}\n") == [
        f"router.yaml:6:14: functions.resize.timeout: {message}"
    ]


def test_bad_size(problems: Problems) -> None:
    assert problems("server: {max_body: 6 megs}\n") == [
        "router.yaml:1:20: server.max_body: expected a size such as 6MB or 256KiB, got '6 megs'"
    ]


def test_wrong_types_and_ranges(problems: Problems) -> None:
    assert problems("server: {port: http, metrics_port: 70000}\nrouter: 1\nroutes: {}\n") == [
        "router.yaml:1:16: server.port: should be a valid integer, got 'http'",
        "router.yaml:1:36: server.metrics_port: should be less than or equal to 65535, got 70000",
        "router.yaml:2:1: router: unknown key 'router'; did you mean 'routes'?",
        "router.yaml:3:9: routes: expected a list, got a mapping",
    ]


def test_literal_with_suggestion(problems: Problems) -> None:
    assert problems("logging: {level: warn}\n") == [
        "router.yaml:1:18: logging.level: should be one of 'debug', 'info', 'warning', 'error', "
        "got 'warn'; did you mean 'warning'?"
    ]


def test_union_member_errors_are_merged_into_one(problems: Problems) -> None:
    assert problems(
        BASE + "routes:\n- name: k\n  function: resize\n"
        "  source: {type: kinesis, stream_arn: 'arn:aws:kinesis:us-east-1:123456789012:stream/s', "
        "max_record_age: often}\n"
    ) == [
        "router.yaml:9:106: routes[0].source.max_record_age: expected a duration such as 30s, 500ms or 5m, "
        "got 'often'"
    ]


def test_unknown_source_type_lists_valid_types(problems: Problems) -> None:
    text = BASE + "routes:\n- name: a\n  function: resize\n  source: {type: sqss, queue_url: q}\n"
    assert problems(text) == [
        "router.yaml:9:18: routes[0].source.type: unknown type 'sqss'; did you mean 'sqs'? "
        "valid types: webhook, schedule, sqs, kinesis, dynamodb_stream, amqp"
    ]


def test_missing_source_type(problems: Problems) -> None:
    assert problems(BASE + "routes:\n- name: a\n  function: resize\n  source: {path: /x}\n") == [
        "router.yaml:9:11: routes[0].source: missing 'type'; "
        "valid types: webhook, schedule, sqs, kinesis, dynamodb_stream, amqp"
    ]


def test_unknown_destination_and_auth_types(problems: Problems) -> None:
    assert problems(
        BASE + "    async: {on_failure: {type: gcs, bucket: b}}\n"
        "routes:\n- name: a\n  function: resize\n"
        "  source: {type: webhook, path: /a, auth: {type: basic}}\n"
    ) == [
        "router.yaml:6:32: functions.resize.async.on_failure.type: unknown type 'gcs'; "
        "valid types: file, http, function, sqs, sns, eventbridge, s3, amqp",
        "router.yaml:10:50: routes[0].source.auth.type: unknown type 'basic'; "
        "valid types: hmac, standard_webhooks, bearer, api_key",
    ]


def test_source_must_be_a_mapping(problems: Problems) -> None:
    assert problems(BASE + "routes:\n- {name: a, function: resize, source: webhook}\n") == [
        "router.yaml:7:39: routes[0].source: expected a mapping with a 'type' key, got a string"
    ]


def test_filters_must_be_mappings(problems: Problems) -> None:
    assert problems(
        BASE + "routes:\n- name: a\n  function: resize\n  source: {type: sqs, queue_url: http://sqs/q}\n"
        "  filters: [{body: {a: [1]}}, [x], oops]\n"
    ) == [
        "router.yaml:10:31: routes[0].filters[1]: expected a mapping, got a list",
        "router.yaml:10:36: routes[0].filters[2]: expected a mapping, got a string",
    ]


def test_filters_on_a_webhook_route_are_refused(problems: Problems) -> None:
    assert problems(
        BASE + "routes:\n- name: a\n  function: resize\n  source: {type: webhook, path: /a}\n"
        "  filters: [{body: {a: [1]}}]\n"
    ) == [
        "router.yaml:10:12: routes[0].filters: filters apply to polled sources (sqs, kinesis, "
        "dynamodb_stream, amqp), not to webhook routes; remove them or check the event in the function",
    ]


def test_secret_values_written_in_the_file_are_not_echoed(problems: Problems) -> None:
    assert problems(
        BASE + "routes:\n- name: a\n  function: resize\n"
        "  source: {type: webhook, path: /a, auth: {type: bearer, token: 12345678}}\n"
    ) == ["router.yaml:9:65: routes[0].source.auth.token: should be a valid string"]


def test_all_problems_are_reported_in_file_order(problems: Problems) -> None:
    lines = problems(
        """\
        server:
          port: high
        functions:
          resize:
            runtime: python3.11
            handler: app.handler
            code: ./fn
            timeout: 5 minutes
            memroy: 256
        routes:
          - name: a
            function: resise
            source: {type: schedule, cron: "61 * * * *", timezone: Mars/Olympus}
          - name: a
            function: resize
            source: {type: webhook, path: hooks}
        """
    )
    assert lines == [
        "router.yaml:2:9: server.port: should be a valid integer, got 'high'",
        "router.yaml:8:14: functions.resize.timeout: expected a duration such as 30s, 500ms or 5m, "
        "got '5 minutes'",
        "router.yaml:9:5: functions.resize.memroy: unknown key 'memroy'; did you mean 'memory'?",
        "router.yaml:12:15: routes[0].function: unknown function 'resise'; did you mean 'resize'?",
        "router.yaml:13:36: routes[0].source.cron: invalid cron '61 * * * *': Error validating "
        "expression '61': the last value (61) is higher than the maximum value (59)",
        "router.yaml:13:60: routes[0].source.timezone: unknown time zone 'Mars/Olympus'; "
        "use an IANA name such as UTC or Europe/Berlin",
        "router.yaml:14:11: routes[1].name: duplicate route name 'a' (first used at line 11)",
        "router.yaml:16:35: routes[1].source.path: path must start with '/', got 'hooks'",
    ]


def test_thousand_routes_load(load: Load) -> None:
    routes = "".join(
        f"  - name: r{i}\n    function: resize\n"
        + (
            f"    source: {{type: webhook, path: /hooks/{i}, methods: [POST]}}\n"
            if i % 2
            else f"    source: {{type: schedule, cron: '{i % 60} * * * *', timezone: Europe/Berlin}}\n"
        )
        for i in range(1000)
    )
    cfg = load(BASE + "routes:\n" + routes)
    assert len(cfg.routes) == 1000
    assert cfg.routes[999].name == "r999"


def test_single_literal_and_case_insensitive_suggestion(problems: Problems) -> None:
    assert problems(
        "version: 2\n" + BASE + "routes:\n- name: k\n  function: resize\n"
        "  source: {type: kinesis, stream_arn: 'arn:aws:kinesis:us-east-1:123456789012:stream/s', "
        "starting_position: latest}\n"
    ) == [
        "router.yaml:1:10: version: should be 1, got 2",
        "router.yaml:10:109: routes[0].source.starting_position: should be one of 'TRIM_HORIZON', "
        "'LATEST', 'AT_TIMESTAMP', got 'latest'; did you mean 'LATEST'?",
    ]
