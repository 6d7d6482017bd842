"""Cheap checks of the build files that need neither podman nor a network: the shell scripts parse
and the Makefile targets run the commands the README documents."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [ROOT / ".ci" / "run", *sorted((ROOT / "scripts").glob("*.sh"))]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_script_is_executable_bash_that_parses(script: Path) -> None:
    assert os.access(script, os.X_OK), f"{script} is not executable"
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def _make_dry_run(*args: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("GNU make is not installed")
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "VENV", "CONFIG", "TEST_WORKERS")}
    # `-o` treats the venv stamp as up to date, so a dry run never plans a pip install.
    proc = subprocess.run(
        ["make", "--dry-run", "-o", ".venv/.installed", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_make_run_uses_the_example_config() -> None:
    assert ".venv/bin/router run --config config/example.yaml" in _make_dry_run("run")
    assert ".venv/bin/router run --config my.yaml" in _make_dry_run("run", "CONFIG=my.yaml")


def test_make_test_passes_pytest_args() -> None:
    assert ".venv/bin/python -m pytest -n 2 --dist loadfile -k smoke -x" in _make_dry_run(
        "test", "PYTEST_ARGS=-k smoke -x")
    assert ".venv/bin/python -m pytest -n 0 --dist loadfile -x" in _make_dry_run(
        "test", "PYTEST_ARGS=-x", "TEST_WORKERS=0")


def test_make_lint_runs_ruff_and_mypy() -> None:
    out = _make_dry_run("lint")
    assert ".venv/bin/ruff check router tests" in out
    assert ".venv/bin/mypy router" in out


def test_dockerignore_lets_in_what_the_dockerfile_copies() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    allowed = {
        line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied: set[str] = set()
    for line in dockerfile.splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and not any(p.startswith("--from") for p in parts):
            copied.update(p.rstrip("/") for p in parts[1:-1])
    assert copied, "no COPY lines found"
    assert copied <= allowed, f"COPY sources excluded by .dockerignore: {sorted(copied - allowed)}"
