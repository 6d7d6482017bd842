"""Lambda event filtering (DESIGN §4.4): EventBridge-style patterns, compiled once, matched per record.

``compile_filters(patterns)`` checks every pattern and raises :class:`FilterError` (a ``ValueError``)
naming the place inside the pattern; ``Filter.matches(data)`` is True when ANY pattern matches, as
Lambda ORs a mapping's filters (no filters: every record passes). ``sqs_filter_data``,
``kinesis_filter_data``, ``dynamodb_filter_data`` and ``mq_filter_data`` build what a pattern is
matched against, as Lambda does for each source.

Pattern syntax: nested objects down to arrays of matchers; a matcher is an exact value (string, number,
boolean, null) or one of ``{"prefix": s}``, ``{"suffix": s}``, ``{"equals-ignore-case": s}``,
``{"anything-but": v | [v, ...] | {"prefix"|"suffix"|"equals-ignore-case": s}}``,
``{"numeric": [">", 0, "<=", 5]}`` / ``{"numeric": ["=", 100]}`` and ``{"exists": true|false}``.
The matchers of one array are ORed, the fields of one object ANDed; when the data holds an array, the
field matches if any element does. Numbers compare as numbers (``5`` matches ``5.0``), never as strings,
and booleans are not numbers.

Lambda's format rule: a pattern and the data it looks at must agree in shape. An object pattern
(``{"body": {"type": [...]}}``) never matches a body that is a plain string, and a matcher array
(``{"body": [...]}``) never matches a body that is a JSON object, not even ``{"exists": false}``; a
pattern on Kinesis ``data`` that is not a JSON object never matches (Lambda drops such records).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from router.suggest import closest

Loc = tuple[str | int, ...]

OPERATORS: Final = ("prefix", "suffix", "equals-ignore-case", "anything-but", "numeric", "exists")
_ANYTHING_BUT_OPERATORS: Final = ("prefix", "suffix", "equals-ignore-case")
_LOWER: Final = (">", ">=")
_UPPER: Final = ("<", "<=")
_NUMERIC_OPS: Final = ("=", *_LOWER, *_UPPER)


class FilterError(ValueError):
    """Raised by :func:`compile_filters` for an invalid pattern.

    ``index`` is the pattern's position in the list and ``path`` the place inside it (keys and array
    indices), so the config loader can point at the line; ``str()`` reads
    ``filters[0].body.size[0].numeric: ...``.
    """

    def __init__(self, index: int, path: Loc, message: str) -> None:
        self.index = index
        self.path = path
        self.message = message
        super().__init__(f"{_format(('filters', index, *path))}: {message}")


def _format(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if part and all(c.isalnum() or c in "_-" for c in part) else repr(part)
            out += f".{key}" if out else key
    return out


class _Missing:
    """The value of a field the data does not have."""

    __slots__ = ()


class _Opaque:
    """Data that no pattern can look into (Kinesis data that is not JSON): every pattern on it fails."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<not JSON>"


MISSING: Final = _Missing()
OPAQUE: Final = _Opaque()

# --- matchers ------------------------------------------------------------------------------------------

Leaf = Callable[[Any], bool]
"""Tests one leaf value of the data (a string, number, boolean or null)."""


@dataclass(frozen=True, slots=True)
class _Exists:
    wanted: bool


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _exact(expected: Any) -> Leaf:
    if expected is None:
        return lambda v: v is None
    if isinstance(expected, bool):
        return lambda v: v is expected
    if _is_number(expected):
        return lambda v: _is_number(v) and v == expected
    return lambda v: isinstance(v, str) and v == expected


def _string_arg(value: Any, path: Loc, index: int, op: str) -> str:
    if not isinstance(value, str):
        raise FilterError(index, path, f"'{op}' takes a string, got {_show(value)}")
    return value


def _string_op(op: str, arg: str) -> Leaf:
    if op == "prefix":
        return lambda v: isinstance(v, str) and v.startswith(arg)
    if op == "suffix":
        return lambda v: isinstance(v, str) and v.endswith(arg)
    folded = arg.casefold()
    return lambda v: isinstance(v, str) and v.casefold() == folded


def _anything_but(value: Any, path: Loc, index: int) -> Leaf:
    if isinstance(value, dict):
        if len(value) != 1:
            raise FilterError(index, path, "'anything-but' with an object takes exactly one of "
                              f"{', '.join(_ANYTHING_BUT_OPERATORS)}, got {_show(value)}")
        (op, arg), = value.items()
        if op not in _ANYTHING_BUT_OPERATORS:
            raise FilterError(index, (*path, op), _unknown_operator(op, _ANYTHING_BUT_OPERATORS))
        inner = _string_op(op, _string_arg(arg, (*path, op), index, op))
        return lambda v: isinstance(v, str) and not inner(v)
    values = value if isinstance(value, list) else [value]
    if not values:
        raise FilterError(index, path, "'anything-but' needs at least one value")
    for i, item in enumerate(values):
        if not (isinstance(item, str) or _is_number(item)):
            where = (*path, i) if isinstance(value, list) else path
            raise FilterError(index, where, f"'anything-but' takes strings or numbers, got {_show(item)}")
    kinds = {isinstance(item, str) for item in values}
    if len(kinds) > 1:
        raise FilterError(index, path, "'anything-but' values must be all strings or all numbers, "
                          f"got {_show(value)}")
    tests = [_exact(item) for item in values]
    return lambda v: not any(t(v) for t in tests)


def _numeric(value: Any, path: Loc, index: int) -> Leaf:
    if not isinstance(value, list) or len(value) not in (2, 4):
        raise FilterError(index, path, "'numeric' takes [op, number] or [op, number, op, number] "
                          f"(op one of {', '.join(_NUMERIC_OPS)}), got {_show(value)}")
    pairs: list[tuple[str, float]] = []
    for i in range(0, len(value), 2):
        op, num = value[i], value[i + 1]
        if op not in _NUMERIC_OPS:
            raise FilterError(index, (*path, i),
                              f"unknown numeric operator {_show(op)}; use one of {', '.join(_NUMERIC_OPS)}")
        if not _is_number(num) or not math.isfinite(num):
            raise FilterError(index, (*path, i + 1), f"'{op}' needs a number, got {_show(num)}")
        pairs.append((op, float(num)))
    if len(pairs) == 2:
        ops = {pairs[0][0], pairs[1][0]}
        if "=" in ops or not (ops & set(_LOWER) and ops & set(_UPPER)):
            raise FilterError(index, path, "a numeric range takes one lower bound (> or >=) and one upper "
                              f"bound (< or <=), got {_show(value)}")
        low = next(p for p in pairs if p[0] in _LOWER)
        high = next(p for p in pairs if p[0] in _UPPER)
        if low[1] > high[1] or (low[1] == high[1] and (low[0], high[0]) != (">=", "<=")):
            raise FilterError(index, path, f"the numeric range {_show(value)} matches no number; "
                              "put the lower bound below the upper bound")
    checks = [_compare(op, num) for op, num in pairs]
    return lambda v: _is_number(v) and all(c(v) for c in checks)


def _compare(op: str, num: float) -> Leaf:
    if op == "=":
        return lambda v: bool(v == num)
    if op == ">":
        return lambda v: bool(v > num)
    if op == ">=":
        return lambda v: bool(v >= num)
    if op == "<":
        return lambda v: bool(v < num)
    return lambda v: bool(v <= num)


def _unknown_operator(op: str, known: Sequence[str]) -> str:
    near = closest(op, known)
    hint = f"did you mean {near!r}?" if near else f"use one of {', '.join(known)}"
    return f"unknown operator {op!r}; {hint}"


def _matcher(item: Any, path: Loc, index: int) -> Leaf | _Exists:
    if item is None or isinstance(item, str | bool) or _is_number(item):
        if _is_number(item) and not math.isfinite(item):
            raise FilterError(index, path, f"numbers must be finite, got {item!r}")
        return _exact(item)
    if isinstance(item, list):
        raise FilterError(index, path, "a matcher cannot be a list; put the values in the enclosing list")
    if not isinstance(item, dict):
        raise FilterError(index, path, f"expected a value or an operator object, got {_show(item)}")
    if len(item) != 1:
        raise FilterError(index, path, "an operator object holds exactly one operator "
                          f"({', '.join(OPERATORS)}), got {_show(item)}")
    (op, arg), = item.items()
    where = (*path, op)
    if op in ("prefix", "suffix", "equals-ignore-case"):
        return _string_op(op, _string_arg(arg, where, index, op))
    if op == "anything-but":
        return _anything_but(arg, where, index)
    if op == "numeric":
        return _numeric(arg, where, index)
    if op == "exists":
        if not isinstance(arg, bool):
            raise FilterError(index, where, f"'exists' takes true or false, got {_show(arg)}")
        return _Exists(arg)
    raise FilterError(index, where, _unknown_operator(op, OPERATORS))


# --- compiled patterns ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    """A matcher array: the field's leaf values must satisfy one of ``tests`` (or an exists test)."""

    tests: tuple[Leaf, ...]
    exists: tuple[bool, ...]

    def matches(self, value: Any) -> bool:
        if isinstance(value, dict | _Opaque):
            return False  # Lambda: a matcher array never matches an object (format mismatch)
        leaves = _leaves(value)
        if any(leaves if wanted else not leaves for wanted in self.exists):
            return True
        return any(test(leaf) for leaf in leaves for test in self.tests)


@dataclass(frozen=True, slots=True)
class _Object:
    """A nested pattern object: every field must match."""

    fields: tuple[tuple[str, _Field | _Object], ...]

    def matches(self, value: Any) -> bool:
        if isinstance(value, list):
            if not value:
                return self.matches(MISSING)
            return any(self.matches(element) for element in value)
        if isinstance(value, dict):
            return all(node.matches(value.get(key, MISSING)) for key, node in self.fields)
        if isinstance(value, _Missing):
            return all(node.matches(MISSING) for _, node in self.fields)
        return False  # Lambda: an object pattern never matches a plain string or other scalar


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, _Missing):
        return []
    if isinstance(value, list):
        out: list[Any] = []
        for element in value:
            if isinstance(element, list):
                out += _leaves(element)
            elif not isinstance(element, dict):
                out.append(element)
        return out
    return [value]


def _compile_object(pattern: Any, path: Loc, index: int) -> _Object:
    if not isinstance(pattern, dict):
        raise FilterError(index, path, f"a pattern must be an object, got {_show(pattern)}")
    if not pattern:
        raise FilterError(index, path, "an empty pattern object matches nothing useful; name at least "
                          "one field (omit 'filters' to pass every record)")
    fields: list[tuple[str, _Field | _Object]] = []
    for key, value in pattern.items():
        where = (*path, key)
        if not isinstance(key, str):
            raise FilterError(index, path, f"field names must be strings, got {key!r}")
        if isinstance(value, dict):
            fields.append((key, _compile_object(value, where, index)))
        elif isinstance(value, list):
            fields.append((key, _compile_field(value, where, index)))
        else:
            raise FilterError(index, where, f"expected a list of matchers or a nested object, got "
                              f"{_show(value)}; write [{json.dumps(value)}] to match that value")
    return _Object(tuple(fields))


def _compile_field(items: list[Any], path: Loc, index: int) -> _Field:
    if not items:
        raise FilterError(index, path, "an empty list of matchers matches nothing; give at least one")
    tests: list[Leaf] = []
    exists: list[bool] = []
    for i, item in enumerate(items):
        m = _matcher(item, (*path, i), index)
        if isinstance(m, _Exists):
            exists.append(m.wanted)
        else:
            tests.append(m)
    return _Field(tuple(tests), tuple(exists))


def _show(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True, slots=True)
class Filter:
    """Compiled filters of one route: a record passes when any pattern matches (or there is none)."""

    patterns: tuple[_Object, ...] = ()

    def matches(self, data: dict[str, Any]) -> bool:
        if not self.patterns:
            return True
        return any(p.matches(data) for p in self.patterns)

    def __bool__(self) -> bool:
        """False when there are no patterns: callers may skip building filter data."""
        return bool(self.patterns)


def compile_filters(patterns: Sequence[dict[str, Any]]) -> Filter:
    """Check and compile ``patterns``; raises :class:`FilterError` (a ``ValueError``) at the first problem."""
    return Filter(tuple(_compile_object(p, (), i) for i, p in enumerate(patterns)))


def check_filters(patterns: Sequence[Any]) -> list[FilterError]:
    """Every pattern's first problem (patterns that are not objects are skipped: the schema reports them)."""
    problems: list[FilterError] = []
    for i, pattern in enumerate(patterns):
        if not isinstance(pattern, dict):
            continue
        try:
            _compile_object(pattern, (), i)
        except FilterError as exc:
            problems.append(exc)
    return problems


# --- what patterns are matched against, per source -----------------------------------------------------


def _json_object(text: str | bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def sqs_filter_data(record: dict[str, Any]) -> dict[str, Any]:
    """An SQS record (Lambda's shape) as filters see it: ``body`` parsed when it is a JSON object, else
    the raw string (then only matcher arrays on ``body`` can match it); the other fields as they are."""
    body = record.get("body", "")
    parsed = _json_object(body) if isinstance(body, str) else None
    return {**record, "body": parsed if parsed is not None else body}


def kinesis_filter_data(record: dict[str, Any]) -> dict[str, Any]:
    """A Kinesis record (Lambda's shape) as filters see it: the fields of ``kinesis`` next to the record's
    own (eventSource, awsRegion, ...), with ``data`` base64-decoded and parsed. Data that is not a JSON
    object matches no pattern on ``data`` (Lambda drops it when a filter looks at ``data``)."""
    inner = record.get("kinesis")
    inner = inner if isinstance(inner, dict) else {}
    out = {k: v for k, v in record.items() if k != "kinesis"}
    out.update(inner)
    out["data"] = _decoded_json(inner.get("data"))
    return out


def dynamodb_filter_data(record: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB Streams record as filters see it: the record itself (``dynamodb``, ``eventName``, ...)."""
    return record


def mq_filter_data(record: dict[str, Any]) -> dict[str, Any]:
    """An Amazon MQ / RabbitMQ message (Lambda's shape, base64 ``data``) as filters see it: ``data``
    decoded and parsed when it is a JSON object, else the decoded UTF-8 string."""
    raw = record.get("data")
    decoded: Any = OPAQUE
    if isinstance(raw, str):
        try:
            text = base64.b64decode(raw, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            pass
        else:
            parsed = _json_object(text)
            decoded = parsed if parsed is not None else text
    return {**record, "data": decoded}


def _decoded_json(data: Any) -> Any:
    if not isinstance(data, str):
        return OPAQUE
    try:
        raw = base64.b64decode(data, validate=True)
    except binascii.Error:
        return OPAQUE
    parsed = _json_object(raw)
    return parsed if parsed is not None else OPAQUE
