"""Dependency files: which are installed, the cache key, and the package named when an install fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router.runtime.deps import Manifest, cache_root, entry_name, failing_package, find_manifest

NPM_404 = """npm error code E404
npm error 404 Not Found - GET https://registry.npmjs.org/no-such-package-zz
npm error 404
npm error 404  The requested resource 'no-such-package-zz@1.0.0' could not be found or you do not have
"""
NPM_SCOPED_404 = "npm error 404 Not Found - GET https://registry.npmjs.org/@acme%2fnope - Not found\n"
NPM_NO_VERSION = "npm error notarget No matching version found for ms@99.0.0.\n"
PIP_MISSING = """ERROR: Could not find a version that satisfies the requirement nope-zz==1.0 (from versions:
ERROR: No matching distribution found for nope-zz==1.0
"""


@pytest.mark.parametrize(("tool", "output", "package"), [
    ("pip", PIP_MISSING, "nope-zz==1.0"),
    ("pip", "ERROR: Failed building wheel for lxml\n", "lxml"),
    ("npm", NPM_404, "no-such-package-zz"),
    ("npm", NPM_SCOPED_404, "@acme/nope"),
    ("npm", NPM_NO_VERSION, "ms"),
    ("pip", "ERROR: something else entirely\n", None),
])
def test_failing_package_is_read_from_the_tool_output(tool: str, output: str, package: str | None) -> None:
    assert failing_package(tool, output) == package


def test_requirements_with_only_comments_install_nothing(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("# nothing yet\n\n")
    assert find_manifest(tmp_path, python=True) is None
    (tmp_path / "requirements.txt").write_text("# pinned\ninflection==0.5.1\n")
    assert find_manifest(tmp_path, python=True) == Manifest("pip", tmp_path / "requirements.txt")
    assert find_manifest(tmp_path, python=False) is None


def test_package_json_with_a_lock_file(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text(json.dumps({"dependencies": {"ms": "2.1.3"}}))
    (tmp_path / "package-lock.json").write_text("{}")
    assert find_manifest(tmp_path, python=False) == Manifest(
        "npm", tmp_path / "package.json", tmp_path / "package-lock.json")


def test_the_cache_key_follows_the_file_the_lock_and_the_runtime(tmp_path: Path) -> None:
    file = tmp_path / "package.json"
    file.write_text('{"dependencies": {"ms": "2.1.3"}}')
    lock = tmp_path / "package-lock.json"
    lock.write_text("{}")
    first = entry_name(Manifest("npm", file, lock), "nodejs20.x")
    assert first.startswith("nodejs20.x-")
    assert entry_name(Manifest("npm", file, lock), "nodejs20.x") == first
    assert entry_name(Manifest("npm", file, lock), "nodejs22.x").split("-")[1] != first.split("-")[1]
    lock.write_text('{"lockfileVersion": 3}')
    assert entry_name(Manifest("npm", file, lock), "nodejs20.x") != first
    file.write_text('{"dependencies": {"ms": "2.1.2"}}')
    assert entry_name(Manifest("npm", file, None), "nodejs20.x") != first


def test_cache_root_from_the_environment(tmp_path: Path) -> None:
    assert cache_root({"ROUTER_DEPS_CACHE": str(tmp_path / "c")}) == tmp_path / "c"
    assert cache_root({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "router" / "deps"


def test_an_interpreter_without_pip_is_named(tmp_path: Path) -> None:
    from router.errors import EnvironmentStartError
    from router.runtime.deps import ensure_installed

    fake = tmp_path / "python3.99"  # answers as an interpreter without pip does
    fake.write_text("#!/bin/sh\necho \"$0: No module named pip\" >&2\nexit 1\n")
    fake.chmod(0o755)
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "requirements.txt").write_text("inflection==0.5.1\n")
    manifest = find_manifest(tmp_path / "code", python=True)
    assert manifest is not None
    with pytest.raises(EnvironmentStartError, match=(
            rf"^function 'f': installing {tmp_path}/code/requirements.txt with pip failed \(exit 1\): "
            rf"{fake} has no pip; install it for that interpreter \({fake} -m ensurepip")):
        ensure_installed(manifest, runtime="python3.99", command=str(fake), where="function 'f'",
                         cache=tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()] == []  # nothing half-built kept


def test_credentials_in_an_index_url_are_masked(tmp_path: Path) -> None:
    from router.errors import EnvironmentStartError
    from router.runtime.deps import ensure_installed

    fake = tmp_path / "npm"
    fake.write_text("#!/bin/sh\n"
                    "echo 'npm error 404 Not Found - GET https://ci:s3cret@npm.example/nope'\nexit 1\n")
    fake.chmod(0o755)
    (tmp_path / "package.json").write_text('{"dependencies": {"nope": "1.0.0"}}')
    manifest = find_manifest(tmp_path, python=False)
    assert manifest is not None
    with pytest.raises(EnvironmentStartError) as caught:
        ensure_installed(manifest, runtime="nodejs20.x", command=str(fake), where="function 'f'",
                         cache=tmp_path / "cache")
    assert "package 'nope' could not be installed" in str(caught.value)
    assert "https://***@npm.example/nope" in str(caught.value)
    assert "s3cret" not in str(caught.value)
