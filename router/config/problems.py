"""One config problem, its position and its path, formatted as ``FILE:LINE:COL: path: message``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from router.suggest import closest

Loc = tuple[str | int, ...]
"""A path into the config data: mapping keys are ``str``, list indices ``int``."""

TOP_LEVEL = "(top level)"
YAML_SYNTAX = "(yaml)"


@dataclass(frozen=True)
class Position:
    """1-based line and column in the config file."""

    line: int
    column: int


START = Position(1, 1)


@dataclass(frozen=True)
class Problem:
    position: Position
    path: str
    message: str

    def render(self, filename: str) -> str:
        return f"{filename}:{self.position.line}:{self.position.column}: {self.path}: {self.message}"


def format_loc(loc: Loc) -> str:
    """``("routes", 2, "source", "queue_url")`` -> ``routes[2].source.queue_url``."""
    out: list[str] = []
    for part in loc:
        if isinstance(part, int):
            out.append(f"[{part}]")
        else:
            key = part if part and all(c.isalnum() or c in "_-" for c in part) else repr(part)
            out.append(f".{key}" if out else key)
    return "".join(out) or TOP_LEVEL


def suggestion(word: str, candidates: Iterable[str], what: str) -> str:
    """``"; did you mean 'resize'?"`` or ``"; valid <what>: a, b, c"`` (or ``""`` when none)."""
    names = sorted(candidates)
    near = closest(word, names)
    if near is not None:
        return f"; did you mean {near!r}?"
    if names:
        return f"; valid {what}: {', '.join(names)}"
    return ""


def render_all(problems: Iterable[Problem], filename: str) -> list[str]:
    """Problems sorted by position (stable), one formatted line each, duplicates removed."""
    ordered = sorted(problems, key=lambda p: (p.position.line, p.position.column))
    seen: set[str] = set()
    lines: list[str] = []
    for p in ordered:
        line = p.render(filename)
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return lines
