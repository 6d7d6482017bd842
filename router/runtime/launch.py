"""How a function's worker process is started: command line, working directory, environment variables."""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import resource
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from router import __version__
from router.config.models import AwsConfig, FunctionConfig
from router.config.node import find_node, runtime_major
from router.errors import EnvironmentStartError
from router.runtime import node_bundle
from router.runtime.deps import Manifest, ensure_installed, find_manifest
from router.runtime.layers import Layer, SearchPaths, search_paths
from router.runtime.memory import address_space_limit, data_limit
from router.runtime.nodejs import node_flags
from router.runtime.platform_log import TEXT, PlatformLog, application_level

BOOTSTRAP_DIR = Path(__file__).resolve().parent / "bootstrap"
PYTHON_BOOTSTRAP = BOOTSTRAP_DIR / "python_bootstrap.py"
NODE_BOOTSTRAP_DIR = BOOTSTRAP_DIR / "node"
NODE_BOOTSTRAP = NODE_BOOTSTRAP_DIR / "bootstrap.cjs"
"""The Node bootstrap's entry among its sources; environments run it joined into one file, compiled from
a code cache (``node_bundle.path``), the bootstrap's own tests run it as it is."""
# The router's own AWS credentials reach the function (as Lambda's execution role would); nothing else
# of the router's environment does.
RLIMIT_AS_VAR = "_ROUTER_RLIMIT_AS"
PARENT_PID_VAR = "_ROUTER_PARENT_PID"
"""Read (and removed from the environment) by the Python bootstrap before anything else runs."""
RUNTIME_FD_VAR = "_ROUTER_RUNTIME_FD"
"""Set by the spawner for a worker handed its Runtime API socket at start (``LaunchSpec.runtime_fd``):
the descriptor's number in the worker. Read (and removed from the environment) by the Python and Node
bootstraps."""
WATCHED_VAR = "_ROUTER_WATCHED"
"""Set for a worker the router's watchdog watches (``router.runtime.proctree``): no parent-death signal."""

LAMBDA_OPEN_FILES = 1024
"""Lambda's quota of file descriptors per execution environment (soft and hard)."""

log = logging.getLogger("router.runtime")

CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """Everything needed to start one environment of a function, but the per-environment values."""

    function: str
    argv: tuple[str, ...]
    cwd: str
    env: dict[str, str]
    memory: int  # MB
    concurrency: int = 1  # invocations an environment takes at once (AWS_LAMBDA_MAX_CONCURRENCY)
    # The router's own Python bootstrap applies the memory limit and the parent-death signal itself (see
    # SELF_LIMIT_VARS): then the worker is spawned without a preexec_fn, which lets Python use vfork
    # (~0.5 ms of event loop) instead of fork (~8 ms for a router of ~75 MB).
    self_limits: bool = False
    # The worker cannot set its own prctls (Node): the spawner makes it the subreaper of its descendants
    # and arms the parent-death signal in a preexec_fn (a fork of the router instead of a vfork).
    prctl_in_child: bool = False
    # The spawner limits the worker's memory with RLIMIT_DATA (private writable memory: what the function
    # allocates), not RLIMIT_AS (Node: V8 reserves far more address space than it uses), between fork
    # and exec, when no cgroup limits it.
    limit_data: bool = False
    # The worker is handed one end of a connected unix socket at start (``RUNTIME_FD_VAR``), which the
    # router serves as the environment's Runtime API connection (the router's own Python and Node
    # bootstraps with one invocation at a time): no connection to make at a cold start (nor, for Node, a
    # ``net`` module to load), and each round trip costs less than over loopback TCP.
    runtime_fd: bool = False
    user: tuple[int, int] | None = None  # (uid, gid) the worker runs as (``run_as``), else the router's
    log: PlatformLog = TEXT  # the function's log format and levels (``logging``): START/END/REPORT lines
    version: str = "$LATEST"  # the published version run (AWS_LAMBDA_FUNCTION_VERSION)
    # INIT_START's "Runtime Version" and "Runtime Version ARN" (``runtime_version``)
    runtime_version: str = ""
    runtime_arn: str = ""

    @property
    def memory_limit(self) -> int:
        """The worker's memory limit in bytes when no cgroup limits it: RLIMIT_DATA (``limit_data``) or
        RLIMIT_AS."""
        return data_limit(self.memory, self.env) if self.limit_data else address_space_limit(self.memory)

    def environment(self, *, runtime_api: str, scratch: str, init_type: str,
                    watched: bool = False) -> dict[str, str]:
        """The full environment of one worker process (``watched``: see ``WATCHED_VAR``)."""
        env = dict(self.env)
        if self.self_limits:
            env[RLIMIT_AS_VAR] = str(address_space_limit(self.memory))
        if self.self_limits or self.prctl_in_child:  # the bootstrap checks the router is still its parent
            env[PARENT_PID_VAR] = str(os.getpid())
            if watched and self.argv[-1] == str(PYTHON_BOOTSTRAP):
                env[WATCHED_VAR] = "1"
        env["AWS_LAMBDA_RUNTIME_API"] = runtime_api
        env["AWS_LAMBDA_INITIALIZATION_TYPE"] = init_type
        env["AWS_LAMBDA_LOG_STREAM_NAME"] = log_stream_name(self.version)
        env["TMPDIR"] = scratch
        env["HOME"] = scratch
        return env


def log_stream_name(version: str = "$LATEST") -> str:
    """``YYYY/MM/DD/[VERSION]<32 hex>`` as Lambda names an environment's log stream."""
    return time.strftime("%Y/%m/%d", time.gmtime()) + f"/[{version}]" + uuid.uuid4().hex


def runtime_version(runtime: str, release: str, region: str) -> tuple[str, str]:
    """INIT_START's ``Runtime Version`` and ``Runtime Version ARN`` of ``runtime`` run by an interpreter
    of ``release``. Lambda names its own builds (``python:3.11.v29``, an ARN
    ``arn:aws:lambda:REGION::runtime:`` and 64 hex digits); the router names what runs: the runtime
    family and the interpreter's release (``python:3.11.7``, ``nodejs:20.20.2``; ``provided``, whose
    bootstrap is the user's), and an ARN of that shape whose digest is of the name and the router's
    version, so that it changes when the runtime that runs does."""
    if runtime.startswith("python"):
        name = f"python:{release or runtime.removeprefix('python')}"
    elif runtime.startswith("nodejs"):
        name = f"nodejs:{release.removeprefix('v') or runtime.removeprefix('nodejs')}"
    else:
        name = runtime
    digest = hashlib.sha256(f"{name} router {__version__}".encode()).hexdigest()
    return name, f"arn:aws:lambda:{region}::runtime:{digest}"


def _python_interpreter(name: str, runtime: str, path: str) -> str:
    version = runtime.removeprefix("python")
    if version == f"{sys.version_info.major}.{sys.version_info.minor}":
        return sys.executable
    found = shutil.which(runtime, path=path)
    if found is None:
        own = f"python{sys.version_info.major}.{sys.version_info.minor}"
        raise EnvironmentStartError(
            f"function '{name}': runtime {runtime} needs a {runtime} interpreter, got none on PATH "
            f"(the router itself runs {own}); install {runtime} or set functions.{name}.runtime: {own}"
        )
    return found


def _node_command(name: str, runtime: str, path: str, config: FunctionConfig,
                  node_options: str) -> tuple[tuple[str, ...], str]:
    try:
        node, version = find_node(runtime, path)
    except ValueError as exc:
        raise EnvironmentStartError(f"function '{name}': {exc}") from None
    # node itself, exec'd by the spawner, which sets its limits and prctls (``limit_data``,
    # ``prctl_in_child``) between fork and exec: no shell in between (it cost ~1.3 ms of each cold
    # start). It runs the bootstrap's modules joined into one file (~1-1.5 ms less), compiled from a code
    # cache made for this node (~1.5 ms less): ``node_bundle``.
    bootstrap = node_bundle.path(NODE_BOOTSTRAP_DIR, node)
    return (node, *node_flags(version, config.memory, node_options), str(bootstrap)), version


def resolve_launch(name: str, config: FunctionConfig, code_dir: Path, aws: AwsConfig,
                   version: str = "$LATEST") -> LaunchSpec:
    """Check the function's code and runtime and build its ``LaunchSpec``.

    Blocking (stats files, searches PATH): call it through ``asyncio.to_thread``. Raises
    ``EnvironmentStartError`` with a message naming the function and the fix.
    """
    runtime = config.runtime
    if runtime is None:
        raise EnvironmentStartError(f"function '{name}': not a local function (no runtime)")
    root = code_dir.resolve()
    if not root.is_dir():
        raise EnvironmentStartError(
            f"function '{name}': code directory does not exist, got {str(root)!r}; "
            f"check functions.{name}.code"
        )
    path = os.environ.get("PATH") or DEFAULT_PATH
    env: dict[str, str] = {"MALLOC_ARENA_MAX": "2"}
    env.update({k: os.environ[k] for k in CREDENTIAL_VARS if os.environ.get(k)})
    env.update(config.environment)
    reserved = {
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": version,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_REGION": aws.region,
        "AWS_DEFAULT_REGION": aws.region,
        "LAMBDA_TASK_ROOT": str(root),
        "LAMBDA_RUNTIME_DIR": str(BOOTSTRAP_DIR),
        "TZ": ":UTC",
        "LANG": "en_US.UTF-8",
        "PATH": path,
        "PYTHONUNBUFFERED": "1",
    }
    if config.handler:
        reserved["_HANDLER"] = config.handler
    log_level = application_level(config.logging)
    if log_level is not None:  # JSON, as Lambda tells the runtimes (their loggers honour both)
        reserved["AWS_LAMBDA_LOG_FORMAT"] = "JSON"
        reserved["AWS_LAMBDA_LOG_LEVEL"] = log_level
    if config.per_environment_concurrency > 1:  # as Lambda Managed Instances tell the runtime
        reserved["AWS_LAMBDA_MAX_CONCURRENCY"] = str(config.per_environment_concurrency)
    layer_dirs = _layer_dirs(name, config)
    if runtime == "provided":
        bootstrap = root / "bootstrap"
        if not bootstrap.is_file():
            raise EnvironmentStartError(
                f"function '{name}': runtime provided needs an executable file 'bootstrap' in the code "
                f"directory, got none in {str(root)!r}; add one that runs your runtime interface client"
            )
        if not os.access(bootstrap, os.X_OK):
            raise EnvironmentStartError(
                f"function '{name}': {str(bootstrap)!r} is not executable; run chmod +x on it"
            )
        argv: tuple[str, ...] = (str(bootstrap),)
        release = ""
        paths = _search_paths(name, runtime, root, layer_dirs, None)
    elif runtime_major(runtime) is not None:
        argv, release = _node_command(name, runtime, path, config, env.get("NODE_OPTIONS", ""))
        reserved["AWS_EXECUTION_ENV"] = f"AWS_Lambda_{runtime}"
        reserved["LAMBDA_RUNTIME_DIR"] = str(NODE_BOOTSTRAP_DIR)
        del reserved["PYTHONUNBUFFERED"]
        npm = shutil.which("npm", path=path)
        paths = _search_paths(name, runtime, root, layer_dirs, npm, node_major=runtime_major(runtime))
        if not env.get("NODE_PATH"):  # as Lambda's bootstrap: the user's NODE_PATH wins
            reserved["NODE_PATH"] = os.pathsep.join(paths.node)
    else:
        interpreter = _python_interpreter(name, runtime, path)
        reserved["AWS_EXECUTION_ENV"] = f"AWS_Lambda_{runtime}"
        paths = _search_paths(name, runtime, root, layer_dirs, interpreter,
                              python_version=runtime.removeprefix("python"))
        # The function's own PYTHONPATH (its environment) is kept, after the code directory (whose
        # sub-folders it usually names) and before the layers and installed dependencies.
        own = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        reserved["PYTHONPATH"] = os.pathsep.join([*paths.python[:1], *own, *paths.python[1:]])
        argv = (interpreter, str(PYTHON_BOOTSTRAP))
        # the release of the router's own interpreter; of another python3.X on PATH, only its name's
        release = ".".join(map(str, sys.version_info[:3])) if interpreter == sys.executable else ""
    if paths.bin:  # Lambda: /opt/bin last on PATH
        reserved["PATH"] = os.pathsep.join([path, *paths.bin])
    if paths.lib and "LD_LIBRARY_PATH" not in env:  # Lambda: ...:$LAMBDA_TASK_ROOT/lib:/opt/lib
        reserved["LD_LIBRARY_PATH"] = os.pathsep.join([str(root), str(root / "lib"), *paths.lib])
    env.update(reserved)
    for key in ("AWS_LAMBDA_RUNTIME_API", "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_STREAM_NAME",
                "TMPDIR", "HOME"):
        env.pop(key, None)  # set per environment
    user = _run_as(name, config.run_as) if config.run_as else None
    runtime_name, runtime_arn = runtime_version(runtime, release, aws.region)
    return LaunchSpec(function=name, argv=argv, cwd=str(root), env=env, memory=config.memory,
                      concurrency=config.per_environment_concurrency,
                      self_limits=runtime != "provided" and runtime_major(runtime) is None,
                      user=user, prctl_in_child=runtime_major(runtime) is not None,
                      limit_data=runtime_major(runtime) is not None,
                      runtime_fd=runtime != "provided" and config.per_environment_concurrency == 1,
                      log=PlatformLog.of(config.logging), version=version,
                      runtime_version=runtime_name, runtime_arn=runtime_arn)


def _layer_dirs(name: str, config: FunctionConfig) -> list[Path]:
    """``functions.NAME.layers`` (made absolute by the config loader), each checked to be a directory."""
    dirs = [Path(layer) for layer in config.layers]
    for i, layer in enumerate(dirs):
        if not layer.is_dir():
            raise EnvironmentStartError(
                f"function '{name}': layer directory not found, got {str(layer)!r}; "
                f"check functions.{name}.layers[{i}]")
    return dirs


def _search_paths(name: str, runtime: str, root: Path, layer_dirs: list[Path], installer: str | None, *,
                  python_version: str | None = None, node_major: int | None = None) -> SearchPaths:
    """The function's search paths, installing the dependency files of its code and layers first
    (once: ``router.runtime.deps``). ``installer`` is the runtime's interpreter (pip) or npm."""
    where = f"function '{name}'"

    def installed(directory: Path) -> tuple[Path, ...]:
        if python_version is None and node_major is None:
            return ()  # provided: the bootstrap brings its own
        manifest = find_manifest(directory, python=python_version is not None)
        if manifest is None:
            return ()
        return (_install(manifest, runtime, installer, where),)

    layers = [Layer(d, installed(d)) for d in layer_dirs]
    return search_paths(python_version=python_version, node_major=node_major, code_dir=root,
                        code_installed=installed(root), layers=layers, exists=Path.is_dir)


def _install(manifest: Manifest, runtime: str, installer: str | None, where: str) -> Path:
    if installer is None:
        raise EnvironmentStartError(
            f"{where}: {manifest.file} lists dependencies to install but npm is not on PATH; install npm "
            "(or run npm install beside package.json yourself)")
    built = ensure_installed(manifest, runtime=runtime, command=installer, where=where)
    if not built.reused:
        log.info("%s: installed %s into the dependency cache %s in %.1f s", where, manifest.file,
                 built.path.parent, built.seconds, extra={"function": where.split("'")[1]})
    return built.path


def _run_as(name: str, run_as: str) -> tuple[int, int]:
    """``functions.NAME.run_as`` (``user[:group]``, names or ids) as (uid, gid); the group defaults to
    the user's. Raises ``EnvironmentStartError`` when unknown, or when the router cannot switch users."""
    import grp
    import pwd

    user, _, group = run_as.partition(":")
    where = f"function '{name}': run_as {run_as!r}"
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        uid, gid = entry.pw_uid, entry.pw_gid
    except KeyError:
        if not user.isdigit():
            raise EnvironmentStartError(f"{where}: no user {user!r} on this machine; create it or give a "
                                    "numeric uid") from None
        uid = gid = int(user)  # a uid without a passwd entry (as in a container): its own group
    if group:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            if not group.isdigit():
                raise EnvironmentStartError(f"{where}: no group {group!r} on this machine") from None
            gid = int(group)
    if os.geteuid() != 0 and (uid, gid) != (os.geteuid(), os.getegid()):
        raise EnvironmentStartError(
            f"{where}: switching users needs the router to run as root, got uid {os.geteuid()}; "
            "start the router as root (it drops to run_as for the function only) or remove run_as")
    return uid, gid


def _load_prctl() -> Callable[[int, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):  # not Linux
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def with_parent_death_signal(preexec: Callable[[], None], *, watched: bool = False) -> Callable[[], None]:
    """Wrap a ``preexec_fn`` so the worker is the subreaper of its descendants (an orphan, e.g. a
    double-forked daemon, is re-parented to it, so it stays in the tree that ends with the environment;
    the attribute survives exec) and is SIGKILLed when the router dies, even by SIGKILL, or, when
    ``watched``, SIGSTOPped: the router's watchdog then ends the whole tree (``router.runtime.proctree``).

    A worker runs in its own session (so a timeout can kill its whole process group), which also means
    no terminal or init hands it the router's death: without this, a worker busy in a long handler
    would outlive a crashed router until its handler returned.
    """

    def apply() -> None:
        preexec()  # first: a change of user (run_as) there would clear the parent-death signal
        if _PRCTL is not None:
            _PRCTL(_PR_SET_CHILD_SUBREAPER, 1)
            # Watched: stopped, not killed, when the router dies, so the worker cannot end on its lost
            # Runtime API connection, orphaning its children to init, before the watchdog ends its tree.
            _PRCTL(_PR_SET_PDEATHSIG, signal.SIGSTOP if watched else signal.SIGKILL)

    return apply


def limit_open_files(pid: int) -> None:
    """Give a new worker Lambda's 1,024 file descriptors: the router raised its own limit at start
    (to serve many connections), which every process it starts would otherwise inherit. Set from the
    router with ``prlimit`` right after the spawn, whichever way the worker started (exec'd, forked from
    a template, Python, Node, provided). A worker already gone, or one the router may not change, keeps
    what it has."""
    try:
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        resource.prlimit(pid, resource.RLIMIT_NOFILE,
                         (min(soft, LAMBDA_OPEN_FILES), min(hard, LAMBDA_OPEN_FILES)))
    except (OSError, ValueError):
        pass
