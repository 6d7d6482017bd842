"""The Node.js bootstrap joined into one file (``router.runtime.node_bundle``): its modules behave as
node's own loader would run them. (Every Node runtime test runs the real bootstrap through it.)"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

from router.runtime import node_bundle
from router.runtime.launch import NODE_BOOTSTRAP_DIR

from .node_support import require_node

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
const names = ['./rapid.cjs', './logging.cjs', './loader.cjs', './streaming.cjs'].map((m) => require(m).name);
const user = require(process.argv[2]);  // an absolute path: node's require, as the loader uses it
require('fs').writeSync(1, JSON.stringify({
  names, same: rapid === again, loads: rapid.loads, dir: rapid.dir, file: rapid.file, strict: rapid.strict,
  entryDir: __dirname, entryFile: __filename, user: user.value,
  resolved: require.resolve('./rapid.cjs', { paths: [__dirname] }),
}));
"""


def test_the_modules_run_as_nodes_loader_runs_them(tmp_path: Path) -> None:
    require_node()
    sources = tmp_path / "sources"
    sources.mkdir()
    for name in node_bundle.MODULES:
        (sources / name).write_text(MODULE.format(name=name))
    (sources / node_bundle.ENTRY).write_text(ENTRY)
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
    first = node_bundle.path(NODE_BOOTSTRAP_DIR)
    assert node_bundle.path(NODE_BOOTSTRAP_DIR) == first
    assert first.read_text() == node_bundle.source(NODE_BOOTSTRAP_DIR)
    for name in (*node_bundle.MODULES, node_bundle.ENTRY):  # every source is in it
        assert (NODE_BOOTSTRAP_DIR / name).read_text() in first.read_text()
    assert stat.S_IMODE(os.stat(first).st_mode) == 0o644  # a run_as worker reads it
    assert stat.S_IMODE(os.stat(first.parent).st_mode) == 0o755
    first.unlink()  # gone (a cleaner of /tmp): written again
    second = node_bundle.path(NODE_BOOTSTRAP_DIR)
    assert second.exists()


def test_the_real_bootstrap_compiles() -> None:
    require_node()
    subprocess.run(["node", "--check", str(node_bundle.path(NODE_BOOTSTRAP_DIR))], check=True, timeout=60)
