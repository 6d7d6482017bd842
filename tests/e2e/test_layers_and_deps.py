"""`router run` / `router build` with Lambda layers and dependency files: a Python function importing
from its layers and from a requirements.txt package, a Node.js one requiring from a layer's
nodejs/node_modules and a package.json dependency, a provided one running a tool from a layer's bin/,
layer order (the later layer wins; the code directory beats every layer), the dependency cache reused
by a second start and by `router build`, and a requirement that does not exist.

pip and npm install from the real indexes (PyPI, the npm registry): skipped when they cannot be reached,
except under CI=true, where that fails.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.router_process import RouterFactory, RouterProcess, http, router
from tests.unavailable import unavailable
from tests.unit.runtime.node_support import NODE_MAJOR, NODE_RUNTIME, require_npm

PYTHON_RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"
REQUIREMENT = "inflection==0.5.1"  # tiny, pure Python, not a dependency of the router
NPM_DEPENDENCY = ("ms", "2.1.3")  # tiny, no dependencies of its own
MISSING = "no-such-package-router-test-zz"
INSTALL_DEADLINE = 300.0  # a first start installs from the index before it is ready


def write(path: Path, text: str, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    if mode is not None:
        path.chmod(mode)
    return path


def started(rp: RouterProcess) -> RouterProcess:
    rp.start(wait_ready=False)
    rp.wait_ready(timeout=INSTALL_DEADLINE)
    return rp


def invoke(rp: RouterProcess, function: str) -> Any:
    status, _, body = http("POST", f"{rp.url}/2015-03-31/functions/{function}/invocations", b"{}",
                           timeout=60)
    assert status == 200, body
    return json.loads(body)


def installs(rp: RouterProcess) -> list[str]:
    return [r["message"] for r in rp.log_records() if "installed" in r.get("message", "")
            and "dependency cache" in r.get("message", "")]


@pytest.fixture(scope="module")
def pip_index(tmp_path_factory: pytest.TempPathFactory) -> None:
    """PyPI (or the configured index) answers for the pinned requirement."""
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--dest",
                           str(tmp_path_factory.mktemp("pip-probe")), REQUIREMENT],
                          capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        unavailable(f"pip cannot fetch {REQUIREMENT} from the index: "
                    f"{done.stdout[-500:]}{done.stderr[-500:]}")


def python_app(tmp_path: Path) -> Path:
    """Two layers and a code directory with a requirements.txt; the handler reports where each import
    came from."""
    site = f"python/lib/{PYTHON_RUNTIME}/site-packages"
    write(tmp_path / "layers/common/python/shared.py", "WHO = 'common'\n")
    write(tmp_path / "layers/common/python/mine.py", "WHO = 'layer'\n")
    write(tmp_path / f"layers/common/{site}/sitepkg.py", "WHO = 'common site-packages'\n")
    write(tmp_path / "layers/override/python/shared.py", "WHO = 'override'\n")
    code = tmp_path / "code"
    write(code / "mine.py", "WHO = 'code'\n")
    write(code / "requirements.txt", f"# pinned\n{REQUIREMENT}\n")
    write(code / "app.py", """
        import inflection
        import mine
        import shared
        import sitepkg


        def handler(event, context):
            return {"shared": shared.WHO, "mine": mine.WHO, "site": sitepkg.WHO,
                    "camel": inflection.camelize("hello_world"), "inflection": inflection.__file__}
    """)
    return code


def python_config(tmp_path: Path) -> str:
    return f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          forked:
            runtime: {PYTHON_RUNTIME}
            handler: app.handler
            code: ./code
            layers: [./layers/common, ./layers/override]
          exec:
            runtime: {PYTHON_RUNTIME}
            handler: app.handler
            code: ./code
            fork_start: false
            layers: [./layers/common, ./layers/override]
    """


def test_python_function_imports_from_layers_and_requirements_and_the_cache_is_reused(
        router_factory: RouterFactory, tmp_path: Path, pip_index: None) -> None:
    python_app(tmp_path)
    cache = tmp_path / "cache"
    env = {"ROUTER_DEPS_CACHE": str(cache)}
    rp = started(router_factory(python_config(tmp_path), env=env, start=False))
    for function in ("forked", "exec"):
        answer = invoke(rp, function)
        assert answer["shared"] == "override"  # the later layer wins, as after Lambda's merge into /opt
        assert answer["mine"] == "code"  # the code directory comes before every layer
        assert answer["site"] == "common site-packages"
        assert answer["camel"] == "HelloWorld"
        assert answer["inflection"].startswith(str(cache))
    assert len(installs(rp)) == 1, rp.logs()  # one requirements.txt, installed once for both functions
    entries = [p for p in cache.iterdir() if p.is_dir()]
    assert [p.name.split("-")[0] for p in entries] == [PYTHON_RUNTIME]
    built = (entries[0] / "build.json").stat().st_mtime_ns
    assert rp.stop() == 0

    # a second start reuses the cache: nothing installed, same entry
    again = started(router_factory(python_config(tmp_path), env=env, start=False))
    assert invoke(again, "forked")["camel"] == "HelloWorld"
    assert installs(again) == []
    assert (entries[0] / "build.json").stat().st_mtime_ns == built
    assert [p for p in cache.iterdir() if p.is_dir()] == entries
    # the function cannot change what it uses from the cache (Lambda's /opt is read-only)
    assert not (entries[0] / "python" / "inflection").stat().st_mode & 0o222
    assert again.stop() == 0


def test_router_build_installs_ahead_of_time_then_reuses(
        router_factory: RouterFactory, tmp_path: Path, pip_index: None) -> None:
    python_app(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(textwrap.dedent(python_config(tmp_path)).replace("@PORT@", "0"))
    env = {"ROUTER_DEPS_CACHE": str(tmp_path / "cache")}

    first = router("build", "--config", str(config), "forked", env=env)
    assert first.returncode == 0, first.stderr
    requirements = tmp_path / "code" / "requirements.txt"
    assert "forked: built in " in first.stdout
    assert f" {requirements} -> {tmp_path / 'cache'}/{PYTHON_RUNTIME}-" in first.stdout

    second = router("build", "--config", str(config), env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == [
        line for line in second.stdout.splitlines() if " reused " in line]
    assert {line.split(":")[0] for line in second.stdout.splitlines()} == {"exec", "forked"}

    # a router started afterwards with the same cache installs nothing
    rp = started(router_factory(python_config(tmp_path), env=env, start=False))
    assert invoke(rp, "exec")["camel"] == "HelloWorld"
    assert installs(rp) == []
    assert rp.stop() == 0

    unknown = router("build", "--config", str(config), "nope", env=env)
    assert unknown.returncode == 2
    assert "router build: unknown function 'nope'; the config has: exec, forked" in unknown.stderr


def test_a_requirement_that_does_not_exist_is_a_clear_error(
        router_factory: RouterFactory, tmp_path: Path, pip_index: None) -> None:
    code = tmp_path / "code"
    write(code / "app.py", "def handler(event, context):\n    return 1\n")
    requirements = write(code / "requirements.txt", f"{REQUIREMENT}\n{MISSING}==1.0\n")
    config = f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          broken: {{runtime: {PYTHON_RUNTIME}, handler: app.handler, code: ./code}}
    """
    env = {"ROUTER_DEPS_CACHE": str(tmp_path / "cache")}
    expected = (f"function 'broken': installing {requirements}:2 with pip failed (exit 1): package "
                f"'{MISSING}==1.0' could not be installed")

    built = router("build", "--config", str(write(tmp_path / "build.yaml", config.replace("@PORT@", "0"))),
                   env=env)
    assert built.returncode == 1
    assert expected in built.stderr
    assert f"No matching distribution found for {MISSING}" in built.stderr  # the end of pip's output
    assert "fix the requirement in requirements.txt" in built.stderr

    rp = router_factory(config, env=env, start=False)
    rp.start(wait_ready=False)
    assert rp.proc is not None
    rp.proc.wait(INSTALL_DEADLINE)  # the router refuses to start, as for any function that cannot start
    assert rp.proc.returncode != 0
    assert expected in rp.logs()
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()] == []  # nothing half-built kept


def test_node_function_requires_from_layers_and_package_json(
        router_factory: RouterFactory, tmp_path: Path) -> None:
    npm = require_npm()
    probe = subprocess.run([npm, "view", f"{NPM_DEPENDENCY[0]}@{NPM_DEPENDENCY[1]}", "version"],
                           capture_output=True, text=True, timeout=120, check=False)
    if probe.returncode != 0:
        unavailable(f"the npm registry cannot be reached: {probe.stderr[-500:]}")
    module = "module.exports = '{}';\n"
    write(tmp_path / "layers/common/nodejs/node_modules/greeting/index.js", module.format("common"))
    write(tmp_path / "layers/common/nodejs/node_modules/only-common/index.js", module.format("common only"))
    write(tmp_path / f"layers/override/nodejs/node{NODE_MAJOR}/node_modules/greeting/index.js",
          module.format("override"))
    code = tmp_path / "code"
    write(code / "package.json", json.dumps({
        "name": "layered", "version": "1.0.0", "dependencies": {NPM_DEPENDENCY[0]: NPM_DEPENDENCY[1]},
        "devDependencies": {"left-pad": "1.3.0"}}))
    write(code / "index.js", """
        const ms = require('ms');
        exports.handler = async () => ({
          greeting: require('greeting'), common: require('only-common'), twoDays: ms('2 days'),
          ms: require.resolve('ms'),
        });
    """)
    write(code / "esm.mjs", """
        import ms from 'ms';
        import greeting from 'greeting';
        import common from 'only-common';
        export const handler = async () => ({greeting, common, twoDays: ms('2 days')});
    """)
    cache = tmp_path / "cache"
    rp = started(router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          layered:
            runtime: {NODE_RUNTIME}
            handler: index.handler
            code: ./code
            layers: [./layers/common, ./layers/override]
          layered_esm:  # an ES module importing from the layers and the dependency, as on Lambda
            runtime: {NODE_RUNTIME}
            handler: esm.handler
            code: ./code
            layers: [./layers/common, ./layers/override]
    """, env={"ROUTER_DEPS_CACHE": str(cache)}, start=False))
    answer = invoke(rp, "layered")
    assert answer["greeting"] == "override"  # the later layer wins
    assert answer["common"] == "common only"
    assert answer["twoDays"] == 172800000
    assert answer["ms"].startswith(str(cache))
    assert invoke(rp, "layered_esm") == {"greeting": "override", "common": "common only",
                                         "twoDays": 172800000}
    assert not (code / "node_modules").exists()  # installed in a copy, not in the user's directory
    entry = next(p for p in cache.iterdir() if p.is_dir())
    assert sorted(p.name for p in (entry / "node_modules").iterdir() if not p.name.startswith(".")) == ["ms"]
    assert len(installs(rp)) == 1
    assert rp.stop() == 0


def test_a_package_json_dependency_that_does_not_exist_is_a_clear_error(tmp_path: Path) -> None:
    require_npm()
    code = tmp_path / "code"
    write(code / "index.js", "exports.handler = async () => 1;\n")
    package = write(code / "package.json", json.dumps(
        {"name": "broken", "version": "1.0.0", "dependencies": {MISSING: "1.0.0"}}, indent=2))
    config = write(tmp_path / "config.yaml", f"""\
        version: 1
        functions:
          broken: {{runtime: {NODE_RUNTIME}, handler: index.handler, code: ./code}}
    """)
    built = router("build", "--config", str(config), env={"ROUTER_DEPS_CACHE": str(tmp_path / "cache")})
    if "ENOTFOUND" in built.stderr or "EAI_AGAIN" in built.stderr:
        unavailable(f"the npm registry cannot be reached: {built.stderr[-500:]}")
    assert built.returncode == 1
    assert (f"router build: function 'broken': installing {package}:5 with npm failed (exit 1): "
            f"package '{MISSING}' could not be installed") in built.stderr
    assert "E404" in built.stderr  # the end of npm's output
    assert "fix the dependency in package.json or the index (npm reads npm_config_registry" in built.stderr


def test_provided_function_runs_a_tool_from_a_layer_bin(
        router_factory: RouterFactory, tmp_path: Path) -> None:
    for layer in ("first", "second"):
        write(tmp_path / f"layers/{layer}/bin/layer-tool", f"#!/bin/sh\necho 'tool of the {layer} layer'\n",
              mode=0o755)
        (tmp_path / f"layers/{layer}/lib").mkdir()
    code = tmp_path / "code"
    write(code / "bootstrap", f"""\
        #!{sys.executable}
        import json, os, shutil, subprocess, urllib.request

        api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"
        while True:
            with urllib.request.urlopen(api + "next") as answer:
                request_id = answer.headers["Lambda-Runtime-Aws-Request-Id"]
                answer.read()
            body = {{"tool": subprocess.run(["layer-tool"], capture_output=True, text=True).stdout.strip(),
                     "path": os.environ["PATH"], "ld": os.environ.get("LD_LIBRARY_PATH")}}
            urllib.request.urlopen(urllib.request.Request(
                api + request_id + "/response", data=json.dumps(body).encode(), method="POST")).read()
    """, mode=0o755)
    rp = started(router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          tool:
            runtime: provided
            handler: unused
            code: ./code
            layers: [./layers/first, ./layers/second]
    """, env={"ROUTER_DEPS_CACHE": str(tmp_path / "cache")}, start=False))
    answer = invoke(rp, "tool")
    assert answer["tool"] == "tool of the second layer"
    layers = tmp_path.resolve() / "layers"
    # Lambda: /opt/bin last on PATH; /opt/lib after $LAMBDA_TASK_ROOT and $LAMBDA_TASK_ROOT/lib
    assert answer["path"].split(":")[-2:] == [str(layers / "second/bin"), str(layers / "first/bin")]
    assert answer["ld"].split(":") == [str(code.resolve()), str(code.resolve() / "lib"),
                                       str(layers / "second/lib"), str(layers / "first/lib")]
    assert rp.stop() == 0


def test_a_missing_layer_directory_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    write(tmp_path / "code/app.py", "def handler(event, context):\n    return 1\n")
    (tmp_path / "layers/here").mkdir(parents=True)
    config = write(tmp_path / "config.yaml", f"""\
        version: 1
        functions:
          f:
            runtime: {PYTHON_RUNTIME}
            handler: app.handler
            code: ./code
            layers:
              - ./layers/here
              - ./layers/missing
    """)
    done = router("validate", str(config))
    assert done.returncode == 1
    missing = tmp_path.resolve() / "layers/missing"
    assert f"{config}:9:" in done.stderr + done.stdout
    assert f"functions.f.layers[1]: layer directory not found: '{missing}'" in done.stderr + done.stdout


def test_layers_on_a_function_that_is_not_local_are_refused(tmp_path: Path) -> None:
    (tmp_path / "layers/here").mkdir(parents=True)
    config = write(tmp_path / "config.yaml", """\
        version: 1
        functions:
          remote:
            http: {url: "http://127.0.0.1:9/"}
            layers: [./layers/here]
    """)
    done = router("validate", str(config))
    assert done.returncode == 1
    assert f"{config}:5:" in done.stderr + done.stdout
    assert ("functions.remote.layers: layers are for local functions (with runtime and code); remove layers"
            in done.stderr + done.stdout)


def test_no_npm_needed_when_node_modules_is_already_beside_package_json(tmp_path: Path) -> None:
    """A code directory packaged as for a Lambda zip (node_modules installed) is used as it is."""
    from router.runtime.deps import find_manifest

    code = tmp_path / "code"
    write(code / "package.json", json.dumps({"dependencies": {"ms": "2.1.3"}}))
    assert find_manifest(code, python=False) is not None
    (code / "node_modules").mkdir()
    assert find_manifest(code, python=False) is None
    shutil.rmtree(code / "node_modules")
    write(code / "package.json", json.dumps({"type": "module"}))
    assert find_manifest(code, python=False) is None  # nothing to install
