"""``router build``: install the dependency files of functions and their layers ahead of time.

The same installs a function's first start does (``router.runtime.deps``), for CI and container images:
a router started afterwards with the same cache (``ROUTER_DEPS_CACHE``) reuses them. Blocking: run
from the command line, not from the event loop.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TextIO

from router.config.models import RouterConfig
from router.config.node import runtime_major
from router.errors import EnvironmentStartError
from router.runtime.deps import cache_root, ensure_installed, find_manifest
from router.runtime.launch import DEFAULT_PATH, _python_interpreter


def build(config: RouterConfig, names: list[str], out: TextIO, err: TextIO) -> int:
    """Install what ``names`` (default: every local function) need; print one line per dependency file
    (built or reused) and per function with nothing to install. 0, or 1 when anything failed."""
    unknown = [n for n in names if n not in config.functions]
    if unknown:
        known = ", ".join(sorted(config.functions)) or "none"
        print(f"router build: unknown function {', '.join(map(repr, unknown))}; the config has: {known}",
              file=err)
        return 2
    path = os.environ.get("PATH") or DEFAULT_PATH
    cache = cache_root()
    failed = False
    for name in names or sorted(config.functions):
        fn = config.functions[name]
        if fn.runtime is None or fn.code is None:
            print(f"{name}: not a local function, nothing to build", file=out)
            continue
        python = runtime_major(fn.runtime) is None and fn.runtime != "provided"
        if fn.runtime == "provided":
            print(f"{name}: runtime provided, nothing to build (its bootstrap brings its own)", file=out)
            continue
        dirs = [(config.config_dir / fn.code).resolve(), *(Path(layer) for layer in fn.layers)]
        manifests = [m for d in dirs if d.is_dir() and (m := find_manifest(d, python=python)) is not None]
        if not manifests:
            print(f"{name}: nothing to install", file=out)
            continue
        try:
            installer = (_python_interpreter(name, fn.runtime, path) if python
                         else shutil.which("npm", path=path))
            if installer is None:
                raise EnvironmentStartError(f"function '{name}': npm is not on PATH; install npm")
            for manifest in manifests:
                built = ensure_installed(manifest, runtime=fn.runtime, command=installer,
                                         where=f"function '{name}'", cache=cache)
                verb = "reused" if built.reused else f"built in {built.seconds:.1f} s"
                print(f"{name}: {verb} {manifest.file} -> {built.path}", file=out, flush=True)
        except EnvironmentStartError as exc:
            print(f"router build: {exc}", file=err, flush=True)
            failed = True
    return 1 if failed else 0
