"""Versions and aliases: weighted alias resolution, publish (unchanged code and config: the same version),
the deterministic package and its cache, the versions' invokers, the start check of aliases; on SQLite and
PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import math
import os
import random
from pathlib import Path
from typing import Any

import pytest

from router.config.models import FunctionConfig, RouterConfig
from router.core import package
from router.core.versions import AliasRouting, Versions, alias_table
from router.errors import QualifierNotFound, RouterError, VersionError
from router.invocation import Invocation, Result
from tests.stores import StoreFactory


def _config(tmp_path: Path, aliases: dict[str, Any] | None = None) -> RouterConfig:
    code = tmp_path / "fn"
    code.mkdir(exist_ok=True)
    if not (code / "app.py").exists():
        (code / "app.py").write_text("def handler(event, context):\n    return 1\n")
    config = RouterConfig.model_validate({
        "functions": {
            "resize": {"runtime": "python3.11", "handler": "app.handler", "code": "./fn",
                       "aliases": aliases or {}},
            "remote": {"http": {"url": "http://127.0.0.1:9/"}},
        },
    })
    config._config_dir = tmp_path
    return config


class Recorded:
    """An invoker that remembers what it was built from (the versions' own wiring is under test)."""

    def __init__(self, name: str, fn: FunctionConfig, code_dir: Path, version: str) -> None:
        self.name, self.fn, self.code_dir, self.version = name, fn, code_dir, version
        self.started = self.closed = False

    async def start(self) -> None:
        self.started = True

    async def invoke(self, invocation: Invocation) -> Result:
        return Result(payload=(self.code_dir / "app.py").read_bytes())

    async def close(self) -> None:
        self.closed = True


def _versions(config: RouterConfig, store: Any, tmp_path: Path, **kw: Any) -> tuple[Versions, list[Recorded]]:
    built: list[Recorded] = []

    def build(name: str, fn: FunctionConfig, code_dir: Path, version: str) -> Any:
        built.append(Recorded(name, fn, code_dir, version))
        return built[-1]

    return Versions(config, store, build=build, cache=tmp_path / "cache", **kw), built


def test_weighted_alias_draws_stay_within_a_binomial_bound() -> None:
    routing = AliasRouting("3", "4", 0.1)
    draw = random.Random(1234).random
    n = 10_000
    extra = sum(routing.pick(draw) == "4" for _ in range(n))
    mean, sd = n * 0.1, math.sqrt(n * 0.1 * 0.9)
    assert abs(extra - mean) < 6 * sd  # seeded: deterministic; the bound says the split is the weight's


def test_unweighted_alias_and_the_edges_of_the_weight() -> None:
    draw = random.Random(7).random
    assert {AliasRouting("3").pick(draw) for _ in range(100)} == {"3"}
    assert {AliasRouting("3", "4", 0.0).pick(draw) for _ in range(100)} == {"3"}
    assert {AliasRouting("3", "4", 1.0).pick(draw) for _ in range(100)} == {"4"}


async def test_resolve_qualifiers_without_io(tmp_path: Path, new_store: StoreFactory) -> None:
    config = _config(tmp_path, {"prod": {"version": 3, "weights": {4: 0.25}}, "beta": {"version": 2}})
    assert alias_table(config)["resize"]["prod"] == AliasRouting("3", "4", 0.25)
    draws = iter([0.9, 0.1])
    versions, _ = _versions(config, await new_store(), tmp_path, draw=lambda: next(draws))
    assert versions.resolve("resize", "$LATEST") is None
    assert versions.resolve("resize", "12") == "12"
    assert versions.resolve("resize", "prod") == "3"  # 0.9 >= 0.25
    assert versions.resolve("resize", "prod") == "4"  # 0.1 < 0.25
    assert versions.resolve("resize", "beta") == "2"
    with pytest.raises(QualifierNotFound, match=r"function not found: resize:live"):
        versions.resolve("resize", "live")
    assert versions.metric_label("resize", "4") == "4"
    assert versions.metric_label("resize", "17") == "other"  # no alias names it: the label set is bounded
    assert versions.arn("resize", "prod") == "arn:aws:lambda:us-east-1:000000000000:function:resize:prod"


async def test_publish_numbers_versions_and_an_unchanged_function_keeps_the_latest(
        tmp_path: Path, new_store: StoreFactory) -> None:
    config = _config(tmp_path)
    versions, _ = _versions(config, await new_store(), tmp_path)
    first, created = await versions.publish("resize", "first")
    assert (first.version, created, first.description) == (1, True, "first")
    zipped = package.zip_directory(tmp_path / "fn", "test")
    assert first.code_sha256 == base64.b64encode(hashlib.sha256(zipped).digest()).decode()
    # Running $LATEST writes __pycache__: not a change.
    (tmp_path / "fn" / "__pycache__").mkdir()
    (tmp_path / "fn" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
    again, created = await versions.publish("resize")
    assert (again.version, created) == (1, False)
    (tmp_path / "fn" / "app.py").write_text("def handler(event, context):\n    return 2\n")
    second, created = await versions.publish("resize")
    assert (second.version, created) == (2, True)
    assert second.code_sha256 != first.code_sha256
    # A config change alone makes a version too.
    changed = config.model_copy(deep=True)
    changed.functions["resize"].memory = 512
    changed._config_dir = tmp_path
    versions.reconfigure(changed)  # a reload: publish snapshots the running config
    third, created = await versions.publish("resize")
    assert (third.version, created) == (3, True)
    other, _ = _versions(config, await new_store(), tmp_path)  # another replica sees them
    assert [r.version for r in await other.list("resize")] == [1, 2, 3]


async def test_only_local_functions_publish(tmp_path: Path, new_store: StoreFactory) -> None:
    versions, _ = _versions(_config(tmp_path), await new_store(), tmp_path)
    with pytest.raises(VersionError, match=r"function 'remote': only local functions have versions \(it is "
                                           r"an http target"):
        await versions.publish("remote")


async def test_a_version_runs_its_own_code_after_the_code_changed(tmp_path: Path,
                                                                  new_store: StoreFactory) -> None:
    config = _config(tmp_path)
    versions, built = _versions(config, await new_store(), tmp_path)
    await versions.publish("resize")
    (tmp_path / "fn" / "app.py").write_text("changed")
    invoker = await versions.invoker("resize", "1")
    assert await versions.invoker("resize", "1") is invoker
    assert len(built) == 1
    assert built[0].started
    assert built[0].version == "1"
    assert built[0].fn.handler == "app.handler"
    result = await invoker.invoke(Invocation(function="resize", payload=b"{}", source="test"))
    assert result.payload == b"def handler(event, context):\n    return 1\n"
    assert built[0].code_dir.parent == tmp_path / "cache"
    assert versions.invoker_now("resize", "1") is invoker
    with pytest.raises(QualifierNotFound, match="resize:2"):
        await versions.invoker("resize", "2")
    await versions.close()
    assert built[0].closed


async def test_aliases_naming_unpublished_versions_are_a_start_error(tmp_path: Path,
                                                                     new_store: StoreFactory) -> None:
    config = _config(tmp_path, {"prod": {"version": 1, "weights": {2: 0.5}}})
    versions, _ = _versions(config, await new_store(), tmp_path)
    with pytest.raises(RouterError, match=r"functions\.resize\.aliases\.prod: version 1 is not published "
                                          r"\(published: none\); run 'router publish resize'"):
        await versions.check_aliases()
    await versions.publish("resize")
    with pytest.raises(RouterError, match=r"aliases\.prod: version 2 is not published \(published: 1\)"):
        await versions.check_aliases()


def test_the_package_is_deterministic_and_keeps_the_executable_bit(tmp_path: Path) -> None:
    for name, stamp in (("a", 1_000_000), ("b", 2_000_000)):
        root = tmp_path / name
        (root / "lib").mkdir(parents=True)
        (root / "lib" / "x.py").write_text("x = 1\n")
        (root / "bootstrap").write_text("#!/bin/sh\n")
        (root / "bootstrap").chmod(0o755)
        for path in (root / "lib" / "x.py", root / "bootstrap"):
            os.utime(path, (stamp, stamp))
    a = package.zip_directory(tmp_path / "a", "test")
    assert a == package.zip_directory(tmp_path / "b", "test")
    out = package.extract(a, package.code_sha256(a), tmp_path / "cache", "test")
    assert (out / "lib" / "x.py").read_text() == "x = 1\n"
    assert os.access(out / "bootstrap", os.X_OK)
    assert not os.access(out / "lib" / "x.py", os.X_OK)
    assert package.extract(a, package.code_sha256(a), tmp_path / "cache", "test") == out  # once
    with pytest.raises(VersionError, match="does not match its CodeSha256"):
        package.extract(a, "AAAA", tmp_path / "cache", "test")


def test_a_package_over_the_cap_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "data.bin").write_bytes(os.urandom(4096))
    monkeypatch.setattr(package, "MAX_ZIP", 1024)
    with pytest.raises(VersionError, match=r"function 'big': the zipped code of .* is over 0 MB"):
        package.zip_directory(tmp_path / "big", "function 'big'")


async def test_a_version_that_cannot_start_says_which(tmp_path: Path, new_store: StoreFactory) -> None:
    from router.errors import EnvironmentStartError

    class Broken(Recorded):
        async def start(self) -> None:
            raise EnvironmentStartError("function 'resize': runtime python3.11 needs a python3.11 "
                                        "interpreter")

    config = _config(tmp_path)
    built: list[Broken] = []

    def build(name: str, fn: FunctionConfig, code_dir: Path, version: str) -> Any:
        built.append(Broken(name, fn, code_dir, version))
        return built[-1]

    versions = Versions(config, await new_store(), build=build, cache=tmp_path / "cache")
    await versions.publish("resize")
    with pytest.raises(VersionError, match=r"function 'resize' version 1: cannot start: function 'resize': "
                                           r"runtime python3\.11 needs"):
        await versions.invoker("resize", "1")
    assert built[0].closed
    with pytest.raises(KeyError):
        versions.invoker_now("resize", "1")  # not kept: the next invocation tries again


def test_a_cache_others_can_write_is_refused(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "app.py").write_text("x = 1\n")
    data = package.zip_directory(tmp_path / "code", "test")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(VersionError, match=r"the versions cache .* is not a directory of this user's that "
                                           r"only it can write .* set ROUTER_VERSIONS_CACHE"):
        package.extract(data, package.code_sha256(data), shared, "test")
