"""Event filters: Lambda/EventBridge pattern syntax, per-source filter data, and config-load validation."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from router.config.loader import load_config_text
from router.errors import ConfigError
from router.filters import (
    FilterError,
    compile_filters,
    dynamodb_filter_data,
    kinesis_filter_data,
    mq_filter_data,
    sqs_filter_data,
)


def match(pattern: dict[str, Any], data: dict[str, Any]) -> bool:
    return compile_filters([pattern]).matches(data)


# --- matching ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("matchers", "value", "expected"),
    [
        (["a"], "a", True),
        (["a"], "b", False),
        (["a", "b"], "b", True),
        ([""], "", True),
        ([5], 5, True),
        ([5], 5.0, True),
        ([5], "5", False),
        (["5"], 5, False),
        ([True], True, True),
        ([True], 1, False),
        ([1], True, False),
        ([False], 0, False),
        ([None], None, True),
        ([None], "null", False),
        ([{"prefix": "ab"}], "abc", True),
        ([{"prefix": "ab"}], "xabc", False),
        ([{"prefix": "1"}], 12, False),
        ([{"suffix": ".png"}], "cat.png", True),
        ([{"suffix": ".png"}], "cat.jpg", False),
        ([{"equals-ignore-case": "Hello"}], "hELLO", True),
        ([{"equals-ignore-case": "Hello"}], "hell", False),
        ([{"anything-but": "x"}], "y", True),
        ([{"anything-but": "x"}], "x", False),
        ([{"anything-but": ["x", "y"]}], "y", False),
        ([{"anything-but": ["x", "y"]}], "z", True),
        ([{"anything-but": 3}], 3.0, False),
        ([{"anything-but": [1, 2]}], 4, True),
        ([{"anything-but": {"prefix": "tmp/"}}], "tmp/a", False),
        ([{"anything-but": {"prefix": "tmp/"}}], "data/a", True),
        ([{"anything-but": {"suffix": ".tmp"}}], "a.tmp", False),
        ([{"anything-but": {"equals-ignore-case": "no"}}], "NO", False),
        ([{"anything-but": {"equals-ignore-case": "no"}}], "yes", True),
        ([{"numeric": [">", 0]}], 1, True),
        ([{"numeric": [">", 0]}], 0, False),
        ([{"numeric": [">=", 0]}], 0, True),
        ([{"numeric": ["<", 0]}], -0.5, True),
        ([{"numeric": ["<=", 0]}], 0.1, False),
        ([{"numeric": ["=", 100]}], 100.0, True),
        ([{"numeric": ["=", 100]}], 101, False),
        ([{"numeric": [">", 0, "<=", 5]}], 5, True),
        ([{"numeric": [">", 0, "<=", 5]}], 5.01, False),
        ([{"numeric": ["<=", 5, ">", 0]}], 0, False),
        ([{"numeric": [">", 0]}], "7", False),
        ([{"numeric": [">", 0]}], True, False),
        ([{"exists": True}], "x", True),
        ([{"exists": True}], None, True),
        ([{"exists": False}], "x", False),
        (["a", {"numeric": [">", 10]}], 11, True),
    ],
)
def test_leaf_matchers(matchers: list[Any], value: Any, expected: bool) -> None:
    assert match({"f": matchers}, {"f": value}) is expected


@pytest.mark.parametrize(
    ("matchers", "expected"),
    [
        ([{"exists": False}], True),
        ([{"exists": True}], False),
        (["a"], False),
        ([None], False),  # null matches a null value, not a missing field
        ([{"anything-but": "a"}], False),  # anything-but needs the field
        ([{"numeric": [">", 0]}], False),
    ],
)
def test_missing_field(matchers: list[Any], expected: bool) -> None:
    assert match({"f": matchers}, {"other": 1}) is expected


def test_arrays_in_the_data_match_when_any_element_does() -> None:
    assert match({"tags": ["red"]}, {"tags": ["blue", "red"]})
    assert not match({"tags": ["red"]}, {"tags": ["blue", "green"]})
    assert match({"n": [{"numeric": [">", 10]}]}, {"n": [1, 2, 30]})
    assert not match({"tags": [{"exists": True}]}, {"tags": []})
    assert match({"tags": [{"exists": False}]}, {"tags": []})
    assert match({"tags": [{"anything-but": "red"}]}, {"tags": ["red", "blue"]})


def test_nested_objects_and_arrays_of_objects() -> None:
    pattern = {"order": {"type": ["buy"], "qty": [{"numeric": [">=", 100]}]}}
    assert match(pattern, {"order": {"type": "buy", "qty": 100, "x": 1}})
    assert not match(pattern, {"order": {"type": "buy", "qty": 99}})
    assert not match(pattern, {"order": {"type": "sell", "qty": 100}})
    items = {"items": {"sku": ["A"], "qty": [2]}}
    assert match(items, {"items": [{"sku": "B", "qty": 2}, {"sku": "A", "qty": 2}]})
    # both fields must hold in the same element
    assert not match(items, {"items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2}]})
    assert match({"a": {"b": [{"exists": False}]}}, {})
    assert not match({"a": {"b": ["x"]}}, {})


def test_all_fields_of_a_pattern_must_match() -> None:
    pattern = {"a": ["1"], "b": ["2"]}
    assert match(pattern, {"a": "1", "b": "2"})
    assert not match(pattern, {"a": "1", "b": "3"})
    assert not match(pattern, {"a": "1"})


def test_shape_mismatch_never_matches() -> None:
    # an object pattern against a plain string, a matcher list against an object (Lambda drops these)
    assert not match({"body": {"type": [{"exists": False}]}}, {"body": "plain text"})
    assert not match({"body": [{"exists": False}]}, {"body": {"type": "x"}})
    assert not match({"body": [{"exists": True}]}, {"body": {"type": "x"}})
    assert not match({"body": [{"anything-but": "x"}]}, {"body": {"type": "x"}})


def test_filters_are_ored_and_no_filters_pass_everything() -> None:
    f = compile_filters([{"a": ["1"]}, {"b": ["2"]}])
    assert f.matches({"a": "1"})
    assert f.matches({"b": "2"})
    assert not f.matches({"a": "2", "b": "1"})
    empty = compile_filters([])
    assert not empty
    assert empty.matches({"anything": 1})
    assert f


# --- invalid patterns ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        ([{}], r"^filters\[0\]: an empty pattern object matches nothing useful"),
        ([{"a": ["x"]}, {"b": {}}], r"^filters\[1\]\.b: an empty pattern object"),
        ([{"a": "x"}], r"^filters\[0\]\.a: expected a list of matchers or a nested object, got \"x\"; "
                       r"write \[\"x\"\] to match that value"),
        ([{"a": 5}], r"^filters\[0\]\.a: expected a list of matchers .* got 5"),
        ([{"a": []}], r"^filters\[0\]\.a: an empty list of matchers matches nothing"),
        ([{"a": [["x"]]}], r"^filters\[0\]\.a\[0\]: a matcher cannot be a list"),
        ([{"a": [{"prefx": "x"}]}], r"^filters\[0\]\.a\[0\]\.prefx: unknown operator 'prefx'; "
                                    r"did you mean 'prefix'\?"),
        ([{"a": [{"wildcard": "x*"}]}], r"^filters\[0\]\.a\[0\]\.wildcard: unknown operator 'wildcard'; "
                                        r"use one of prefix, suffix"),
        ([{"a": [{"prefix": "x", "suffix": "y"}]}],
         r"^filters\[0\]\.a\[0\]: an operator object holds exactly one operator"),
        ([{"a": [{}]}], r"^filters\[0\]\.a\[0\]: an operator object holds exactly one operator"),
        ([{"a": [{"prefix": 5}]}], r"^filters\[0\]\.a\[0\]\.prefix: 'prefix' takes a string, got 5"),
        ([{"a": [{"suffix": None}]}], r"'suffix' takes a string, got null"),
        ([{"a": [{"equals-ignore-case": ["x"]}]}], r"'equals-ignore-case' takes a string"),
        ([{"a": [{"exists": "yes"}]}], r"^filters\[0\]\.a\[0\]\.exists: 'exists' takes true or false, "
                                       r"got \"yes\""),
        ([{"a": [{"numeric": 5}]}], r"^filters\[0\]\.a\[0\]\.numeric: 'numeric' takes \[op, number\]"),
        ([{"a": [{"numeric": [">"]}]}], r"'numeric' takes \[op, number\] or"),
        ([{"a": [{"numeric": [">", 1, "<"]}]}], r"'numeric' takes"),
        ([{"a": [{"numeric": ["!=", 1]}]}], r"^filters\[0\]\.a\[0\]\.numeric\[0\]: unknown numeric "
                                            r"operator \"!=\"; use one of =, >, >=, <, <="),
        ([{"a": [{"numeric": [">", "1"]}]}], r"^filters\[0\]\.a\[0\]\.numeric\[1\]: '>' needs a number, "
                                             r"got \"1\""),
        ([{"a": [{"numeric": [">", True]}]}], r"'>' needs a number, got true"),
        ([{"a": [{"numeric": [">", 1, ">", 2]}]}], r"a numeric range takes one lower bound"),
        ([{"a": [{"numeric": ["=", 1, "<", 2]}]}], r"a numeric range takes one lower bound"),
        ([{"a": [{"numeric": [">", 5, "<", 5]}]}], r"the numeric range .* matches no number"),
        ([{"a": [{"numeric": [">", 6, "<", 5]}]}], r"matches no number; put the lower bound below"),
        ([{"a": [{"anything-but": []}]}], r"'anything-but' needs at least one value"),
        ([{"a": [{"anything-but": ["x", 1]}]}], r"'anything-but' values must be all strings or all numbers"),
        ([{"a": [{"anything-but": [None]}]}], r"^filters\[0\]\.a\[0\]\.anything-but\[0\]: 'anything-but' "
                                              r"takes strings or numbers, got null"),
        ([{"a": [{"anything-but": True}]}], r"'anything-but' takes strings or numbers, got true"),
        ([{"a": [{"anything-but": {"numeric": [">", 1]}}]}],
         r"^filters\[0\]\.a\[0\]\.anything-but\.numeric: unknown operator 'numeric'"),
        ([{"a": [{"anything-but": {"prefix": 1}}]}], r"anything-but\.prefix: 'prefix' takes a string"),
        ([{"a": [{"anything-but": {"prefix": "a", "suffix": "b"}}]}],
         r"'anything-but' with an object takes exactly one of prefix, suffix, equals-ignore-case"),
        ([{"a": [float("nan")]}], r"numbers must be finite"),
        ([{"a": {"b": {"c": [{"prefix": 1}]}}}], r"^filters\[0\]\.a\.b\.c\[0\]\.prefix: "),
        ([{"my field": [{"exists": 1}]}], r"^filters\[0\]\.'my field'\[0\]\.exists: "),
        (["body"], r"^filters\[0\]: a pattern must be an object, got \"body\""),
    ],
)
def test_invalid_patterns(patterns: list[Any], message: str) -> None:
    with pytest.raises(FilterError, match=message) as info:
        compile_filters(patterns)
    assert isinstance(info.value, ValueError)


def test_filter_error_carries_index_and_path() -> None:
    with pytest.raises(FilterError) as info:
        compile_filters([{"a": ["x"]}, {"body": {"size": [{"numeric": [">", "big"]}]}}])
    assert info.value.index == 1
    assert info.value.path == ("body", "size", 0, "numeric", 1)
    assert info.value.message == "'>' needs a number, got \"big\""


# --- per-source filter data ----------------------------------------------------------------------------


def _sqs(body: str) -> dict[str, Any]:
    return {"messageId": "m1", "receiptHandle": "r", "body": body, "attributes": {"SenderId": "S"},
            "messageAttributes": {}, "eventSource": "aws:sqs", "awsRegion": "us-east-1"}


def test_sqs_json_body_is_parsed() -> None:
    data = sqs_filter_data(_sqs('{"type": "image.uploaded", "size": 12}'))
    assert data["body"] == {"type": "image.uploaded", "size": 12}
    assert data["messageId"] == "m1"
    f = compile_filters([{"body": {"type": ["image.uploaded"], "size": [{"numeric": ["<", 100]}]}}])
    assert f.matches(data)
    assert not f.matches(sqs_filter_data(_sqs('{"type": "image.deleted", "size": 12}')))


def test_sqs_plain_body_matches_only_string_patterns() -> None:
    data = sqs_filter_data(_sqs("hello world"))
    assert data["body"] == "hello world"
    assert match({"body": [{"prefix": "hello"}]}, data)
    assert not match({"body": {"type": ["x"]}}, data)
    assert not match({"body": {"type": [{"exists": False}]}}, data)
    # a JSON body that is not an object stays the raw string
    assert sqs_filter_data(_sqs("[1, 2]"))["body"] == "[1, 2]"
    assert match({"body": ["42"]}, sqs_filter_data(_sqs("42")))


def test_sqs_json_body_is_not_matched_by_string_patterns() -> None:
    data = sqs_filter_data(_sqs('{"a": 1}'))
    assert not match({"body": [{"prefix": "{"}]}, data)


def test_sqs_metadata_can_be_filtered() -> None:
    data = sqs_filter_data(_sqs("x"))
    assert match({"attributes": {"SenderId": ["S"]}}, data)
    assert not match({"attributes": {"SenderId": ["T"]}}, data)


def test_sqs_filter_data_leaves_the_record_alone() -> None:
    record = _sqs('{"a": 1}')
    sqs_filter_data(record)
    assert record["body"] == '{"a": 1}'


def _kinesis(data: bytes) -> dict[str, Any]:
    return {
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "pk-1", "sequenceNumber": "49",
                    "data": base64.b64encode(data).decode(), "approximateArrivalTimestamp": 1.5},
        "eventSource": "aws:kinesis", "eventName": "aws:kinesis:record", "awsRegion": "us-east-1",
    }


def test_kinesis_data_is_decoded_and_flattened() -> None:
    data = kinesis_filter_data(_kinesis(json.dumps({"order": {"type": "buy", "qty": 5}}).encode()))
    assert data["data"] == {"order": {"type": "buy", "qty": 5}}
    assert data["partitionKey"] == "pk-1"
    assert data["eventSource"] == "aws:kinesis"
    assert match({"data": {"order": {"type": ["buy"]}}}, data)
    assert match({"partitionKey": [{"prefix": "pk-"}], "data": {"order": {"qty": [5]}}}, data)
    assert not match({"data": {"order": {"type": ["sell"]}}}, data)


@pytest.mark.parametrize("raw", [b"plain text", b"\xff\xfe", b"[1, 2]", b'"s"'])
def test_kinesis_data_that_is_not_a_json_object_matches_no_data_pattern(raw: bytes) -> None:
    data = kinesis_filter_data(_kinesis(raw))
    for pattern in ({"data": {"a": [{"exists": False}]}}, {"data": [{"exists": True}]},
                    {"data": [{"exists": False}]}, {"data": [{"prefix": ""}]}):
        assert not match(pattern, data), pattern
    assert match({"partitionKey": ["pk-1"]}, data)  # metadata still works


def test_kinesis_bad_base64_matches_no_data_pattern() -> None:
    record = _kinesis(b"{}")
    record["kinesis"]["data"] = "not base64!"
    assert not match({"data": {"a": [{"exists": False}]}}, kinesis_filter_data(record))


def test_dynamodb_record_is_matched_as_it_is() -> None:
    record = {
        "eventName": "INSERT", "eventSource": "aws:dynamodb",
        "dynamodb": {"Keys": {"id": {"S": "1"}}, "NewImage": {"id": {"S": "1"}, "n": {"N": "5"}}},
    }
    data = dynamodb_filter_data(record)
    assert match({"eventName": ["INSERT"], "dynamodb": {"NewImage": {"n": {"N": ["5"]}}}}, data)
    assert not match({"eventName": ["REMOVE"]}, data)
    assert match({"dynamodb": {"OldImage": [{"exists": False}]}}, data)


def test_mq_data_is_decoded() -> None:
    as_json = mq_filter_data({"data": base64.b64encode(b'{"timeout": 3}').decode()})
    assert match({"data": {"timeout": [{"numeric": [">", 0]}]}}, as_json)
    plain = mq_filter_data({"data": base64.b64encode(b"Result: ok").decode()})
    assert match({"data": [{"prefix": "Result: "}]}, plain)
    assert not match({"data": [{"prefix": "x"}]}, mq_filter_data({"data": "%%%"}))


# --- validated at config load --------------------------------------------------------------------------

CONFIG = """\
functions:
  fn:
    runtime: python3.11
    handler: app.handler
    code: .
routes:
  - name: uploads
    function: fn
    source: {type: sqs, queue_url: http://localhost:4566/000000000000/q}
    filters:
      - body:
          type: [image.uploaded]
      - body:
          size: [{numeric: [">", big]}]
          kind: [{prefx: img}]
      - body: {a: [{exists: maybe}]}
"""


def test_config_load_reports_every_bad_pattern_with_its_position(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(CONFIG, "router.yaml", {}, config_dir=tmp_path)
    assert info.value.problems == [
        "router.yaml:14:34: routes[0].filters[1].body.size[0].numeric[1]: '>' needs a number, got \"big\"",
        "router.yaml:16:29: routes[0].filters[2].body.a[0].exists: 'exists' takes true or false, "
        "got \"maybe\"",
    ]


def test_config_with_good_patterns_loads(tmp_path: Path) -> None:
    text = CONFIG.split("      - body:\n          size")[0]
    config = load_config_text(text, "router.yaml", {}, config_dir=tmp_path)
    f = compile_filters(config.routes[0].filters)
    assert f.matches(sqs_filter_data(_sqs('{"type": "image.uploaded"}')))


def test_config_does_not_echo_values_from_the_environment(tmp_path: Path) -> None:
    text = CONFIG.replace("[{exists: maybe}]", '[{prefix: "${SECRET_PREFIX}", suffix: x}]')
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "router.yaml", {"SECRET_PREFIX": "s3cr3t"}, config_dir=tmp_path)
    assert "s3cr3t" not in str(info.value)
    assert any("routes[0].filters[2].body.a[0]: invalid filter pattern (value from ${SECRET_PREFIX})"
               in p for p in info.value.problems), info.value.problems
