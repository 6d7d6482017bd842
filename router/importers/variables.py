"""serverless.yml variables: ``${self:...}``, ``${sls:stage}``, ``${opt:stage, 'dev'}``, ``${env:NAME}``,
``${aws:region}``, ``${aws:accountId}``, with fallbacks (``${a, b, 'literal'}``) and nesting.

No command-line options are given on import, so ``${opt:...}`` takes its fallback. ``${env:NAME}``
becomes the router's own ``${NAME}`` (``${NAME:-fallback}``): the variable is read when the router
runs, and no value from the importing shell lands in the file. Sources only the Serverless Framework
can reach (``ssm``, ``file``, ``cf``, ``s3``, ``construct``, ``param``, ...) raise
:class:`~router.importers.intrinsics.Unresolved`.
"""

from __future__ import annotations

import re
from typing import Any

from router.importers.convert import placeholder
from router.importers.intrinsics import Unresolved

_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_MAX_DEPTH = 20


class Variables:
    """Resolves the variables of one serverless.yml (``data``)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.env_used: list[str] = []

    def resolve(self, value: Any, depth: int = 0) -> Any:
        """``value`` with every ``${...}`` expanded; raise :class:`Unresolved` for one that cannot be."""
        if depth > _MAX_DEPTH:
            raise Unresolved("variables refer to each other in a loop")
        if isinstance(value, str):
            return self.expand(value, depth)
        if isinstance(value, list):
            return [self.resolve(v, depth) for v in value]
        if isinstance(value, dict):
            return {k: self.resolve(v, depth) for k, v in value.items()}
        return value

    def expand(self, text: str, depth: int = 0) -> Any:
        parts: list[Any] = []
        i = 0
        while True:
            start = text.find("${", i)
            if start < 0:
                parts.append(text[i:])
                break
            end = _closing(text, start + 2)
            if end < 0:
                raise Unresolved(f"unterminated ${{ in {text!r}")
            parts.append(text[i:start])
            parts.append(self._variable(text[start + 2:end], depth))
            i = end + 1
        parts = [p for p in parts if p != ""]
        if len(parts) == 1 and not isinstance(parts[0], str):
            return parts[0]  # "${self:custom.settings}" is the mapping itself
        return "".join(str(p).lower() if isinstance(p, bool) else str(p) for p in parts)

    def _variable(self, body: str, depth: int) -> Any:
        alternatives = [a.strip() for a in _split_top(body)]
        for index, alternative in enumerate(alternatives):
            if alternative.startswith("env:") and index + 1 < len(alternatives):
                self.env_used.append(alternative[4:])
                try:
                    fallback = self._variable(", ".join(alternatives[index + 1:]), depth)
                except Unresolved:
                    return placeholder(alternative[4:])
                return placeholder(alternative[4:], str(fallback))
            value = self._one(alternative, depth)
            if value is not None:
                return value
        raise Unresolved(f"${{{body}}} has no value on import and no fallback")

    def _one(self, expr: str, depth: int) -> Any:
        if len(expr) >= 2 and expr[0] == expr[-1] and expr[0] in "'\"":
            return expr[1:-1]
        if _NUMBER.match(expr):
            return float(expr) if "." in expr else int(expr)
        if expr.startswith("${"):
            return self.expand(expr, depth + 1)
        source, sep, address = expr.partition(":")
        if not sep:
            return self.lookup(expr, depth)  # old form ${provider.stage} is not valid; treat as self
        if source == "self":
            return self.lookup(address, depth)
        if source == "opt":
            return None
        if source == "sls" and address == "stage":
            return self.stage(depth)
        if source == "aws" and address == "region":
            return self.region(depth)
        if source == "aws" and address == "accountId":
            return "000000000000"
        if source == "env":
            self.env_used.append(address)
            return placeholder(address)
        raise Unresolved(f"${{{expr}}} is resolved by the Serverless Framework when deploying")

    def lookup(self, address: str, depth: int) -> Any:
        node: Any = self.data
        for part in address.split(".") if address else []:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return self.resolve(node, depth + 1)

    def stage(self, depth: int = 0) -> str:
        provider = self.data.get("provider") or {}
        value = self.resolve(provider.get("stage", "dev"), depth + 1) if "stage" in provider else "dev"
        return str(value)

    def region(self, depth: int = 0) -> str:
        provider = self.data.get("provider") or {}
        return str(self.resolve(provider["region"], depth + 1)) if "region" in provider else "us-east-1"


def _closing(text: str, start: int) -> int:
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _split_top(body: str) -> list[str]:
    """``a, b, 'c, d'`` -> the alternatives at the top level (not inside quotes or a nested ${})."""
    out: list[str] = []
    depth, quote = 0, ""
    current: list[str] = []
    for ch in body:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(current))
            current = []
            continue
        current.append(ch)
    out.append("".join(current))
    return out
