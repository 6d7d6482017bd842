"""The Node.js bootstrap joined into one file (``router.runtime.node_bundle``): its modules behave as
node's own loader would run them; the entry node runs compiles it from a code cache made for that node.
(Every Node runtime test runs the real bootstrap through them.)"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from router.runtime import node_bundle
from router.runtime.launch import NODE_BOOTSTRAP_DIR
from router.runtime.nodejs import node_flags

from .conftest import MakeInvoker, invocation
from .node_support import NODE_RUNTIME, require_node

MODULE = """'use strict';
const {{ join }} = require('path');  // a built-in, node's own require
exports.loads = (exports.loads || 0) + 1;
exports.name = {name!r};
exports.dir = __dirname;
exports.file = __filename;
exports.strict = (function () {{ return this === undefined; }})();
"""

ENTRY = """'use strict';
const rapid = require('./rapid.cjs');
const again = require('./rapid.cjs');
const names = {modules}.map((m) => require(`./${{m}}`).name);
const user = require(process.argv[2]);  // an absolute path: node's require, as the loader uses it
require('fs').writeSync(1, JSON.stringify({{
  names, same: rapid === again, loads: rapid.loads, dir: rapid.dir, file: rapid.file, strict: rapid.strict,
  entryDir: __dirname, entryFile: __filename, user: user.value,
  resolved: require.resolve('./rapid.cjs', {{ paths: [__dirname] }}),
}}));
"""


def test_the_modules_run_as_nodes_loader_runs_them(tmp_path: Path) -> None:
    require_node()
    sources = tmp_path / "sources"
    sources.mkdir()
    for name in node_bundle.MODULES:
        (sources / name).write_text(MODULE.format(name=name))
    (sources / node_bundle.ENTRY).write_text(ENTRY.format(modules=json.dumps(node_bundle.MODULES)))
    bundle = tmp_path / "bundle.cjs"
    bundle.write_text(node_bundle.source(sources))
    user = tmp_path / "user.cjs"
    user.write_text("module.exports = { value: 42 };\n")
    out = subprocess.run(["node", str(bundle), str(user)], capture_output=True, text=True, timeout=60,
                         check=True, cwd=tmp_path)
    got = json.loads(out.stdout)
    assert got["names"] == list(node_bundle.MODULES)
    assert got["same"] is True  # loaded once, cached, as node's require caches
    assert got["loads"] == 1
    # __dirname and __filename are the sources', for the modules and the entry alike
    assert got["dir"] == got["entryDir"] == str(sources)
    assert got["file"] == str(sources / "rapid.cjs")
    assert got["entryFile"] == str(sources / node_bundle.ENTRY)
    assert got["strict"] is True
    assert got["user"] == 42
    assert got["resolved"] == str(sources / "rapid.cjs")


def test_the_real_bootstrap_is_written_once_readable_by_every_user() -> None:
    entry = node_bundle.path(NODE_BOOTSTRAP_DIR)
    bundle = entry.parent / node_bundle.BUNDLE
    assert node_bundle.path(NODE_BOOTSTRAP_DIR) == entry
    assert entry.name == node_bundle.NODE_ENTRY
    assert bundle.read_text() == node_bundle.source(NODE_BOOTSTRAP_DIR)
    assert entry.read_text() == node_bundle.entry_source(NODE_BOOTSTRAP_DIR)
    for name in (*node_bundle.MODULES, node_bundle.ENTRY):  # every source is in it
        assert (NODE_BOOTSTRAP_DIR / name).read_text() in bundle.read_text()
    assert (NODE_BOOTSTRAP_DIR / "v8_flags.cjs").read_text() in entry.read_text()  # inlined
    for written in (entry, bundle):
        assert stat.S_IMODE(os.stat(written).st_mode) == 0o644  # a run_as worker reads them
    assert stat.S_IMODE(os.stat(entry.parent).st_mode) == 0o755
    bundle.unlink()  # gone (a cleaner of /tmp): written again
    again = node_bundle.path(NODE_BOOTSTRAP_DIR)
    assert (again.parent / node_bundle.BUNDLE).exists()


def test_the_real_bootstrap_compiles() -> None:
    require_node()
    entry = node_bundle.path(NODE_BOOTSTRAP_DIR)
    for written in (entry, entry.parent / node_bundle.BUNDLE):
        subprocess.run(["node", "--check", str(written)], check=True, timeout=60)


def _check(entry: Path, *flags: str) -> str:
    """What V8 makes of the code cache next to ``entry`` (accepted, rejected, none), node started with
    ``flags``."""
    done = subprocess.run(["node", *flags, str(entry), "--router-code-cache", "check"], capture_output=True,
                          text=True, timeout=60, check=True)
    return done.stdout.strip()


def test_the_code_cache_is_made_once_per_node_and_accepted_under_lambdas_flags() -> None:
    require_node()
    node = shutil.which("node")
    assert node is not None
    entry = node_bundle.path(NODE_BOOTSTRAP_DIR, node)
    (cache,) = entry.parent.glob("bundle-*.cache")
    made = cache.stat().st_mtime_ns
    assert node_bundle.path(NODE_BOOTSTRAP_DIR, node) == entry
    assert cache.stat().st_mtime_ns == made  # not made again
    assert stat.S_IMODE(cache.stat().st_mode) == 0o644
    # as environments start node: Lambda's V8 flags for 256 MB (reset by the entry before it compiles)
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True, timeout=60)
    lambda_flags = node_flags(version.stdout.strip().lstrip("v"), 256, "")
    assert _check(entry, *lambda_flags) == "accepted"
    assert _check(entry) == "accepted"


async def test_a_cache_v8_rejects_or_none_leaves_the_bootstrap_compiled_as_usual(
        make_invoker: MakeInvoker) -> None:
    """A cache of another node (here: its V8 version hash changed, the header's second word), or none: V8
    compiles the bootstrap itself, and functions run."""
    require_node()
    node = shutil.which("node")
    assert node is not None
    entry = node_bundle.path(NODE_BOOTSTRAP_DIR, node)
    (cache,) = entry.parent.glob("bundle-*.cache")
    good = cache.read_bytes()
    try:
        cache.write_bytes(good[:4] + bytes(b ^ 0xFF for b in good[4:8]) + good[8:])
        assert _check(entry) == "rejected"
        damaged = await _cold_start(make_invoker, "damaged")
        cache.unlink()
        assert _check(entry) == "none"
        missing = await _cold_start(make_invoker, "missing")
    finally:
        cache.write_bytes(good)
    assert damaged == missing == {"a": 1}
    assert _check(entry) == "accepted"


async def _cold_start(make_invoker: MakeInvoker, name: str) -> object:
    invoker = await make_invoker("node_basic", name=name, runtime=NODE_RUNTIME, handler="index.echo")
    result = await invoker.invoke(invocation({"a": 1}))
    assert result.ok, result.payload
    assert "Init Duration" in result.logs  # a cold start
    return json.loads(result.payload)


def test_a_cache_node_cannot_make_is_logged_and_others_are_left_alone(
        caplog: pytest.LogCaptureFixture) -> None:
    entry = node_bundle.path(NODE_BOOTSTRAP_DIR)
    caches = sorted(entry.parent.glob("bundle-*.cache"))  # the machine's node's, if made already
    caplog.set_level(logging.WARNING, "router.runtime")
    node_bundle._make_code_cache(entry, "/bin/false")  # runs, and fails: a warning naming it
    assert "no code cache for /bin/false" in caplog.text
    assert "--router-code-cache make exited 1" in caplog.text
    assert sorted(entry.parent.glob("bundle-*.cache")) == caches  # nothing made, nothing else removed


@pytest.mark.parametrize(("check", "said"), [("echo rejected", "'rejected'"), ("exit 3", "'failed'")])
def test_a_cache_v8_would_not_accept_or_that_cannot_be_checked_is_removed(
        check: str, said: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A node that makes a cache, then says V8 rejects it, or fails to check it: the router removes that
    file (an unchecked cache could crash every start), and only it."""
    entry = node_bundle.path(NODE_BOOTSTRAP_DIR)
    made = entry.parent / "bundle-vfake.cache"
    fake = tmp_path / "node"
    fake.write_text(f"""#!/bin/sh
case "$2 $3" in
  "--router-code-cache make") printf x > {made}; echo {made} ;;
  "--router-code-cache check") {check} ;;
  *) exit 2 ;;
esac
""")
    fake.chmod(0o755)
    others = sorted(set(entry.parent.glob("bundle-*.cache")) - {made})
    caplog.set_level(logging.WARNING, "router.runtime")
    node_bundle._make_code_cache(entry, str(fake))
    assert not made.exists()
    assert sorted(entry.parent.glob("bundle-*.cache")) == others
    assert f"{said}, not 'accepted'" in caplog.text
