"""Write an imported config: YAML with a comment block listing what was not imported (each with its
line in the source), the same list on stderr, ``-o FILE`` refusing to overwrite without ``--force``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

import yaml

from router.importers import convert as c
from router.importers import sam, serverless
from router.importers.source import Notes, TemplateError, read

FORMATS = ("sam", "serverless")


def render(config: dict[str, Any], notes: Notes, command: str) -> str:
    """The config as YAML text: ``$`` escaped for the router's interpolation except in placeholders."""
    source = notes.template.path.name
    head = [f"# Imported from {source} by `router import {command}`.",
            "# Check it with `router validate`, then run it with `router run`."]
    listed = notes.sorted()
    if listed:
        head.append(f"# Not imported as it is ({len(listed)}); each with its line in {source}:")
        head += [f"#   {source}:{n.line}: {_one_line(n.message)}" for n in listed]
    body = yaml.safe_dump(_escape(config), sort_keys=False, allow_unicode=True, width=120)
    return "\n".join(head) + "\n" + _placeholders(body)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _escape(value: Any) -> Any:
    if isinstance(value, str):
        return str.__str__(value).replace("$", "$$")
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    return value


def _placeholders(text: str) -> str:
    text = text.replace(c.PLACEHOLDER_START, "${").replace(c.PLACEHOLDER_END, "}")
    return text.replace(c.PLACEHOLDER_DEFAULT, ":-")


def run_import(kind: str, source: str, output: str | None, force: bool, out: TextIO = sys.stdout,
               err: TextIO = sys.stderr) -> int:
    """``router import sam|serverless FILE [-o OUT] [--force]``: 0 when written (with the unsupported
    parts listed on ``err``), 1 when the file cannot be imported, 2 when ``OUT`` exists."""
    target = Path(output) if output else None
    if target is not None and target.exists() and not force:
        print(f"router import: {target} exists; give --force to overwrite it, or another -o FILE", file=err)
        return 2
    try:
        template = read(Path(source))
        notes = Notes(template)
        out_dir = target.parent if target is not None else Path.cwd()
        converter = sam.convert if kind == "sam" else serverless.convert
        config = converter(template, out_dir, notes)
    except TemplateError as exc:
        print(f"router import {kind}: {exc}", file=err)
        return 1
    text = render(config, notes, kind)
    if target is None:
        out.write(text)
    else:
        try:
            target.write_text(text, encoding="utf-8")
        except OSError as exc:
            print(f"router import: cannot write {target}: {exc.strerror or exc}", file=err)
            return 1
    for note in notes.sorted():
        print(f"{template.path}:{note.line}: {_one_line(note.message)}", file=err)
    where = str(target) if target is not None else "stdout"
    print(f"router import {kind}: wrote {len(config['functions'])} functions and {len(config['routes'])} "
          f"routes to {where}; {len(notes.items)} parts listed as not imported", file=err)
    return 0
