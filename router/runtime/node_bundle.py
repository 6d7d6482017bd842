"""The Node.js bootstrap as one file, and the V8 code cache of it: what ``node`` runs for every Node
environment.

The bootstrap is kept as readable modules (``bootstrap/node``: ``bootstrap.cjs`` and the ``v8_flags``,
``rapid``, ``logging``, ``loader`` and ``streaming`` modules it requires). At a cold start each file node
loads costs its own resolution, read and compile: ~0.35-0.55 ms a file after the first (measured on node
20, bench/RESULTS.md 2026-12-06), ~1 ms of every cold start for the four. So the router joins them into
one file (``bundle.cjs``), once per router process, in a directory of its own (removed at exit): each
module becomes a function called at its first ``require``, exactly as node's loader would call it
(``module``, ``exports``, ``require``, ``__dirname`` of the sources, so ``esm_paths.mjs`` is found where it
is). ``require`` of anything else (node's built-ins, the function's own code) is node's own.

Node runs ``entry.cjs`` (written next to it, with ``v8_flags.cjs`` inlined), which compiles the bundle from
a V8 code cache the router makes once per router process and ``node`` binary, by running the entry in a
mode that compiles every function and writes the cache (no function's code or variables in it). A cold
start then neither pre-parses the ~50 KB nor compiles each function at its first call: ~1.5 ms
(bench/RESULTS.md, 2026-12-06 second session). V8 checks a cache against its version, the source's length
and its flags, and compiles as usual when one does not match.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

MODULES = ("v8_flags.cjs", "rapid.cjs", "logging.cjs", "loader.cjs", "streaming.cjs")
"""The modules ``bootstrap.cjs`` requires as ``./NAME``, joined into the one file."""
ENTRY = "bootstrap.cjs"
"""The bootstrap's own entry among its sources."""
NODE_ENTRY = "entry.cjs"
"""What node runs: compiles the bundle (``BUNDLE``) from the code cache."""
BUNDLE = "bundle.cjs"
_INLINED = ("v8_flags.cjs", "const { acceptBuiltinCodeCache } = require('./v8_flags.cjs');")
"""The module ``NODE_ENTRY`` requires, and the line that does: inlined, so node loads one file, not two."""
CODE_CACHE_TIMEOUT = 30.0
"""Seconds ``node`` may take to make the code cache (~0.1 s)."""

log = logging.getLogger("router.runtime")

_lock = threading.Lock()
_written: dict[Path, Path] = {}
_caches: set[tuple[Path, str]] = set()  # (entry, node) whose code cache was made, or tried


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


def entry_source(directory: Path) -> str:
    """``NODE_ENTRY`` of ``directory`` with the module it requires inlined."""
    text = (directory / NODE_ENTRY).read_text(encoding="utf-8")
    module, line = _INLINED
    if line not in text:
        raise ValueError(f"{directory / NODE_ENTRY}: expected the line {line!r}")
    inlined = (f"const {{ acceptBuiltinCodeCache }} = (function () {{ // {module}, inlined\n"
               "const module = { exports: {} };\n"
               f"{(directory / module).read_text(encoding='utf-8')}\n"
               "return module.exports;\n})();")
    return text.replace(line, inlined)


def path(directory: Path, node: str | None = None) -> Path:
    """The file node runs for ``directory``'s bootstrap (``NODE_ENTRY``, next to the one-file ``BUNDLE``),
    written at the first call and reused by the router process; readable by every user (a ``run_as``
    worker runs it). With ``node``, the code cache for that binary is made too, once (blocking: call it
    in a thread). A cache that cannot be made is logged and done without."""
    with _lock:
        entry = _written.get(directory)
        if entry is None or not entry.exists() or not (entry.parent / BUNDLE).exists():
            where = Path(tempfile.mkdtemp(prefix="router-node-"))
            atexit.register(shutil.rmtree, where, True)
            os.chmod(where, 0o755)
            for name, text in ((BUNDLE, source(directory)), (NODE_ENTRY, entry_source(directory))):
                (where / name).write_text(text, encoding="utf-8")
                os.chmod(where / name, 0o644)
            entry = where / NODE_ENTRY
            _written[directory] = entry
        if node is not None and (entry, node) not in _caches:
            _caches.add((entry, node))
            _make_code_cache(entry, node)
        return entry


class _NoCache(Exception):
    """Raised when node could not make the code cache, or V8 would not accept the one it made."""


def _make_code_cache(entry: Path, node: str) -> None:
    """Run ``node`` on ``entry`` in its cache-making mode, then check that V8 accepts the cache (it checks a
    cache's header, not its body: a damaged body would crash every start), with nothing of the router's
    or a function's environment but ``PATH``."""
    try:
        made = _run_entry(entry, node, "make")  # the cache's path (named by node's version)
        try:
            verdict = _run_entry(entry, node, "check")
        except _NoCache:
            verdict = ""  # could not be checked: not kept either
        if verdict != "accepted":
            if made:
                Path(made).unlink(missing_ok=True)
            raise _NoCache(f"{node} {entry} --router-code-cache check: {verdict or 'failed'!r}, "
                           "not 'accepted'")
    except _NoCache as exc:
        log.warning("node bootstrap: no code cache for %s, so each cold start compiles the bootstrap "
                    "(~1.5 ms more): %s", node, exc)


def _run_entry(entry: Path, node: str, mode: str) -> str:
    """What ``node ENTRY --router-code-cache MODE`` printed; raises ``_NoCache`` if it failed."""
    argv = [node, str(entry), "--router-code-cache", mode]
    try:
        done = subprocess.run(argv, cwd=entry.parent, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=CODE_CACHE_TIMEOUT,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _NoCache(f"{' '.join(argv)}: {exc}") from None
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise _NoCache(f"{' '.join(argv)} exited {done.returncode}: {' / '.join(tail)}")
    return done.stdout.decode("utf-8", "replace").strip()
