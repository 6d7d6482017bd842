"""Which ``node`` a Node.js runtime (``nodejsNN.x``) runs on: found on the PATH, its major version checked.

The config's cross-check and the launch of an environment ask the same question, so ``router validate``
refuses what ``router run`` would refuse.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess

NODE_RUNTIME = re.compile(r"^nodejs(\d{2,3})\.x$")
MIN_MAJOR = 18
"""Oldest Node.js the bootstrap supports (Lambda's oldest Node runtime still running is nodejs18.x)."""

def runtime_major(runtime: str) -> int | None:
    """22 for ``nodejs22.x``; None when ``runtime`` is not a Node.js runtime."""
    match = NODE_RUNTIME.match(runtime)
    return int(match.group(1)) if match else None


@functools.lru_cache(maxsize=16)
def _version(executable: str, mtime_ns: int, size: int) -> str | None:
    del mtime_ns, size  # part of the cache key only: a replaced binary is asked again
    try:
        done = subprocess.run([executable, "--version"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = done.stdout.decode("ascii", "replace").strip()
    return text if done.returncode == 0 and re.fullmatch(r"v\d+\.\d+\.\d+\S*", text) else None


def node_version(executable: str) -> str | None:
    """``node --version`` of ``executable`` (``v20.20.2``), cached per binary; None if it fails. Blocking."""
    try:
        st = os.stat(executable)
    except OSError:
        return None
    return _version(os.path.realpath(executable), st.st_mtime_ns, st.st_size)


def version_tuple(version: str) -> tuple[int, int, int]:
    major, minor, patch = re.findall(r"\d+", version)[:3]
    return int(major), int(minor), int(patch)


def find_node(runtime: str, path: str) -> tuple[str, str]:
    """The ``node`` on ``path`` and its version, checked against ``runtime``. Blocking.

    Raises ``ValueError`` with what is wrong and how to fix it (no location: callers add theirs).
    """
    major = runtime_major(runtime)
    if major is None:
        raise ValueError(f"not a Node.js runtime: {runtime!r}")
    executable = shutil.which("node", path=path)
    if executable is None:
        raise ValueError(
            f"runtime {runtime} needs node {major} on PATH, got no node on PATH; "
            f"install Node.js {major} or add its bin directory to PATH"
        )
    version = node_version(executable)
    if version is None:
        raise ValueError(
            f"runtime {runtime} needs node {major} on PATH, got {executable}, which did not answer "
            f"'node --version'; reinstall Node.js {major}"
        )
    got = version_tuple(version)[0]
    if got != major:
        hint = f" or set runtime: nodejs{got}.x" if got >= MIN_MAJOR else ""
        raise ValueError(
            f"runtime {runtime} needs node {major} on PATH, got {version} at {executable}; "
            f"install Node.js {major}{hint}"
        )
    return executable, version
