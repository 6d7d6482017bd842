"""Import a template written in the test: the config (as the router would read it) and the listed notes."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any

from router.config.loader import load_config
from router.config.models import RouterConfig
from router.importers.output import run_import


def do_import(tmp_path: Path, kind: str, text: str, name: str = "template.yaml") -> tuple[str, str, int]:
    """Write ``text`` as the template and import it; (output YAML, stderr, exit status)."""
    source = tmp_path / name
    source.write_text(textwrap.dedent(text))
    (tmp_path / "src").mkdir(exist_ok=True)
    out, err = io.StringIO(), io.StringIO()
    target = tmp_path / "router.yaml"
    status = run_import(kind, str(source), str(target), True, out, err)
    assert out.getvalue() == ""
    return (target.read_text() if target.exists() else ""), err.getvalue(), status


def load(tmp_path: Path, env: dict[str, str] | None = None) -> RouterConfig:
    """The imported config (tmp_path/router.yaml) loaded as ``router validate`` loads it."""
    return load_config(str(tmp_path / "router.yaml"), env=env or {})


def listed(err: str) -> dict[int, str]:
    """Line -> message of each ``FILE:LINE: message`` on stderr."""
    out: dict[int, str] = {}
    for line in err.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[1].isdigit():
            out[int(parts[1])] = out.get(int(parts[1]), "") + parts[2]
    return out


def route(config: RouterConfig, name: str) -> Any:
    return next(r for r in config.routes if r.name == name)
