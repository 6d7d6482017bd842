"""Helpers for the Node.js runtime tests: the machine's ``node``, skipped (or failed under CI=true)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.unavailable import unavailable

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "functions"


def _node_major() -> int | None:
    node = shutil.which("node")
    if node is None:
        return None
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=True)
        return int(out.stdout.strip().lstrip("v").split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


NODE_MAJOR = _node_major()
NODE_RUNTIME = f"nodejs{NODE_MAJOR or 20}.x"
"""The runtime the tests configure: the one the machine's node can run."""


def require_node() -> None:
    """Skip the test when ``node`` (18 or later) is absent; under ``CI=true`` fail it instead."""
    if NODE_MAJOR is not None and NODE_MAJOR >= 18:
        return
    problem = ("node not found on PATH" if NODE_MAJOR is None else f"node {NODE_MAJOR} is too old")
    problem += "; the Node.js runtime tests need Node.js 18 or later (install nodejs)"
    unavailable(problem)


def require_npm() -> str:
    """The ``npm`` executable; skip (or fail under ``CI=true``) when it is absent."""
    require_node()
    npm = shutil.which("npm")
    if npm is None:
        problem = "npm not found on PATH; the tests with real npm packages need npm"
        unavailable(problem)
    return npm
