"""Read a SAM template or serverless.yml with the line of every value, and collect what was not imported.

CloudFormation's short-form tags (``!Ref X``, ``!Sub '...'``, ``!GetAtt A.B``, ...) become their long
form (``{"Ref": "X"}``, ``{"Fn::Sub": ...}``, ``{"Fn::GetAtt": ["A", "B"]}``) so one resolver handles
both. Nothing is interpolated here: ``${...}`` belongs to ``Fn::Sub`` and to serverless variables.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from router.config.problems import Loc

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = "tag:yaml.org,2002:str"
_SHORT_FORMS = {"Ref": "Ref", "Condition": "Condition"}
"""``!Ref`` and ``!Condition`` keep their name; every other ``!Name`` is ``Fn::Name``."""


class TemplateError(Exception):
    """Raised when the file cannot be imported at all (unreadable, not YAML, not a template of its kind);
    the message names the file and what to do."""


@dataclass
class Template:
    """The parsed file: plain data plus the line of each value (and of each mapping key)."""

    path: Path
    data: dict[str, Any]
    lines: dict[Loc, int] = field(default_factory=dict)

    aliases: dict[Loc, Loc] = field(default_factory=dict)
    """Where else values under a path may be written: a SAM function's ``Properties`` also come from
    ``Globals.Function``."""

    def line(self, loc: Loc) -> int:
        """The line of ``loc``, or of its nearest ancestor that has one (looking in the aliased place too,
        when that holds more of the path)."""
        depth, line = self._deepest(loc)
        for prefix, other in self.aliases.items():
            if loc[:len(prefix)] == prefix:
                alt_depth, alt_line = self._deepest((*other, *loc[len(prefix):]))
                if alt_depth - len(other) > depth - len(prefix):
                    return alt_line
        return line

    def _deepest(self, loc: Loc) -> tuple[int, int]:
        for n in range(len(loc), -1, -1):
            found = self.lines.get(loc[:n])
            if found is not None:
                return n, found
        return 0, 1


@dataclass(frozen=True)
class Note:
    """Something in the source that was not imported as it is, or that the user must fill in."""

    line: int
    message: str


@dataclass
class Notes:
    """What the import could not carry over, each with its line in the source file."""

    template: Template
    items: list[Note] = field(default_factory=list)

    def add(self, loc: Loc, message: str) -> None:
        note = Note(self.template.line(loc), message)
        if note not in self.items:
            self.items.append(note)

    def sorted(self) -> list[Note]:
        return sorted(self.items, key=lambda n: n.line)


def read(path: Path) -> Template:
    """Parse ``path``; raise :class:`TemplateError` when it cannot be read or is not a YAML mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TemplateError(f"{path}: not a UTF-8 text file; give a YAML template") from None
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise TemplateError(f"{where}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise TemplateError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(root, MappingNode):
        raise TemplateError(f"{path}: expected a YAML mapping at the top (a template), got "
                           f"{'nothing' if root is None else 'a list or a single value'}")
    walker = _Walker()
    data = walker.value(root, ())
    assert isinstance(data, dict)
    return Template(path, data, walker.lines)


class _Walker:
    def __init__(self) -> None:
        self.constructor = SafeConstructor()
        self.lines: dict[Loc, int] = {}
        self._depth = 0

    def value(self, node: Node, loc: Loc) -> Any:
        self.lines[loc] = node.start_mark.line + 1
        self._depth += 1
        if self._depth > 200:
            raise TemplateError(f"line {node.start_mark.line + 1}: nested more than 200 levels deep "
                               "(recursive YAML aliases?)")
        try:
            plain = self._plain(node, loc)
        finally:
            self._depth -= 1
        tag = node.tag or ""
        if tag.startswith("!"):
            name = tag[1:]
            long = _SHORT_FORMS.get(name, f"Fn::{name}")
            if name == "GetAtt" and isinstance(plain, str):
                logical, _, attr = plain.partition(".")
                plain = [logical, attr]
            return {long: plain}
        return plain

    def _plain(self, node: Node, loc: Loc) -> Any:
        if isinstance(node, ScalarNode):
            if node.tag == _STR_TAG or (node.tag or "").startswith("!"):
                return node.value
            try:
                return self.constructor.construct_object(node, deep=True)
            except yaml.constructor.ConstructorError:
                return node.value
        if isinstance(node, SequenceNode):
            return [self.value(item, (*loc, i)) for i, item in enumerate(node.value)]
        if isinstance(node, MappingNode):
            with contextlib.suppress(yaml.constructor.ConstructorError):
                self.constructor.flatten_mapping(node)  # "<<: *defaults"
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value) if isinstance(key_node, ScalarNode) else str(key_node)
                out[key] = self.value(value_node, (*loc, key))
            return out
        return None  # pragma: no cover - the composer makes only the three node kinds
