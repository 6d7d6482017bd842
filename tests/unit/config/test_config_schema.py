"""The draft-07 JSON Schema: equal to the committed file, and it agrees with the loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from router.config.schema import DRAFT_07, json_schema, json_schema_text

from .conftest import EXAMPLE

jsonschema = pytest.importorskip("jsonschema")

COMMITTED = Path(__file__).resolve().parents[3] / "config" / "schema.json"


def _errors(instance: Any) -> list[str]:
    validator = jsonschema.Draft7Validator(json_schema())
    return sorted(".".join(str(p) for p in e.absolute_path) for e in validator.iter_errors(instance))


def test_committed_schema_is_up_to_date() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == json_schema_text(), (
        "config/schema.json is out of date; regenerate it with: router schema > config/schema.json"
    )
    assert json.loads(COMMITTED.read_text(encoding="utf-8")) == json_schema()


def test_is_a_valid_draft_07_schema() -> None:
    schema = json_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == DRAFT_07
    assert schema["title"] == "router configuration"
    text = json.dumps(schema)
    assert "$defs" not in text
    assert '"$ref": "#/definitions/' in text


def test_yaml_key_names_are_used() -> None:
    props = json_schema()["definitions"]["FunctionConfig"]["properties"]
    assert {"lambda", "async"} <= props.keys()
    assert not {"lambda_", "async_"} & props.keys()


def test_design_example_validates() -> None:
    assert _errors(yaml.safe_load(EXAMPLE)) == []


@pytest.mark.parametrize(
    ("snippet", "bad_path"),
    [
        ({"server": {"max_body": "6 megs"}}, "server.max_body"),
        ({"server": {"shutdown_timeout": "5 minutes"}}, "server.shutdown_timeout"),
        ({"servr": {}}, ""),
        ({"functions": {"f": {"runtime": "python3.11", "code": ".", "timout": 3}}}, "functions.f"),
        ({"routes": [{"name": "a", "function": "f", "source": {"type": "sqss"}}]}, "routes.0.source"),
    ],
)
def test_schema_rejects_what_the_loader_rejects(snippet: dict[str, Any], bad_path: str) -> None:
    assert bad_path in _errors(snippet)


@pytest.mark.parametrize(
    "snippet",
    [
        {"server": {"port": "${PORT:-8080}", "max_body": "256KiB", "shutdown_timeout": "500ms"}},
        {"server": {"shutdown_timeout": 10, "max_body": 1024}},
        {"state": "sqlite:///state.db"},
        {"state": {"url": "postgresql://db/router", "durability": "normal", "write_timeout": "2s"}},
        {"functions": {"f": {"runtime": "python3.11", "handler": "a.b", "code": ".",
                             "environment": {"N": 1, "B": True, "S": "x"}, "timeout": "${T:-3s}"}}},
        {"routes": [{"name": "k", "function": "f",
                     "source": {"type": "kinesis", "stream_arn": "s", "max_record_age": -1}}]},
    ],
)
def test_schema_accepts_string_forms_and_interpolation(snippet: dict[str, Any]) -> None:
    assert _errors(snippet) == []
