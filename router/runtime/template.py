"""Fork-started Python environments: pre-initialised template processes and the spawner that forks them.

A cold start by exec pays for a new interpreter and the bootstrap's imports (~30 ms on the development
machine) before the function's own init. A template is a Python process that has paid that once
(``bootstrap/python_template.py``); each new environment is forked from it on request (a few ms), and is then
exactly what an exec'd one is: its own environment variables (only the function's and Lambda's), cwd,
scratch dir, session and process group, memory limit (RLIMIT_AS or its own cgroup), output pipe,
``sys.path`` and random state; the router's child, reaped by it, dying with it.

- One basic template per Python interpreter and start-up environment (the variables read only when an
  interpreter starts: ``PYTHON*``, ``LD_*``, ``MALLOC_*``, locale, ``TZ``), shared by every function that
  matches; the function's init runs in each forked environment.
- With ``snap_start: true``, one template per function that has also run the function's init (import
  of the handler module, its module-level code) and the ``snapshot_restore_py`` before-snapshot hooks;
  each forked environment runs the after-restore hooks with its own variables set, and its REPORT says
  ``Restore Duration`` instead of ``Init Duration`` (the init's own ``INIT_REPORT`` is logged once).

Node.js and ``provided`` workers are started through the router's own basic template too (exec mode):
its child sets the process up as the router's spawn would (session, subreaper, parent-death signal,
cgroup or memory limit, fds, cwd) and execs the command line with the worker's environment. They need
that set-up between fork and exec, which rules out vfork; forking the small template instead of the
router saves ~10 ms of CPU a cold start on each side of the fork.

Templates are started lazily on first use, owned by the router-wide ``TemplateManager`` and stopped by
its ``close``. A template that dies is rebuilt on next use; environments forked from it keep running
(they are not its children). A fork request the template never served (it died first) is sent to a
rebuilt template; a template that cannot be started at all (bad interpreter, no ``clone``) makes the
spawner fall back to exec, with a warning, and is tried again ``UNAVAILABLE_RETRY`` seconds later. A
snap_start template whose init fails reports that init error to the invocations waiting on it, as an
exec'd environment's init error would be.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import functools
import json
import logging
import os
import platform
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from router.config.models import FunctionConfig
from router.invocation import ErrorType, Result
from router.logs import FunctionLog
from router.runtime import results
from router.runtime.api import InitError
from router.runtime.environment import init_timeout
from router.runtime.launch import (
    BOOTSTRAP_DIR,
    PARENT_PID_VAR,
    PYTHON_BOOTSTRAP,
    RLIMIT_AS_VAR,
    WATCHED_VAR,
    LaunchSpec,
    log_stream_name,
)
from router.runtime.memory import address_space_limit
from router.runtime.output import MAX_LINE, OutputPipe
from router.runtime.spawn import (
    EXEC,
    ExitCallback,
    ExitProtocol,
    ForkedWorker,
    Spawner,
    SpawnFailed,
    SpawnRequest,
    Worker,
)

log = logging.getLogger("router.runtime")
function_log = FunctionLog("router.function")

PYTHON_TEMPLATE = BOOTSTRAP_DIR / "python_template.py"
TEMPLATE_START_TIMEOUT = 10.0
"""Time a basic template has to import the bootstrap and say it is ready."""
UNAVAILABLE_RETRY = 60.0
"""After a template could not be started, environments are exec'd for this long before it is tried again."""
FORK_ATTEMPTS = 2
"""Templates asked for one environment when each dies before forking it; then exec."""
_TAIL = 50  # a template's last output lines kept for error messages
_STARTUP_VAR = re.compile(r"^(PYTHON|LD_|MALLOC_|GLIBC_TUNABLES$|LC_|LANG$|LANGUAGE$|TZ$)")
"""Variables read only when a process or interpreter starts: a forked process keeps the template's."""
_FORK_MACHINES = {"x86_64", "aarch64"}  # python_template.py knows their clone(2) numbers


def fork_supported() -> bool:
    """Whether this platform can fork environments from templates (Linux, pidfds, a known clone(2))."""
    return (sys.platform == "linux" and hasattr(os, "pidfd_open") and hasattr(os, "P_PIDFD")
            and platform.machine() in _FORK_MACHINES)


class _TemplateUnavailable(Exception):
    """Raised when a template process cannot be started or dies before it is ready (not an init error)."""


class _TemplateDied(Exception):
    """Raised when a template died before it forked a requested environment (nothing of it ran)."""


class _CloneFailed(_TemplateUnavailable):
    """Raised when a template could not clone (e.g. a seccomp filter refuses CLONE_PARENT)."""


@dataclass(frozen=True, slots=True)
class _Blueprint:
    """How to start one template process."""

    interpreter: str
    env: dict[str, str]  # the template's own environment (the router adds only its pid, then removes it)
    cwd: str
    # snap_start: the function whose init runs in the template (its memory limit, RLIMIT_AS, soft; its
    # log format and runtime version for INIT_START and INIT_REPORT)
    spec: LaunchSpec | None = None
    start_timeout: float = TEMPLATE_START_TIMEOUT

    @property
    def snap(self) -> bool:
        return self.spec is not None

    @property
    def function(self) -> str | None:
        return None if self.spec is None else self.spec.function

    def describe(self) -> str:
        if self.function is not None:
            return f"function '{self.function}': snap_start template"
        return f"fork template of {self.interpreter}"


class _State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DEAD = "dead"


@dataclass(eq=False)
class _Template:
    """One template process."""

    blueprint: _Blueprint
    state: _State = _State.STARTING
    pid: int | None = None
    forks_pending: int = 0  # fork requests sent and not yet answered
    ready: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    _exit: asyncio.Future[int | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    _transport: asyncio.SubprocessTransport | None = None
    _control: socket.socket | None = None
    _output: OutputPipe | None = None
    _scratch: str | None = None
    _tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=_TAIL))
    _init_lines: list[str] | None = None  # snap_start: the init's output, for an init error's logs
    _closing: bool = False
    _pidfd: int = -1

    # --- start ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the process and wait until it is ready; the outcome goes to ``ready``. Never raises but
        for cancellation."""
        try:
            await self._start()
        except SpawnFailed as exc:
            self._fail(exc)
        except _TemplateUnavailable as exc:
            self._fail(exc)
        except BaseException as exc:
            self._fail(_TemplateUnavailable(f"{self.blueprint.describe()}: start interrupted"))
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.exception("%s: start failed", self.blueprint.describe())

    def _fail(self, exc: Exception) -> None:
        self.kill()
        self.state = _State.DEAD
        if not self.ready.done():
            self.ready.set_exception(exc)
            self.ready.exception()  # retrieved: waiters may all have gone

    async def _start(self) -> None:
        bp = self.blueprint
        loop = asyncio.get_running_loop()
        env = dict(bp.env)
        env[PARENT_PID_VAR] = str(os.getpid())
        spec = bp.spec
        if spec is not None:  # snap_start
            self._scratch = await asyncio.to_thread(tempfile.mkdtemp, prefix=f"router-{spec.function}-snap-")
            env.update(TMPDIR=self._scratch, HOME=self._scratch)
            env[RLIMIT_AS_VAR] = str(address_space_limit(spec.memory))
            self._init_lines = []
            # the snapshot's init, as Lambda logs a SnapStart version's at publish: INIT_START ... INIT_REPORT
            line = spec.log.init_start(
                spec.runtime_version, spec.runtime_arn, spec.function, spec.version,
                log_stream_name(spec.version), spec.memory, initialization_type="snap-start")
            if line is not None:
                function_log.line(line, spec.function, None)
                self._init_lines.append(line)
        router_end, template_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._control = router_end
        router_end.setblocking(False)
        self._output, output_w = OutputPipe.open(self._line)
        started = time.monotonic()  # for Init Duration (uvloop's clock ticks in whole milliseconds)
        try:
            transport, _ = await loop.subprocess_exec(
                lambda: ExitProtocol(self._exited), bp.interpreter, str(PYTHON_TEMPLATE),
                str(template_end.fileno()), "snap" if bp.snap else "base",
                stdin=asyncio.subprocess.DEVNULL, stdout=output_w, stderr=output_w, cwd=bp.cwd, env=env,
                start_new_session=True, pass_fds=(template_end.fileno(),),
            )
        except OSError as exc:
            self._exit.set_result(None)
            raise _TemplateUnavailable(
                f"{bp.describe()}: cannot start {bp.interpreter}: {exc.strerror or exc}") from None
        finally:
            os.close(output_w)
            template_end.close()
        self._transport = transport
        self.pid = transport.get_pid()
        with contextlib.suppress(ProcessLookupError):  # already ended: nothing to kill
            self._pidfd = os.pidfd_open(self.pid)
        if self._closing:
            self.kill()
            raise _TemplateUnavailable(f"{bp.describe()}: the router is shutting down")
        booted = False
        try:
            async with asyncio.timeout(bp.start_timeout):
                while True:
                    message = await loop.sock_recv(router_end, 1 << 20)
                    if message == b"booted":
                        booted = True
                    elif message == b"ready":
                        break
                    elif message.startswith(b"init-error\n"):
                        await self._init_failed(message, started)
                    else:  # end of file: the process died
                        await asyncio.wait([self._exit], timeout=5.0)
                        self._drain()
                        text = results.exit_text(self._returncode())
                        if booted:
                            self._init_report(time.monotonic() - started, "error", "Runtime.ExitError")
                            raise SpawnFailed(
                                f"{bp.describe()}: init ended: {text}",
                                lambda rid: results.exit_error(rid, self._returncode()), self._logs(),
                                init_reported=bp.snap)
                        raise _TemplateUnavailable(
                            f"{bp.describe()}: exited before it was ready ({text})" + self._last_lines())
        except TimeoutError:
            self.kill()
            if booted:
                limit = bp.start_timeout
                self._init_report(limit, "timeout")
                raise SpawnFailed(
                    f"{bp.describe()}: init timed out",
                    lambda rid: results.timeout_error(rid, limit, phase="Init phase"), self._logs(),
                    init_reported=bp.snap) from None
            raise _TemplateUnavailable(
                f"{bp.describe()}: not ready within {bp.start_timeout:g} s" + self._last_lines()) from None
        self._drain()
        if bp.snap:
            self._init_report(time.monotonic() - started)
        self._init_lines = None
        self.state = _State.READY
        self.ready.set_result(None)
        log.info("%s ready, pid %d", bp.describe(), self.pid,
                 extra={"function": bp.function} if bp.function else None)

    async def _init_failed(self, message: bytes, started: float) -> None:
        """The snap_start init failed (the template exits): an init error, as an exec'd init's."""
        _, error_type, body = message.split(b"\n", 2)
        await asyncio.wait([self._exit], timeout=5.0)
        self._drain()
        init = InitError(error_type.decode("utf-8", "replace"), body)
        self._init_report(time.monotonic() - started, "error", init.error_type or None)
        raise SpawnFailed(f"{self.blueprint.describe()}: init failed: {init.error_type}",
                          lambda _rid: results.init_error(init), self._logs(), init_reported=True)

    def _init_report(self, seconds: float, status: str | None = None, error_type: str | None = None) -> None:
        """Lambda's INIT_REPORT of a snapshot's init (its REPORT lines then say Restore Duration), in the
        function's log format; ``status``: error or timeout, of an init that failed."""
        spec = self.blueprint.spec
        if spec is not None:
            line = spec.log.init_report(seconds, status=status, error_type=error_type,
                                        initialization_type="snap-start")
            if line is not None:
                function_log.line(line, spec.function, None)

    # --- output and exit ------------------------------------------------------------------------------

    def _line(self, raw: bytes) -> None:
        text = raw[:MAX_LINE].decode("utf-8", "replace").removesuffix("\r")
        self._tail.append(text)
        function = self.blueprint.function
        if function is not None:  # the function's init output, as an exec'd environment's
            if self._init_lines is not None and len(self._init_lines) < 500:
                self._init_lines.append(text)
            function_log.line(text, function, None)
        else:
            log.warning("%s: %s", self.blueprint.describe(), text)

    def _drain(self) -> None:
        if self._output is not None:
            self._output.drain()

    def _logs(self) -> str:
        return "\n".join(self._init_lines or ())

    def _last_lines(self) -> str:
        tail = [line for line in self._tail if line.strip()][-3:]
        return ": " + " | ".join(tail) if tail else ""

    def _returncode(self) -> int | None:
        return self._exit.result() if self._exit.done() else None

    def _exited(self, returncode: int | None) -> None:
        self._drain()
        if not self._exit.done():
            self._exit.set_result(returncode)
        self._lost(results.exit_text(returncode))

    def _lost(self, how: str) -> None:
        """The template is gone (its process ended, or its sockets did): the next start rebuilds it."""
        if self.state is _State.DEAD:
            return
        was_ready = self.state is _State.READY
        self.state = _State.DEAD
        self.kill()
        if was_ready and not self._closing:
            log.warning("%s (pid %s) ended (%s); environments it forked keep running, the next cold "
                        "start rebuilds it", self.blueprint.describe(), self.pid, how,
                        extra={"function": self.blueprint.function} if self.blueprint.function else None)

    # --- fork -----------------------------------------------------------------------------------------

    async def fork(self, payload: bytes, output_fd: int, owner: TemplateManager, *,
                   restored: bool, argv0: str | None = None, runtime_fd: int = -1) -> ForkedWorker:
        """Ask the template for one environment; returns it once it is set up (own session, limits...).

        Raises ``_TemplateDied`` when the template died before forking it, ``SpawnFailed`` when the
        clone or the set-up failed. When the caller is cancelled, an environment forked anyway is killed
        (the wait for it goes on in a task the manager owns). ``argv0``: an exec request (the payload
        has ``exec``), whose command is named so in a failed exec's error; ``runtime_fd``: the worker's
        end of its Runtime API socket (``SpawnRequest.runtime_fd``), which the forked environment's
        bootstrap (or the exec'd command) is handed."""
        status, status_w = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fds = [output_fd, status_w.fileno()] + ([runtime_fd] if runtime_fd >= 0 else [])
        try:
            await self._send(payload, fds)
        except BaseException:
            status.close()
            raise
        finally:
            status_w.close()
        self.forks_pending += 1
        task = owner._own(self._await_child(status, restored, argv0))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_kill_unclaimed)
            raise

    async def _send(self, payload: bytes, fds: list[int]) -> None:
        control = self._control
        if control is None or self.state is _State.DEAD:
            raise _TemplateDied(self.blueprint.describe())
        loop = asyncio.get_running_loop()
        while True:
            try:
                socket.send_fds(control, [payload], fds)
                return
            except BlockingIOError:  # the template is busy: wait until it reads
                writable: asyncio.Future[None] = loop.create_future()
                loop.add_writer(control, _set_pending, writable)
                try:
                    async with asyncio.timeout(self.blueprint.start_timeout):
                        await writable
                except TimeoutError:
                    self.kill()
                    raise _TemplateDied(self.blueprint.describe()) from None
                finally:
                    loop.remove_writer(control)
            except OSError as exc:  # the template's end is gone
                self._lost(f"its control socket failed: {exc.strerror or exc}")
                raise _TemplateDied(self.blueprint.describe()) from None

    async def _await_child(self, status: socket.socket, restored: bool, argv0: str | None) -> ForkedWorker:
        loop = asyncio.get_running_loop()
        where = self.blueprint.describe()
        try:
            status.setblocking(False)
            message = await loop.sock_recv(status, 4096)
            if not message:  # the template closed it unanswered: it died
                self._lost("it died with a fork request pending")
                raise _TemplateDied(where)
            if message.startswith(b"error clone:"):
                raise _CloneFailed(f"{where}: {message[6:].decode('utf-8', 'replace')}")
            if not message.startswith(b"pid "):
                raise _setup_failed(where, message)
            pid = int(message[4:])
            try:
                worker = ForkedWorker(pid, restored=restored)
            except OSError as exc:  # no pidfd (out of fds?): end it, reap it off the loop
                os.kill(pid, signal.SIGKILL)
                await asyncio.to_thread(os.waitpid, pid, 0)
                raise _setup_failed(where, f"error cannot watch the process: {exc}".encode()) from None
            message = await loop.sock_recv(status, 4096)
            if argv0 is not None and not message:
                return worker  # the status socket closed on exec: the command runs
            if argv0 is not None and message.startswith(b"error exec "):
                worker.kill()
                raise _exec_failed(argv0, message)
            if message != b"ok":
                worker.kill()
                raise _setup_failed(where, message or b"error the process ended during set-up")
            return worker
        finally:
            status.close()
            self.forks_pending -= 1

    # --- stop -----------------------------------------------------------------------------------------

    def kill(self) -> None:
        """SIGKILL the template process (not its group: forked environments are in groups of their own).

        Through a pidfd: ``Popen.send_signal`` would poll, and so reap the process under asyncio's
        child watcher, which then reports it unknown."""
        if self._pidfd >= 0 and not self._exit.done():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def stop(self) -> None:
        """Kill the template, and one whose start is still under way as soon as it exists."""
        self._closing = True
        self.kill()

    async def close(self) -> None:
        self.stop()
        if self._transport is not None:
            if not self._exit.done():
                await asyncio.wait([self._exit], timeout=5.0)
            self._transport.close()
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._output is not None:
            self._output.close()
            self._output = None
        if self._scratch is not None:
            await asyncio.to_thread(shutil.rmtree, self._scratch, True)
            self._scratch = None


def _setup_failed(where: str, message: bytes) -> SpawnFailed:
    text = message.decode("utf-8", "replace").removeprefix("error ")
    return SpawnFailed(
        f"{where}: {text}",
        lambda rid: Result.error(
            "Runtime.InvalidEntrypoint", f"RequestId: {rid} Error: fork from {where}: {text}",
            error_type=ErrorType.CONFIG))


def _exec_failed(argv0: str, message: bytes) -> SpawnFailed:
    """``error exec ERRNO STRERROR`` from an exec request: the same error as an exec from the router."""
    _, _, errno_text, strerror = [*message.decode("utf-8", "replace").split(" ", 3), "", ""][:4]
    exc = OSError(int(errno_text) if errno_text.isdigit() else 0, strerror or "exec failed")
    return SpawnFailed(f"exec {argv0}: {exc.strerror}",
                       functools.partial(results.spawn_error, argv0=argv0, exc=exc))


def _set_pending(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _kill_unclaimed(task: asyncio.Task[ForkedWorker]) -> None:
    """The start that asked for this environment was cancelled: kill it (its pidfd reader reaps it)."""
    if not task.cancelled() and task.exception() is None:
        task.result().kill()


@dataclass(frozen=True, slots=True)
class _Key:
    interpreter: str
    startup: tuple[tuple[str, str], ...]
    function: str | None  # snap_start templates are per function


class TemplateManager:
    """Every template process of the router: started on first use, rebuilt when dead, stopped by close.

    ``spawner(spec, config)`` is how an environment pool gets its ``Spawner``: a ``TemplateSpawner`` for
    a Python function that may be fork-started, else exec."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled and fork_supported()
        self._templates: dict[_Key, _Template] = {}
        self._unavailable_until: dict[_Key, float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawner(self, spec: LaunchSpec, config: FunctionConfig) -> Spawner:
        """The spawner of ``spec``'s environments: fork from a template when it can, else exec."""
        if not self.enabled or not config.fork_start or spec.user is not None:
            return EXEC  # (run_as: templates run as the router's user)
        if len(spec.argv) != 2 or not spec.self_limits or spec.argv[1] != str(PYTHON_BOOTSTRAP):
            # Node.js, provided: the router's own basic template forks and execs the command line, so
            # the start forks a small process, not the router (a fork of the router costs ~10 ms of CPU
            # on each side: these workers need their prctls set between fork and exec, so no vfork).
            own = sys.executable
            return TemplateSpawner(self, _Key(own, (), None), _Blueprint(own, {}, str(BOOTSTRAP_DIR)),
                                   exec_mode=True)
        interpreter = spec.argv[0]
        startup = tuple(sorted((k, v) for k, v in spec.env.items()
                               if _STARTUP_VAR.match(k) and k != "PYTHONPATH"))
        if config.snap_start:
            env = dict(spec.env)
            env["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start"
            blueprint = _Blueprint(interpreter, env, spec.cwd, spec=spec,
                                   start_timeout=init_timeout(config.timeout))
            snap = spec.function if spec.version == "$LATEST" else f"{spec.function}:{spec.version}"
            return TemplateSpawner(self, _Key(interpreter, startup, snap), blueprint)
        return TemplateSpawner(self, _Key(interpreter, startup, None),
                               _Blueprint(interpreter, dict(startup), str(BOOTSTRAP_DIR)))

    def template_pids(self) -> set[int]:
        """Pids of the template processes now running."""
        return {t.pid for t in self._templates.values() if t.pid is not None and t.state is not _State.DEAD}

    def forks_pending(self) -> int:
        return sum(t.forks_pending for t in self._templates.values())

    async def _ready(self, key: _Key, blueprint: _Blueprint) -> _Template:
        """The ready template of ``key``, started (or rebuilt) when needed; raises ``_TemplateUnavailable``
        or, for a snap_start template whose init failed, ``SpawnFailed``."""
        if self._closed:
            raise _TemplateUnavailable("the router is shutting down")
        template = self._templates.get(key)
        if template is None or template.state is _State.DEAD:
            if template is not None:
                self._own(template.close())
            template = _Template(blueprint)
            self._templates[key] = template
            self._own(template.start())
        await asyncio.shield(template.ready)
        return template

    def _own(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _unavailable(self, key: _Key) -> bool:
        """Whether ``key``'s template is known not to start (the spawner then execs)."""
        loop = asyncio.get_running_loop()
        until = self._unavailable_until.get(key)
        if until is not None and loop.time() < until:
            return True
        if until is not None:
            del self._unavailable_until[key]
        return False

    def _mark_unavailable(self, key: _Key, exc: Exception) -> None:
        if self._unavailable(key):
            return  # another start learnt it at the same time, and said so
        self._unavailable_until[key] = asyncio.get_running_loop().time() + UNAVAILABLE_RETRY
        log.warning("%s; starting environments with exec instead (the template is tried again in %g s)",
                    exc, UNAVAILABLE_RETRY, extra={"function": key.function} if key.function else None)

    async def close(self) -> None:
        """Stop every template; wait (bounded) for fork requests still in flight."""
        self._closed = True
        templates, self._templates = list(self._templates.values()), {}
        for template in templates:
            template.stop()
        tasks = list(self._tasks)  # template starts, fork requests in flight, closes of dead templates
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.gather(*(t.close() for t in templates))


class TemplateSpawner:
    """Forks a function's environments from its template (see the module doc); execs when it cannot."""

    def __init__(self, manager: TemplateManager, key: _Key, blueprint: _Blueprint, *,
                 exec_mode: bool = False) -> None:
        self._manager = manager
        self._key = key
        self._blueprint = blueprint
        self._exec_mode = exec_mode  # fork, set up, then exec the spec's command line (not Python's loop)

    @property
    def restores(self) -> bool:
        return self._blueprint.snap and not self._manager._unavailable(self._key)

    async def spawn(self, request: SpawnRequest, on_exit: ExitCallback) -> Worker:
        manager, key = self._manager, self._key
        if not manager._unavailable(key):
            payload = self._payload(request)
            for _ in range(FORK_ATTEMPTS):
                try:
                    template = await manager._ready(key, self._blueprint)
                except _TemplateUnavailable as exc:
                    manager._mark_unavailable(key, exc)
                    break
                try:
                    worker = await template.fork(payload, request.output_fd, manager,
                                                 restored=self._blueprint.snap,
                                                 argv0=request.spec.argv[0] if self._exec_mode else None,
                                                 runtime_fd=request.runtime_fd)
                except _CloneFailed as exc:
                    manager._mark_unavailable(key, exc)
                    break
                except _TemplateDied:
                    log.info("%s died before forking an environment; asking a new one",
                             self._blueprint.describe())
                    continue
                worker.watch(on_exit)
                return worker
            else:  # templates that keep dying before they fork: exec for a while
                manager._mark_unavailable(key, _TemplateUnavailable(
                    f"{self._blueprint.describe()}: died {FORK_ATTEMPTS} times before forking"))
        return await EXEC.spawn(request, on_exit)

    def _payload(self, request: SpawnRequest) -> bytes:
        spec = request.spec
        if self._exec_mode:  # what ExecSpawner gives the process, set up by the template's child
            env = dict(request.env)
            if request.cgroup_dir is not None:
                env.pop(RLIMIT_AS_VAR, None)  # the cgroup limits memory instead
            rlimit = not spec.self_limits and request.cgroup_dir is None
            return json.dumps({
                "exec": list(spec.argv),
                "env": env,
                "cwd": spec.cwd,
                "rlimit_as": spec.memory_limit if rlimit and not spec.limit_data else 0,
                "rlimit_data": spec.memory_limit if rlimit and spec.limit_data else 0,
                "cgroup": str(request.cgroup_dir) if request.cgroup_dir is not None else "",
                "watched": request.watched,
            }).encode()
        env = {k: v for k, v in request.env.items() if k not in (RLIMIT_AS_VAR, PARENT_PID_VAR, WATCHED_VAR)}
        if self._blueprint.snap:
            env["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start"
        return json.dumps({
            "env": env,
            "cwd": spec.cwd,
            "path": [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p],
            "rlimit_as": 0 if request.cgroup_dir is not None else spec.memory_limit,
            "cgroup": str(request.cgroup_dir) if request.cgroup_dir is not None else "",
            "restore": self._blueprint.snap,
            "watched": request.watched,
        }).encode()
