"""Installing a function's (or a layer's) ``requirements.txt`` / ``package.json`` into the dependency cache.

What ``sam build`` does before a deploy, done once per manifest: the packages are installed with pip
(``python3.X -m pip install -r requirements.txt --target ...``, the function's own interpreter) or npm
(``npm ci --omit=dev`` with a lock file, else ``npm install --omit=dev``, in a copy of the manifest) into
``<cache>/<runtime>-<hash>``, keyed by the hash of the manifest, its lock file and the runtime, so a
second start, another function with the same file, or ``router build`` beforehand, reuses it. Both
tools read their usual settings from the environment (``PIP_INDEX_URL``, ``pip.conf``, ``.npmrc``,
``npm_config_registry``). An entry is built in a temporary directory and renamed into place, so it is
either complete or absent; a lock file per entry keeps two routers (or two functions) from installing
the same one at once. Entries are made read-only, as Lambda's ``/opt``.

Blocking (runs pip or npm, bounded by ``INSTALL_TIMEOUT``): callers run it off the event loop, as
``resolve_launch`` is (``asyncio.to_thread``), or outside of one (``router build``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from router.errors import EnvironmentStartError

CACHE_VAR = "ROUTER_DEPS_CACHE"
"""Environment variable naming the cache directory (default ``$XDG_CACHE_HOME/router/deps``)."""
INSTALL_TIMEOUT = 600.0
"""Seconds one pip or npm install may take (and a wait for another process installing the same)."""
NODE_LOCKS = ("package-lock.json", "npm-shrinkwrap.json")
OUTPUT_TAIL = 15  # lines of the tool's output shown when it fails
_CREDENTIALS = re.compile(r"(\w+://)[^/\s@]+@")


@dataclass(frozen=True, slots=True)
class Manifest:
    """A dependency file to install: ``requirements.txt`` (pip) or ``package.json`` (npm)."""

    tool: Literal["pip", "npm"]
    file: Path
    lock: Path | None = None


@dataclass(frozen=True, slots=True)
class Built:
    """An installed manifest: ``path`` goes on the search path (pip's target, or ``node_modules``)."""

    manifest: Manifest
    path: Path
    reused: bool
    seconds: float = 0.0


def cache_root(env: Mapping[str, str] | None = None) -> Path:
    """The dependency cache: ``$ROUTER_DEPS_CACHE``, else ``$XDG_CACHE_HOME/router/deps``, else
    ``~/.cache/router/deps``."""
    env = os.environ if env is None else env
    if env.get(CACHE_VAR):
        return Path(env[CACHE_VAR]).expanduser().resolve()
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return (base / "router" / "deps").resolve()


def find_manifest(directory: Path, *, python: bool) -> Manifest | None:
    """The manifest in ``directory`` the router installs, or None.

    Python: a ``requirements.txt`` naming at least one requirement. Node.js: a ``package.json`` with
    ``dependencies``, unless ``node_modules`` is already beside it (installed by the user, as they
    would package it for Lambda: then it is used as it is).
    """
    if python:
        file = directory / "requirements.txt"
        if not file.is_file():
            return None
        lines = [ln.split("#", 1)[0].strip() for ln in file.read_text(errors="replace").splitlines()]
        return Manifest("pip", file) if any(lines) else None
    file = directory / "package.json"
    if not file.is_file() or (directory / "node_modules").is_dir():
        return None
    try:
        dependencies = json.loads(file.read_text()).get("dependencies")
    except (ValueError, AttributeError):
        dependencies = None  # npm says what is wrong with it when it runs; nothing to install here
    if not dependencies:
        return None
    lock = next((directory / name for name in NODE_LOCKS if (directory / name).is_file()), None)
    return Manifest("npm", file, lock)


def entry_name(manifest: Manifest, runtime: str) -> str:
    """``<runtime>-<hash>``: the cache entry of ``manifest`` for ``runtime``."""
    digest = hashlib.sha256()
    for part in (manifest.tool, runtime, os.uname().machine):
        digest.update(part.encode() + b"\0")
    for file in (manifest.file, manifest.lock):
        digest.update(file.read_bytes() if file is not None else b"")
        digest.update(b"\0")
    return f"{runtime}-{digest.hexdigest()[:24]}"


def ensure_installed(manifest: Manifest, *, runtime: str, command: str, where: str,
                     cache: Path | None = None, timeout: float = INSTALL_TIMEOUT) -> Built:
    """Install ``manifest`` into the cache unless it is there; ``command`` is the runtime's Python
    interpreter (pip) or ``npm``. Raises ``EnvironmentStartError`` (``where``: "function 'x'") naming
    the file and the package that failed, with the end of the tool's output."""
    cache = cache_root() if cache is None else cache
    name = entry_name(manifest, runtime)
    entry = cache / name
    sub = "python" if manifest.tool == "pip" else "node_modules"
    if (entry / sub).is_dir():
        return Built(manifest, entry / sub, reused=True)
    cache.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with _locked(cache / f"{name}.lock", timeout, where, manifest):
        if (entry / sub).is_dir():  # installed by another process while this one waited
            return Built(manifest, entry / sub, reused=True)
        work = cache / f".building-{name}-{uuid.uuid4().hex[:8]}"
        work.mkdir()
        try:
            if manifest.tool == "pip":
                argv = [command, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
                        "--no-warn-script-location", "--target", str(work / sub), "-r", str(manifest.file)]
                cwd = manifest.file.parent  # -r other.txt and ./local paths in it resolve from there
            else:
                for file in (manifest.file, manifest.lock):
                    if file is not None:
                        shutil.copy2(file, work / file.name)
                verb = ["ci"] if manifest.lock is not None else ["install", "--no-package-lock"]
                argv = [command, *verb, "--omit=dev", "--no-audit", "--no-fund", "--loglevel=error"]
                cwd = work
            _run(argv, cwd, timeout, where, manifest)
            if manifest.tool == "npm":
                (work / sub).mkdir(exist_ok=True)  # dependencies that are all optional: nothing installed
            (work / "build.json").write_text(json.dumps({
                "file": str(manifest.file), "lock": str(manifest.lock) if manifest.lock else None,
                "runtime": runtime, "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
            _read_only(work)
            work.rename(entry)
        finally:
            if work.exists():
                _remove(work)
    return Built(manifest, entry / sub, reused=False, seconds=time.monotonic() - started)


@contextlib.contextmanager
def _locked(path: Path, timeout: float, where: str, manifest: Manifest) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EnvironmentStartError(
                        f"{where}: {manifest.file}: another process has been installing it for over "
                        f"{timeout:g} s (lock {path}); wait for it or remove the lock file") from None
                time.sleep(0.2)  # a worker thread waiting for another process, never the event loop
        yield
    finally:
        os.close(fd)  # releases the lock


def _run(argv: list[str], cwd: Path, timeout: float, where: str, manifest: Manifest) -> None:
    tool = manifest.tool
    try:
        process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        raise EnvironmentStartError(
            f"{where}: cannot install {manifest.file}: cannot run {argv[0]} ({exc.strerror}); "
            f"install {'pip for that interpreter' if tool == 'pip' else 'npm'}") from None
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the tool and whatever it started
        out, _ = process.communicate()
        raise EnvironmentStartError(
            f"{where}: installing {manifest.file} with {tool} took over {timeout:g} s and was stopped; "
            f"{_tail(out)}check the network and the index ({_index_hint(tool)})") from None
    if process.returncode != 0:
        text = out.decode(errors="replace")
        package = failing_package(tool, text)
        what = f"package {package!r} could not be installed" if package else "the install failed"
        if tool == "pip" and "No module named pip" in text:
            what = f"{argv[0]} has no pip; install it for that interpreter ({argv[0]} -m ensurepip, or " \
                   "the python3-pip package)"
        line = _line_of(manifest.file, package) if package else None
        file = f"{manifest.file}:{line}" if line else str(manifest.file)
        raise EnvironmentStartError(
            f"{where}: installing {file} with {tool} failed (exit {process.returncode}): {what}; "
            f"{_tail(out)}fix the {'requirement' if tool == 'pip' else 'dependency'} in {manifest.file.name} "
            f"or the index ({_index_hint(tool)})")


def failing_package(tool: str, output: str) -> str | None:
    """The package pip's or npm's error ``output`` names as the one that failed, if any."""
    patterns = (
        [r"No matching distribution found for ([^\s;]+)",
         r"Could not find a version that satisfies the requirement ([^\s;]+)",
         r"Failed to build ([^\s;]+)",
         r"Failed building wheel for ([^\s;]+)"]
        if tool == "pip" else
        [r"'(@?[^'\s@]+)@[^'\s]*' is not in (?:the npm|this) registry",
         r"No matching version found for (@?[^\s@]+)",
         r"The requested resource '(@?[^'\s@]+)@[^'\s]*' could not be found",
         r"404 Not Found - GET \S+/(@?[^/\s]+(?:%2[fF][^/\s]+)?)(?:\s|$)"]
    )
    for pattern in patterns:
        found = re.search(pattern, output)
        if found:
            return found.group(1).replace("%2f", "/").replace("%2F", "/")
    return None


def _line_of(file: Path, package: str) -> int | None:
    """The line of ``file`` naming ``package`` (its bare name, as pip and npm may add a version)."""
    name = re.split(r"[=<>!~\[;@ ]", package.lstrip("@"), maxsplit=1)[0]
    name = ("@" + name) if package.startswith("@") else name
    for number, text in enumerate(file.read_text(errors="replace").splitlines(), start=1):
        if name and name.lower() in text.lower():
            return number
    return None


def _tail(out: bytes) -> str:
    lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.strip()][-OUTPUT_TAIL:]
    if not lines:
        return ""
    shown = "\n".join("  " + _CREDENTIALS.sub(r"\1***@", ln) for ln in lines)
    return f"the end of its output:\n{shown}\n"


def _index_hint(tool: str) -> str:
    return ("pip reads PIP_INDEX_URL, PIP_EXTRA_INDEX_URL and pip.conf" if tool == "pip"
            else "npm reads npm_config_registry and .npmrc")


def _read_only(root: Path) -> None:
    """Drop the write bits under ``root``: functions use the entry, never change it (as /opt)."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode):
                os.chmod(path, mode & ~0o222)
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, os.lstat(path).st_mode & ~0o222)
    os.chmod(root, os.stat(root).st_mode & ~0o222)


def _remove(root: Path) -> None:
    """Remove a (partly built, maybe read-only) directory."""
    for dirpath, _, _ in os.walk(root):
        with contextlib.suppress(OSError):
            os.chmod(dirpath, 0o755)
    shutil.rmtree(root, ignore_errors=True)
