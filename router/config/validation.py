"""Model validation of parsed config data, with pydantic's errors turned into positioned, human problems."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, BeforeValidator, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from router.config.models import RouterConfig
from router.config.problems import Loc, Position, Problem, format_loc, suggestion
from router.config.units import parse_duration
from router.config.yaml_source import Document
from router.suggest import closest

# Values under these keys are never echoed in messages, even when they were written in the file.
_SENSITIVE = ("secret", "token", "password", "passwd", "key", "authorization", "credential",
              "headers", "environment", "url", "state", "dsn")
_SCALARS = (str, int, float, bool, type(None))


def validate(doc: Document) -> tuple[RouterConfig | None, list[Problem]]:
    """Validate ``doc.data`` as a :class:`RouterConfig`; return the model (or None) and every problem."""
    try:
        return RouterConfig.model_validate(doc.data), []
    except ValidationError as exc:
        return None, problems_from(exc, doc)


def problems_from(exc: ValidationError, doc: Document) -> list[Problem]:
    """One problem per distinct pydantic error; errors from the branches of one union are merged."""
    out: list[Problem] = []
    union_paths: set[Loc] = set()
    for err in exc.errors(include_url=False):
        path, via_branch = _data_loc(err, doc.data)
        if via_branch:
            if path in union_paths:
                continue  # one message per value: the first branch's (the most specific) is kept
            union_paths.add(path)
        out.append(_problem(err, path, doc))
    return out


def _data_loc(err: ErrorDetails, data: Any) -> tuple[Loc, bool]:
    """Map pydantic's ``loc`` onto the data: drop discriminator tags and union-member labels.

    Returns the path and whether a union-member label was dropped.
    """
    loc = err["loc"]
    missing = err["type"] == "missing"
    path: list[str | int] = []
    cur: Any = data
    via_branch = False
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(cur, dict):
            if not last and isinstance(part, str) and cur.get("type") == part:
                continue  # the tag of a discriminated union (routes[0].source -> 'sqs' -> queue_url)
            if isinstance(part, str) and part in cur:
                path.append(part)
                cur = cur[part]
                continue
            if last and missing and isinstance(part, str):
                path.append(part)
                continue
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            path.append(part)
            cur = cur[part]
            continue
        if isinstance(part, str) and part != "[key]":
            via_branch = True
    return tuple(path), via_branch


def _problem(err: ErrorDetails, path: Loc, doc: Document) -> Problem:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = _get(doc.data, path)
    origin = doc.origins.get(path)
    position: Position = doc.position(path)
    where = format_loc(path)

    if kind == "missing":
        position = doc.position(path[:-1])
        message = "required key is missing"
    elif kind == "extra_forbidden":
        position = doc.key_position(path)
        key = str(path[-1])
        message = f"unknown key {key!r}" + suggestion(key, _allowed_keys(path[:-1], doc.data), "keys")
    elif kind == "union_tag_invalid":
        tags = _unquote_list(str(ctx.get("expected_tags", "")))
        tag = str(ctx.get("tag", ""))
        tag_loc = (*path, "type")
        position = doc.position(tag_loc)
        where = format_loc(tag_loc)
        shown = doc.origins[tag_loc].describe() if tag_loc in doc.origins else repr(tag)
        message = f"unknown type {shown}" + _types_hint(tag, tags, tag_loc in doc.origins)
    elif kind == "union_tag_not_found":
        tags = _union_tags(path, doc.data)
        if isinstance(value, dict):
            message = "missing 'type'" + (f"; valid types: {', '.join(tags)}" if tags else "")
        else:
            message = f"expected a mapping with a 'type' key, got {_kind(value)}"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        typed = " with a 'type' key" if _union_tags(path, doc.data) else ""
        message = f"expected a mapping{typed}, got {_kind(value)}"
    elif kind == "list_type":
        message = f"expected a list, got {_kind(value)}"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal") \
            and _is_duration(path, doc.data):
        bound = float(next(iter(ctx.values())))
        word = {"greater_than": "more than", "greater_than_equal": "at least",
                "less_than": "less than", "less_than_equal": "at most"}[kind]
        message = f"should be {word} {_human_seconds(bound)}" + _got(path, value, origin)
    elif kind == "literal_error":
        shown_expected = str(ctx.get("expected", "")).replace(" or ", ", ")
        expected = _unquote_list(shown_expected)
        one_of = "one of " if len(expected) > 1 else ""
        message = f"should be {one_of}{shown_expected}" + _got(path, value, origin)
        near = closest(value, expected) if isinstance(value, str) and origin is None else None
        if near is not None:
            message += f"; did you mean {near!r}?"
    elif kind in ("value_error", "assertion_error"):
        message = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    else:
        message = err["msg"].replace("Input should be", "should be", 1).split(", unable to parse")[0]
        message = message[0].lower() + message[1:] if message else message
        message += _got(path, value, origin)
    return Problem(position, where, _redact(message, path, doc))


def _got(path: Loc, value: Any, origin: Any) -> str:
    if origin is not None:
        return f", got {origin.describe()}"
    if not isinstance(value, _SCALARS) or _sensitive(path):
        return ""
    text = repr(value)
    return f", got {text if len(text) <= 60 else text[:57] + '...'}"


def _redact(message: str, path: Loc, doc: Document) -> str:
    """Replace any interpolated value at or below ``path`` that a validator echoed."""
    for origin in doc.origins_under(path):
        described = origin.describe()
        message = message.replace(repr(origin.value), described)
        if len(origin.value) >= 4:
            message = message.replace(origin.value, described)
    return message


def secret_values(doc: Document) -> dict[str, str]:
    """``value -> variable name`` of every environment value that landed in a text setting.

    Numbers, booleans, durations, sizes and fixed words (``level: ${LOG_LEVEL}``) are not secrets; any
    other interpolated text is, including where the type is not known (``input``, ``filters``).
    """
    out: dict[str, str] = {}
    for loc, origin in doc.origins.items():
        if not origin.secrets:
            continue
        try:
            tp, _ = _resolve(loc, doc.data)
        except Exception:  # an odd path in invalid data: treat it as text, the safe side
            tp = None
        if tp is not None and not _is_text(tp):
            continue
        for name, value in origin.secrets:
            out.setdefault(value, name)
    return out


def _is_text(tp: Any) -> bool:
    """False when every member of ``tp`` is a number, a boolean or a Literal."""
    for member in _members(tp):
        if typing.get_origin(member) is typing.Annotated:
            if _is_text(member):
                return True
            continue
        if member in (int, float, bool) or typing.get_origin(member) is typing.Literal:
            continue
        return True
    return False


def _sensitive(path: Loc) -> bool:
    return any(isinstance(p, str) and any(s in p.lower() for s in _SENSITIVE) for p in path)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _types_hint(tag: str, tags: list[str], hidden: bool) -> str:
    valid = f"valid types: {', '.join(tags)}"
    near = None if hidden else closest(tag, tags)
    return f"; did you mean {near!r}? {valid}" if near is not None else f"; {valid}"


def _unquote_list(text: str) -> list[str]:
    """``"'a', 'b' or 'c'"`` -> ``['a', 'b', 'c']``."""
    parts = text.replace(" or ", ", ").split(", ")
    return [p.strip().strip("'") for p in parts if p.strip()]


def _human_seconds(seconds: float) -> str:
    if seconds == 0:
        return "0"
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def _get(data: Any, path: Loc) -> Any:
    cur = data
    for part in path:
        if isinstance(cur, dict) and isinstance(part, str):
            cur = cur.get(part)
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            cur = cur[part]
        else:
            return None
    return cur


# --- walking the models along a data path ------------------------------------------------------------


def _resolve(path: Loc, data: Any) -> tuple[Any, FieldInfo | None]:
    """The type expected at ``path`` (a model class, a union, ...) and the model field it belongs to."""
    tp: Any = RouterConfig
    info: FieldInfo | None = None
    cur: Any = data
    for part in path:
        tp = _pick(tp, cur)
        info = None
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
            info = _field(tp, part)
            if info is None:
                return None, None
            tp = info.annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        elif typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        else:
            return None, None
        cur = _get(cur, (part,))
    return _pick(tp, cur), info


def _field(model: type[BaseModel], key: str) -> FieldInfo | None:
    for name, info in model.model_fields.items():
        if key in (info.alias, name):
            return info
    return None


def _members(tp: Any) -> list[Any]:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def _pick(tp: Any, value: Any) -> Any:
    """Unwrap Annotated/Optional; for a union of models choose the member whose ``type`` matches."""
    members = _members(tp)
    if len(members) == 1:
        if typing.get_origin(members[0]) is typing.Annotated:  # Optional[Annotated[Union[...]]]
            return _pick(members[0], value)
        return members[0]
    if isinstance(value, dict):
        for m in members:
            if isinstance(m, type) and issubclass(m, BaseModel) and value.get("type") in _tags_of(m):
                return m
    return tp


def _tags_of(model: type[BaseModel]) -> tuple[Any, ...]:
    info = model.model_fields.get("type")
    return typing.get_args(info.annotation) if info is not None else ()


def _allowed_keys(path: Loc, data: Any) -> list[str]:
    tp, _ = _resolve(path, data)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [info.alias or name for name, info in tp.model_fields.items()]
    return []


def _union_tags(path: Loc, data: Any) -> list[str]:
    tp, _ = _resolve(path, data)
    tags: list[str] = []
    for m in _members(tp):
        if isinstance(m, type) and issubclass(m, BaseModel):
            tags.extend(str(t) for t in _tags_of(m))
    return tags


def _is_duration(path: Loc, data: Any) -> bool:
    _, info = _resolve(path, data)
    if info is None:
        return False
    return _has_duration(info.metadata) or _has_duration([info.annotation])


def _has_duration(items: list[Any]) -> bool:
    for item in items:
        if isinstance(item, BeforeValidator) and item.func is parse_duration:
            return True
        if typing.get_origin(item) in (typing.Annotated, typing.Union, types.UnionType) \
                and _has_duration(list(typing.get_args(item))):
            return True
    return False
