"""``runtime: nodejsNN.x``: accepted forms, and the ``node`` it needs checked at load with file:line.

A stand-in ``node`` (a shell script printing a version) on PATH makes these independent of the
machine's Node.js; one test uses the real one.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from router.config.models import RouterConfig

Problems = Callable[..., list[str]]
Load = Callable[..., RouterConfig]


def node_function(runtime: str = "nodejs20.x", handler: str | None = "index.handler") -> str:
    text = f"functions:\n  web:\n    runtime: {runtime}\n    code: ./fn\n"
    if handler is not None:
        text += f"    handler: {handler}\n"
    return text


@pytest.fixture
def fake_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, int], Path]:
    """Put a ``node`` printing ``version`` (exit status ``status``) first on PATH; returns its path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))

    def make(version: str, status: int = 0) -> Path:
        node = bin_dir / "node"
        node.write_text(f"#!/bin/sh\necho {version}\nexit {status}\n")
        node.chmod(0o755)
        return node

    return make


def test_node_of_the_runtimes_major_version_is_accepted(
        load: Load, fake_node: Callable[[str, int], Path]) -> None:
    fake_node("v20.11.1", 0)
    config = load(node_function("nodejs20.x", "src/api/index.handler"))
    assert config.functions["web"].runtime == "nodejs20.x"
    assert config.functions["web"].handler == "src/api/index.handler"


def test_node_of_another_major_version_is_a_config_error_with_the_fix(
        problems: Problems, fake_node: Callable[[str, int], Path]) -> None:
    node = fake_node("v20.11.1", 0)
    assert problems(node_function("nodejs22.x")) == [
        f"router.yaml:3:14: functions.web.runtime: runtime nodejs22.x needs node 22 on PATH, got v20.11.1 "
        f"at {node}; install Node.js 22 or set runtime: nodejs20.x"
    ]


def test_no_node_on_path_is_a_config_error(problems: Problems, fake_node: Callable[[str, int], Path],
                                           monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert problems(node_function("nodejs22.x")) == [
        "router.yaml:3:14: functions.web.runtime: runtime nodejs22.x needs node 22 on PATH, got no node on "
        "PATH; install Node.js 22 or add its bin directory to PATH"
    ]


def test_a_node_that_does_not_answer_is_a_config_error(
        problems: Problems, fake_node: Callable[[str, int], Path]) -> None:
    node = fake_node("oops", 1)
    assert problems(node_function("nodejs20.x")) == [
        f"router.yaml:3:14: functions.web.runtime: runtime nodejs20.x needs node 20 on PATH, got {node}, "
        "which did not answer 'node --version'; reinstall Node.js 20"
    ]


def test_a_replaced_node_is_asked_again(load: Load, problems: Problems,
                                        fake_node: Callable[[str, int], Path]) -> None:
    fake_node("v20.11.1", 0)
    load(node_function("nodejs20.x"))
    fake_node("v22.3.0", 0)  # another binary at the same path
    assert problems(node_function("nodejs20.x"))[0].endswith(
        "got v22.3.0 at " + str(shutil.which("node")) + "; install Node.js 20 or set runtime: nodejs22.x")


@pytest.mark.parametrize(("runtime", "message"), [
    ("nodejs16.x", "unsupported runtime 'nodejs16.x'; Node.js 18 or later (e.g. nodejs20.x)"),
    ("nodejs", "unsupported runtime 'nodejs'; use python3.X (e.g. python3.11), nodejsNN.x (e.g. nodejs20.x) "
               "or provided"),
    ("ruby3.2", "unsupported runtime 'ruby3.2'; use python3.X (e.g. python3.11), nodejsNN.x "
                "(e.g. nodejs20.x) or provided"),
])
def test_runtime_names(problems: Problems, fake_node: Callable[[str, int], Path], runtime: str,
                       message: str) -> None:
    fake_node("v20.11.1", 0)
    assert problems(node_function(runtime)) == [f"router.yaml:3:5: functions.web: {message}"]


def test_nodejs_handler_is_required_and_is_file_dot_export(
        problems: Problems, fake_node: Callable[[str, int], Path]) -> None:
    fake_node("v20.11.1", 0)
    assert problems(node_function(handler=None)) == [
        "router.yaml:3:5: functions.web: a nodejs function needs 'handler' (file.export, e.g. index.handler)"
    ]
    assert problems(node_function(handler="index")) == [
        "router.yaml:3:5: functions.web: handler must be file.export, got 'index'"
    ]


def test_the_machines_node(load: Load, problems: Problems) -> None:
    from tests.unit.runtime.node_support import NODE_MAJOR, require_node

    require_node()
    assert NODE_MAJOR is not None
    assert load(node_function(f"nodejs{NODE_MAJOR}.x")).functions["web"].runtime == f"nodejs{NODE_MAJOR}.x"
    other = NODE_MAJOR + 2
    version = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    assert problems(node_function(f"nodejs{other}.x")) == [
        f"router.yaml:3:14: functions.web.runtime: runtime nodejs{other}.x needs node {other} on PATH, got "
        f"{version} at {shutil.which('node')}; install Node.js {other} or set runtime: nodejs{NODE_MAJOR}.x"
    ]
