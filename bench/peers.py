"""serverless-offline as a peer: the local Lambda emulator people already run (serverless 3 +
serverless-offline 13, from npm), installed by the bench into bench/.peers/ (git-ignored) when node and
npm are present, and started on a free loopback port with the same handlers the router runs.

How serverless-offline 13.10 runs handlers (read from its source, src/lambda/): one ``LambdaFunction``
per concurrent request (an IDLE one is reused, else a new one is made; idle ones end after
``terminateIdleLambdaTime``, 60 s). Python: each ``LambdaFunction`` spawns ``python3 -u invoke.py``
through ``sh -c`` and talks to it over stdin/stdout, one JSON line per invocation. Node: a worker thread
per ``LambdaFunction`` by default; with ``--useInProcess`` every invocation runs on the main thread of
the serverless process (the handler module loaded once). The bench passes ``--useInProcess``, the
fastest choice a user has for Node; nothing changes the Python path (``--reloadHandler`` would spawn a
process per request, ``--useDocker`` a container).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.harness import BENCH_DIR, HOST, PYTHON, BenchError, Ctx, ServerProcess, descendants, free_port

SERVERLESS_VERSION = "3.40.0"  # npm view serverless@3 version (the last 3.x)
OFFLINE_VERSION = "13.10.1"  # npm view serverless-offline@13 version (the last 13.x)
PEERS_DIR = BENCH_DIR / ".peers"
NODE_MODULES = PEERS_DIR / "node_modules"
SLS_BIN = NODE_MODULES / "serverless" / "bin" / "serverless.js"
INSTALL_TIMEOUT = 600.0  # npm install of ~640 packages; about a minute on a good connection
START_TIMEOUT = 90.0  # serverless start-up is 3-10 s; the first python call spawns an interpreter
NODE_MIN = (18, 12)  # serverless-offline 13's engines field

# serverless 3 sends telemetry, fetches notifications and checks for updates unless told not to
# (lib/utils/telemetry/are-disabled.js, @serverless/utils/get-notifications-mode.js, log-deprecation.js,
# eventually-update.js); dummy credentials so nothing ever looks for real ones.
QUIET_ENV = {
    "SLS_TELEMETRY_DISABLED": "1",
    "SLS_TRACKING_DISABLED": "1",
    "SLS_NOTIFICATIONS_MODE": "off",
    "SLS_DEPRECATION_DISABLE": "*",
    "SLS_DISABLE_AUTO_UPDATE": "1",
    "SLS_INTERACTIVE_SETUP_DISABLE": "1",
    "AWS_ACCESS_KEY_ID": "bench-dummy",
    "AWS_SECRET_ACCESS_KEY": "bench-dummy",
    "AWS_REGION": "us-east-1",
    "npm_config_update_notifier": "false",
    "npm_config_fund": "false",
    "npm_config_audit": "false",
    "VIRTUAL_ENV": "",  # serverless-offline puts $VIRTUAL_ENV/bin first on PATH; the bench picks python3
}


@dataclass(frozen=True)
class Node:
    path: str
    version: str  # "20.20.2"
    major: int

    @property
    def runtime(self) -> str:
        """The Lambda runtime name matching this node (``nodejs20.x``)."""
        return f"nodejs{self.major}.x"


async def _output(argv: list[str], within: float = 20.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), within)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode(errors="replace").strip()


async def find_node(ctx: Ctx) -> Node | str:
    """The machine's ``node`` (path, version), or why there is none usable; asked once per run."""
    key = "node"
    if key not in ctx.cache:
        ctx.cache[key] = await _find_node()
    found: Node | str = ctx.cache[key]
    return found


async def _find_node() -> Node | str:
    path = shutil.which("node")
    if path is None:
        return "node is not installed (apt-get install -y nodejs npm)"
    try:
        rc, out = await _output([path, "--version"])
    except (OSError, TimeoutError) as exc:
        return f"{path} --version failed: {type(exc).__name__}: {exc}"
    m = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", out)
    if rc != 0 or m is None:
        return f"{path} --version: unexpected output {out[:100]!r}"
    return Node(path, out[1:], int(m[1]))


def _installed_version(package: str) -> str | None:
    with contextlib.suppress(OSError, ValueError, KeyError):
        version: str = json.loads((NODE_MODULES / package / "package.json").read_text())["version"]
        return version
    return None


STAMP = PEERS_DIR / "installed.json"  # written after an install that completed (not after an interrupted one)
PINS = {"serverless": SERVERLESS_VERSION, "serverless-offline": OFFLINE_VERSION}


def _installed() -> bool:
    with contextlib.suppress(OSError, ValueError):
        if json.loads(STAMP.read_text()) != PINS:
            return False
    return STAMP.exists() and all(_installed_version(k) == v for k, v in PINS.items())


async def serverless_offline(ctx: Ctx) -> str | None:
    """Make sure the pinned serverless + serverless-offline are in bench/.peers/ (npm install on first
    use). Returns None when they are ready, else why not (the caller skips the peer's rows and says so)."""
    key = "serverless-offline"
    if key not in ctx.cache:
        ctx.cache[key] = await _ensure_installed(ctx)
        if ctx.cache[key]:
            ctx.notes.append(f"serverless-offline rows skipped: {ctx.cache[key]}")
    why: str | None = ctx.cache[key]
    return why


async def _ensure_installed(ctx: Ctx) -> str | None:
    node = await find_node(ctx)
    if isinstance(node, str):
        return node
    if tuple(int(x) for x in node.version.split(".")[:2]) < NODE_MIN:
        need = ".".join(map(str, NODE_MIN))
        return f"serverless-offline {OFFLINE_VERSION} needs node >= {need}, got {node.version}"
    if _installed():
        return None
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed (apt-get install -y npm), so serverless-offline cannot be installed"
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    STAMP.unlink(missing_ok=True)
    (PEERS_DIR / "package.json").write_text(json.dumps({
        "name": "router-bench-peers", "private": True,
        "description": "peers of the router benchmarks, installed by bench/peers.py (git-ignored)",
        "dependencies": PINS,
    }, indent=2) + "\n")
    log = PEERS_DIR / "npm-install.log"
    ctx.say(f"installing serverless@{SERVERLESS_VERSION} + serverless-offline@{OFFLINE_VERSION} into "
            f"{PEERS_DIR} (npm, once; log in {log.name})")
    # --ignore-scripts: serverless' postinstall only prints a banner; no install script is needed.
    argv = [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--no-update-notifier",
            "--loglevel=error"]
    t0 = time.monotonic()
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=str(PEERS_DIR), stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
            env=dict(os.environ, **QUIET_ENV), start_new_session=True)
        try:
            rc = await asyncio.wait_for(proc.wait(), INSTALL_TIMEOUT)
        except (TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
    tail = " ".join(log.read_text(errors="replace").split()[-40:])
    if rc == 0 and all(_installed_version(k) == v for k, v in PINS.items()):
        STAMP.write_text(json.dumps(PINS) + "\n")
    if not _installed():
        return (f"npm install in {PEERS_DIR} failed (exit {rc}): {tail[:400]}; "
                f"retry by hand: cd {PEERS_DIR} && npm install")
    ctx.say(f"installed in {time.monotonic() - t0:.0f}s")
    return None


@dataclass(frozen=True)
class PeerFunction:
    """One function of the generated serverless.yml: ``code`` is copied to a folder named ``key``."""

    key: str  # a python identifier: serverless-offline imports python handlers as ``key.app``
    code: Path
    runtime: str  # python3.11 | nodejs20.x
    path: str  # the httpApi GET path
    handler: str = "app.handler"


def serverless_yml(functions: list[PeerFunction]) -> dict[str, object]:
    return {
        "service": "routerbench",
        "frameworkVersion": "3",
        "provider": {"name": "aws", "runtime": "python3.11", "region": "us-east-1", "stage": "dev",
                     "timeout": 10, "memorySize": 256},
        "plugins": ["serverless-offline"],
        "functions": {
            f.key: {"handler": f"{f.key}/{f.handler}", "runtime": f.runtime,
                    "events": [{"httpApi": {"method": "GET", "path": f.path}}]}
            for f in functions
        },
    }


@contextlib.asynccontextmanager
async def running_offline(ctx: Ctx, name: str, functions: list[PeerFunction], *, in_process: bool = True
                          ) -> AsyncIterator[tuple[ServerProcess, str]]:
    """``serverless offline start`` serving ``functions`` on a free loopback port; yields the process and
    its base URL once every function answered once; always stopped (SIGTERM, then SIGKILL of its group).
    Call ``serverless_offline(ctx)`` first: this assumes the peers are installed."""
    node = await find_node(ctx)
    assert isinstance(node, Node)
    svc = ctx.tmp / name
    svc.mkdir(parents=True, exist_ok=True)
    for f in functions:
        shutil.copytree(f.code, svc / f.key, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (svc / "node_modules").symlink_to(NODE_MODULES, target_is_directory=True)
    # serverless-offline runs python handlers with `python3` from PATH: make it the router's interpreter.
    # (a script, not a symlink: a venv's python found through a symlink elsewhere loses the venv.)
    shim = svc / ".bin"
    shim.mkdir(exist_ok=True)
    (shim / "python3").write_text(f"#!/bin/sh\nexec {shlex.quote(PYTHON)} \"$@\"\n")
    (shim / "python3").chmod(0o755)
    (svc / "serverless.yml").write_text(yaml.safe_dump(serverless_yml(functions), sort_keys=False))
    home = svc / ".home"  # serverless keeps ~/.serverlessrc: one of its own, not the user's
    home.mkdir(exist_ok=True)
    port, lambda_port = free_port(), free_port()
    argv = [node.path, str(SLS_BIN), "offline", "start", "--host", HOST, "--httpPort", str(port),
            "--lambdaPort", str(lambda_port), "--noPrependStageInUrl", "--noAuth", "--noSponsor"]
    if in_process:
        argv.append("--useInProcess")
    env = dict(QUIET_ENV, HOME=str(home), PATH=f"{shim}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = ServerProcess(f"serverless-offline ({name})", argv, log_path=svc / "serverless-offline.log",
                         env=env, cwd=svc, stop_timeout=10.0, orphan_grace=5.0)
    base = f"http://{HOST}:{port}"
    try:
        async with proc:
            deadline = time.monotonic() + START_TIMEOUT
            for f in functions:
                await proc.wait_http(base + f.path, within=max(deadline - time.monotonic(), 1.0))
            yield proc, base
    finally:
        ctx.leaked.extend(proc.leaked)


def handler_processes(pid: int) -> list[int]:
    """serverless-offline's python handler processes (``python3 invoke.py``, each under an ``sh -c``)."""
    out = []
    for p in descendants(pid):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{p}/comm").read_text().startswith("python"):
                out.append(p)
    return out


def threads(pid: int) -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/task"))
    return 0


async def start_offline(ctx: Ctx, stack: contextlib.AsyncExitStack, name: str, functions: list[PeerFunction],
                        *, in_process: bool = True) -> tuple[int, str] | None:
    """``running_offline`` entered on ``stack``: (pid, base URL), or None (noted) when it does not start,
    so the router's rows are still measured."""
    try:
        proc, base = await stack.enter_async_context(
            running_offline(ctx, name, functions, in_process=in_process))
    except BenchError as exc:
        ctx.notes.append(f"serverless-offline ({name}) did not start, its rows are skipped: {exc}")
        return None
    return proc.pid, base
