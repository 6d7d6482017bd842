"""YAML text -> plain Python data, with the line/column of every node and ``${VAR}`` interpolation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from router.config.interpolate import InterpolationError, interpolate
from router.config.problems import TOP_LEVEL, YAML_SYNTAX, Loc, Position, Problem, format_loc

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # C parser when built
_STR_TAG = "tag:yaml.org,2002:str"


@dataclass(frozen=True)
class Origin:
    """Where an interpolated string came from: its text in the file and the variables it read."""

    raw: str
    variables: tuple[str, ...]
    value: str
    secrets: tuple[tuple[str, str], ...] = ()
    """``(name, value)`` of the environment values that are part of ``value``."""

    def describe(self) -> str:
        """How to name the value in a message without showing it: ``value from ${VAR}``."""
        return f"value from {self.raw}" if self.raw.startswith("${") and self.raw.endswith("}") \
            and self.raw.count("${") == 1 else f"value from {self.raw!r}"


@dataclass
class Document:
    """Parsed config data plus, for each path, where it is in the file."""

    data: dict[str, Any]
    marks: dict[Loc, Position] = field(default_factory=dict)
    """Start of each value node (for a mapping or list: its first character)."""
    key_marks: dict[Loc, Position] = field(default_factory=dict)
    """Start of the key of each mapping entry."""
    origins: dict[Loc, Origin] = field(default_factory=dict)
    """Strings that came (partly) from environment variables."""
    problems: list[Problem] = field(default_factory=list)
    """Problems found while reading (interpolation, duplicate keys, unknown tags)."""

    def position(self, loc: Loc) -> Position:
        """The position of ``loc``, or of its nearest ancestor that has one."""
        for n in range(len(loc), -1, -1):
            pos = self.marks.get(loc[:n])
            if pos is not None:
                return pos
        return Position(1, 1)

    def key_position(self, loc: Loc) -> Position:
        return self.key_marks.get(loc) or self.position(loc)

    def origins_under(self, loc: Loc) -> list[Origin]:
        """Interpolated strings at ``loc`` or below it."""
        n = len(loc)
        return [o for k, o in self.origins.items() if k[:n] == loc]


ALIAS_EXPANSION = 10
"""How many times over the written values aliases may expand a file (sharing a block of settings among
many functions through ``<<: *defaults`` stays far below it)."""
ALIAS_SLACK = 10_000


class YamlProblem(Exception):
    """Raised when the text is not a YAML mapping at all; carries the single problem."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(problem.message)


def _pos(mark: Any) -> Position:
    return Position(mark.line + 1, mark.column + 1)


def parse(text: str, env: Mapping[str, str]) -> Document:
    """Parse ``text`` into a :class:`Document`; raise :class:`YamlProblem` when it cannot be read."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = _pos(mark) if mark is not None else Position(1, 1)
        what = exc.problem or exc.context or "cannot be parsed"
        if exc.context and exc.problem:
            what = f"{exc.problem.removeprefix('but ')} ({exc.context}"
            if exc.context_mark is not None:
                what += f" at line {exc.context_mark.line + 1}"
            what += ")"
        lines = text.splitlines()
        line = lines[mark.line] if mark is not None and mark.line < len(lines) else ""
        if "${" in line and "flow" in (exc.context or ""):
            what += "; inside {...} or [...], quote values that use ${...}: key: \"${VAR}\""
        raise YamlProblem(Problem(where, YAML_SYNTAX, f"invalid YAML: {what}")) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(Problem(Position(1, 1), YAML_SYNTAX, f"invalid YAML: {exc}")) from None
    if root is None or (isinstance(root, ScalarNode) and root.tag == "tag:yaml.org,2002:null"):
        raise YamlProblem(
            Problem(Position(1, 1), TOP_LEVEL,
                    "the file is empty; expected a mapping with 'functions' and 'routes'")
        )
    if not isinstance(root, MappingNode):
        kind = "a list" if isinstance(root, SequenceNode) else "a single value"
        raise YamlProblem(
            Problem(_pos(root.start_mark), TOP_LEVEL,
                    f"expected a mapping (version, server, functions, routes, ...), got {kind}")
        )
    walker = _Walker(env)
    data = walker.value(root, ())
    doc = Document(data=data, marks=walker.marks, key_marks=walker.key_marks, origins=walker.origins,
                   problems=walker.problems)
    return doc


class _Walker:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.constructor = SafeConstructor()
        self.marks: dict[Loc, Position] = {}
        self.key_marks: dict[Loc, Position] = {}
        self.origins: dict[Loc, Origin] = {}
        self.problems: list[Problem] = []
        self._active: set[int] = set()
        self._visits = 0
        self._nodes: set[int] = set()

    def value(self, node: Node, loc: Loc) -> Any:
        self.marks[loc] = _pos(node.start_mark)
        # Aliases are walked again at each place they are used (each place gets its own marks), so a
        # small file of nested aliases ("billion laughs") could expand without bound: refuse it once the
        # values walked far outnumber the nodes the file holds.
        self._visits += 1
        self._nodes.add(id(node))
        if self._visits > ALIAS_EXPANSION * len(self._nodes) + ALIAS_SLACK:
            raise YamlProblem(Problem(
                self.marks[loc], format_loc(loc),
                f"YAML aliases (*name) expand this file to more than {self._visits:,} values from "
                f"{len(self._nodes):,} written ones; nest fewer aliases inside aliased lists and mappings"))
        if isinstance(node, ScalarNode):
            return self.scalar(node, loc)
        if id(node) in self._active:
            self.problems.append(Problem(self.marks[loc], format_loc(loc), "recursive alias is not allowed"))
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self.mapping(node, loc)
            if isinstance(node, SequenceNode):
                return [self.value(item, (*loc, i)) for i, item in enumerate(node.value)]
        finally:
            self._active.discard(id(node))
        return None  # pragma: no cover - composer only makes the three node kinds

    def scalar(self, node: ScalarNode, loc: Loc) -> Any:
        if node.tag == _STR_TAG:
            text: str = node.value
            if "$" not in text:
                return text
            try:
                result = interpolate(text, self.env)
            except InterpolationError as exc:
                self.problems.append(Problem(self.marks[loc], format_loc(loc), str(exc)))
                return text
            if result.substituted:
                self.origins[loc] = Origin(text, tuple(result.variables), result.value,
                                           tuple(result.secrets))
            return result.value
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            self.problems.append(
                Problem(self.marks[loc], format_loc(loc), f"unsupported YAML value: {exc.problem}")
            )
            return None

    def mapping(self, node: MappingNode, loc: Loc) -> dict[str, Any]:
        out: dict[str, Any] = {}
        seen: dict[str, Position] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key_pos = _pos(key_node.start_mark)
                if key_node.value in seen:
                    first = seen[key_node.value]
                    self.problems.append(Problem(
                        key_pos, format_loc((*loc, key_node.value)),
                        f"duplicate key {key_node.value!r} (first at line {first.line})",
                    ))
                seen.setdefault(key_node.value, key_pos)
        try:
            self.constructor.flatten_mapping(node)  # YAML merge keys ("<<: *defaults")
        except yaml.constructor.ConstructorError as exc:
            where = _pos(exc.problem_mark) if exc.problem_mark else self.marks[loc]
            self.problems.append(Problem(where, format_loc(loc), f"invalid merge key: {exc.problem}"))
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.problems.append(Problem(_pos(key_node.start_mark), format_loc(loc),
                                             "keys must be plain strings, not lists or mappings"))
                continue
            # The key's text as written: "on"/"yes"/"8080" stay strings, as users mean them.
            key: str = key_node.value
            child = (*loc, key)
            self.key_marks[child] = _pos(key_node.start_mark)
            out[key] = self.value(value_node, child)
        return out
