"""Compose-style ``${VAR}`` interpolation of config string values.

Supported forms (as in Docker Compose):

- ``${VAR}``: the value of VAR; unset is an error (Compose would warn and use ""), empty is ""
- ``${VAR:-default}`` / ``${VAR-default}``: default when VAR is unset or empty / unset only
- ``${VAR:?message}`` / ``${VAR?message}``: error with message when VAR is unset or empty / unset only
- ``${VAR:+other}`` / ``${VAR+other}``: ``other`` when VAR is set and non-empty / set, else ""
- ``$$``: a literal ``$``

Defaults and replacements may themselves contain ``${...}``. A ``$`` followed by anything else is kept
as it is (so regular expressions and passwords with a lone ``$`` need no escaping); bare ``$VAR`` is
not interpolated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


class InterpolationError(ValueError):
    """Raised when a ``${...}`` expression is malformed or names a required variable that is not set.

    The message never contains the value of any variable.
    """


@dataclass
class Interpolated:
    """The result of interpolating one string."""

    value: str
    variables: list[str] = field(default_factory=list)
    """Names of the variables whose values were read (in order of appearance)."""
    secrets: list[tuple[str, str]] = field(default_factory=list)
    """``(name, value)`` of each variable whose value is part of ``value`` (not a default, not the
    replacement of ``${VAR:+other}``): the text that came from the environment."""

    @property
    def substituted(self) -> bool:
        """True when the value contains text that came from the environment."""
        return bool(self.variables)


def has_interpolation(text: str) -> bool:
    """Cheap test: could ``text`` change under :func:`interpolate`?"""
    return "$" in text


def interpolate(text: str, env: Mapping[str, str]) -> Interpolated:
    """Expand ``${...}`` expressions in ``text`` using ``env``.

    Raises :class:`InterpolationError` with a message fit for users (no variable values in it).
    """
    if "$" not in text:
        return Interpolated(text)
    out = Interpolated("")
    out.value = _expand(text, env, out.variables, out.secrets)
    return out


def _expand(text: str, env: Mapping[str, str], used: list[str], secrets: list[tuple[str, str]]) -> str:
    parts: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        j = text.find("$", i)
        if j < 0:
            parts.append(text[i:])
            break
        parts.append(text[i:j])
        nxt = text[j + 1] if j + 1 < n else ""
        if nxt == "$":
            parts.append("$")
            i = j + 2
        elif nxt == "{":
            end = _closing_brace(text, j + 2)
            if end < 0:
                raise InterpolationError(
                    f"unterminated ${{ in {_excerpt(text[j:])}; close it with }} or write $$ for a literal $"
                )
            parts.append(_substitute(text[j + 2 : end], env, used, secrets))
            i = end + 1
        else:
            parts.append("$")
            i = j + 1
    return "".join(parts)


def _closing_brace(text: str, start: int) -> int:
    """Index of the ``}`` closing a ``${`` whose body starts at ``start``, honouring nesting."""
    depth = 1
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if c == "$" and i + 1 < n and text[i + 1] == "$":
            i += 2
            continue
        if c == "$" and i + 1 < n and text[i + 1] == "{":
            depth += 1
            i += 2
            continue
        if c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _substitute(body: str, env: Mapping[str, str], used: list[str], secrets: list[tuple[str, str]]) -> str:
    m = _NAME.match(body)
    if m is None:
        raise InterpolationError(
            f"invalid interpolation ${{{body}}}: expected a variable name such as ${{NAME}}; "
            "write $$ for a literal $"
        )
    name = m.group(0)
    rest = body[m.end() :]
    op = next((o for o in _OPERATORS if rest.startswith(o)), None)
    if rest and op is None:
        raise InterpolationError(
            f"invalid interpolation ${{{body}}}: after the name expected }}, :-, -, :?, ?, :+ or +"
        )
    arg = rest[len(op) :] if op else ""
    value = env.get(name)
    used.append(name)
    is_set = value is not None
    is_full = bool(value)
    if op is None:
        if value is None:
            raise InterpolationError(
                f"variable {name} is not set; set it, or give a default with ${{{name}:-default}}"
            )
        return _read(name, value, secrets)
    if op in (":-", "-"):
        if is_full or (op == "-" and is_set):
            return _read(name, value or "", secrets)
        return _expand(arg, env, used, secrets)
    if op in (":?", "?"):
        if is_full or (op == "?" and is_set):
            return _read(name, value or "", secrets)
        what = "is not set" if not is_set else "is empty"
        detail = arg.replace("$$", "$")  # shown to users: never expanded, so it cannot carry a value
        raise InterpolationError(f"variable {name} {what}" + (f": {detail}" if detail else ""))
    # ":+" / "+"
    if is_full or (op == "+" and is_set):
        return _expand(arg, env, used, secrets)
    return ""


def _read(name: str, value: str, secrets: list[tuple[str, str]]) -> str:
    if value:
        secrets.append((name, value))
    return value


def _excerpt(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
