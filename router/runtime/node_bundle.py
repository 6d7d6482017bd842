"""The Node.js bootstrap as one file: what ``node`` runs for every Node environment.

The bootstrap is kept as readable modules (``bootstrap/node``: ``bootstrap.cjs`` and the ``rapid``,
``logging``, ``loader`` and ``streaming`` modules it requires). At a cold start each file node loads
costs its own resolution, read and compile: ~0.35-0.55 ms a file after the first (measured on node 20,
bench/RESULTS.md 2026-12-06), ~1 ms of every cold start for the four. So the router joins them into one
file, once per router process, in a directory of its own (removed at exit): each module becomes a
function called at its first ``require``, exactly as node's loader would call it (``module``,
``exports``, ``require``, ``__dirname`` of the sources, so ``esm_paths.mjs`` is found where it is).
``require`` of anything else (node's built-ins, the function's own code) is node's own.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

MODULES = ("rapid.cjs", "logging.cjs", "loader.cjs", "streaming.cjs")
"""The modules ``bootstrap.cjs`` requires as ``./NAME``, joined into the one file."""
ENTRY = "bootstrap.cjs"

_lock = threading.Lock()
_written: dict[Path, Path] = {}


def source(directory: Path) -> str:
    """The one-file bootstrap made from the modules in ``directory``."""
    where = json.dumps(str(directory))
    parts = [
        "'use strict';",
        f"// The router's Node.js bootstrap, joined from {directory} by router.runtime.node_bundle:",
        "// edit those files, not this one.",
        "const __bundled = {",
    ]
    for name in MODULES:
        text = (directory / name).read_text(encoding="utf-8")
        parts.append(f"  './{name}': function (module, exports, require, __filename, __dirname) {{\n"
                     f"{text}\n  }},")
    parts.append("};")
    parts.append(f"""const __nodeRequire = require;
const __loaded = {{}};
function __require(name) {{
  const define = __bundled[name];
  if (define === undefined) return __nodeRequire(name);
  let module = __loaded[name];
  if (module === undefined) {{
    module = {{ exports: {{}} }};
    __loaded[name] = module;
    define(module, module.exports, __require, require('path').join({where}, name), {where});
  }}
  return module.exports;
}}
__require.resolve = __nodeRequire.resolve;
__require.cache = __nodeRequire.cache;
(function (require, __filename, __dirname) {{""")
    parts.append((directory / ENTRY).read_text(encoding="utf-8"))
    parts.append(f"}})(__require, require('path').join({where}, '{ENTRY}'), {where});")
    return "\n".join(parts) + "\n"


def path(directory: Path) -> Path:
    """The one-file bootstrap of ``directory``, written at the first call (in a thread: it writes a
    file) and reused by the router process; readable by every user (a ``run_as`` worker runs it)."""
    with _lock:
        written = _written.get(directory)
        if written is not None and written.exists():
            return written
        text = source(directory)
        where = Path(tempfile.mkdtemp(prefix="router-node-"))
        atexit.register(shutil.rmtree, where, True)
        os.chmod(where, 0o755)
        target = where / ENTRY
        target.write_text(text, encoding="utf-8")
        os.chmod(target, 0o644)
        _written[directory] = target
        return target
