"""JSON Schema (draft-07, for yaml-language-server and other editors) of the YAML config.

``router schema > config/schema.json`` writes :func:`json_schema_text`; a test keeps the committed file
equal to it.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from router.config.models import RouterConfig
from router.config.units import parse_duration, parse_size

DRAFT_07 = "http://json-schema.org/draft-07/schema#"
TITLE = "router configuration"

DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([bB]|[kKmMgG][iI]?[bB])?\s*$"
INTERPOLATION_PATTERN = r"\$\{[A-Za-z_][A-Za-z0-9_]*"
_ENV_VALUE = {"type": ["string", "number", "boolean", "null"]}
_META = ("default", "description", "title")


class _Draft07(GenerateJsonSchema):
    """Pydantic's generator, with durations and sizes accepting their string forms."""

    def function_before_schema(self, schema: core_schema.BeforeValidatorFunctionSchema) -> JsonSchemaValue:
        inner = super().function_before_schema(schema)
        func = schema["function"]["function"]
        if func is parse_duration:
            return {
                "anyOf": [inner, {"type": "string", "pattern": DURATION_PATTERN}],
                "description": "seconds, or a duration such as 500ms, 30s, 5m, 6h",
            }
        if func is parse_size:
            return {
                "anyOf": [inner, {"type": "string", "pattern": SIZE_PATTERN}],
                "description": "bytes, or a size such as 256KB, 6MB (binary units, as AWS counts)",
            }
        if getattr(func, "__name__", "") == "_state_url":
            # ``state: URL`` is short for ``state: {url: URL}``.
            return {"anyOf": [{"type": "string"}, inner]}
        if getattr(func, "__name__", "") == "_stringify_env" and inner.get("type") == "object":
            # Environment values may be written as numbers or booleans; they are turned into strings.
            return {**inner, "additionalProperties": _ENV_VALUE}
        return inner


def json_schema() -> dict[str, Any]:
    """The draft-07 JSON Schema of :class:`~router.config.models.RouterConfig` (YAML key names)."""
    schema = RouterConfig.model_json_schema(
        by_alias=True, mode="validation", ref_template="#/definitions/{model}", schema_generator=_Draft07
    )
    schema = _allow_interpolation(schema)
    definitions = schema.pop("$defs", {})
    out: dict[str, Any] = {"$schema": DRAFT_07, **schema, "title": TITLE}
    if definitions:
        out["definitions"] = definitions
    # Round trip through JSON: plain dicts and lists only, equal to what the committed file holds.
    result: dict[str, Any] = json.loads(json.dumps(out))
    return result


def json_schema_text() -> str:
    """The schema as the committed ``config/schema.json``: indented, sorted keys, trailing newline."""
    return json.dumps(json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _allow_interpolation(node: Any) -> Any:
    """Let number and boolean fields also hold a string with ``${VAR}`` (e.g. ``port: ${PORT:-8080}``):
    interpolation happens before validation, so such strings are valid there."""
    if isinstance(node, list):
        return [_allow_interpolation(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _allow_interpolation(v) for k, v in node.items()}
    if out.get("type") in ("integer", "number", "boolean"):
        meta = {k: out.pop(k) for k in _META if k in out}
        return {"anyOf": [out, {"type": "string", "pattern": INTERPOLATION_PATTERN}], **meta}
    return out
