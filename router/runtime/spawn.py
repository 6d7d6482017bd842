"""How an environment's worker process is started: the spawner seam and its exec implementation.

An ``Environment`` asks a ``Spawner`` for a worker process given a ``SpawnRequest`` (the function's
``LaunchSpec``, the full environment variables, the write end of the output pipe, the cgroup); it gets a
``Worker`` (pid, ``close``) and hears of the process's end through ``on_exit(returncode)``, called once.

- ``ExecSpawner`` (``EXEC``): ``loop.subprocess_exec`` of the spec's command line in a new session, as
  every worker was started before templates; used when fork start is off or unavailable and for
  ``run_as`` functions.
- ``router.runtime.template.TemplateSpawner``: forks the worker from a pre-initialised template process
  (Python), or has the template's fork exec the command line (Node.js, ``provided``); its workers are
  ``ForkedWorker``: the router's own children (the template clones them with ``CLONE_PARENT``) watched
  through a pidfd, so the router reaps them and sees their exit status without asyncio's child watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

from router.invocation import Result
from router.runtime import results
from router.runtime.launch import RLIMIT_AS_VAR, RUNTIME_FD_VAR, LaunchSpec, with_parent_death_signal
from router.runtime.memory import CgroupV2, rlimit_preexec

ExitCallback = Callable[[int | None], None]
"""Called once when the worker has ended (and been reaped), with its return code (-N: signal N)."""


class SpawnFailed(Exception):
    """Raised when a worker could not be started: ``result(request_id)`` is the error of the invocation
    waiting on the cold start, ``logs`` what the start wrote (e.g. a snap_start init's output)."""

    def __init__(self, message: str, result: Callable[[str], Result], logs: str = "", *,
                 init_reported: bool = False) -> None:
        super().__init__(message)
        self.result = result
        self.logs = logs
        self.init_reported = init_reported  # the init's INIT_REPORT is logged (a snap_start template's)


@dataclass(frozen=True, slots=True)
class SpawnRequest:
    spec: LaunchSpec
    env: dict[str, str]  # the worker's whole environment (LaunchSpec.environment)
    output_fd: int  # write end of the output pipe: the worker's fds 1 and 2 (the caller closes it)
    cgroup_dir: Path | None  # the worker's own cgroup, else RLIMIT_AS limits its memory
    watched: bool = False  # the router's watchdog ends its tree when the router dies: no parent-death signal
    runtime_fd: int = -1  # the worker's end of its Runtime API socket (``LaunchSpec.runtime_fd``; the caller
    # closes it): inherited at the same number, named in ``RUNTIME_FD_VAR``


class Worker(Protocol):
    """A started worker process."""

    @property
    def pid(self) -> int: ...

    @property
    def restored(self) -> bool:
        """Forked from a template that ran the function's init (snap_start): a restore, not an init."""
        ...

    def close(self) -> None:
        """Release what watches the process (call once it has ended or been killed)."""
        ...


class Spawner(Protocol):
    @property
    def restores(self) -> bool:
        """Its workers are restored from a snapshot of the function's init (snap_start), when it can."""
        ...

    async def spawn(self, request: SpawnRequest, on_exit: ExitCallback) -> Worker:
        """Start the worker; raises ``SpawnFailed``."""
        ...


# --- exec ---------------------------------------------------------------------------------------------


class ExitProtocol(asyncio.SubprocessProtocol):
    """Hands the process's end to ``on_exit`` (the output pipe is the router's own, not the transport's)."""

    def __init__(self, on_exit: ExitCallback) -> None:
        self._on_exit = on_exit
        self.transport: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.SubprocessTransport without subclassing it.
        self.transport = cast(asyncio.SubprocessTransport, transport)

    def process_exited(self) -> None:
        self._on_exit(self.transport.get_returncode() if self.transport is not None else None)


class _ExecWorker:
    restored = False

    def __init__(self, transport: asyncio.SubprocessTransport) -> None:
        self._transport = transport
        self.pid: int = transport.get_pid()

    def close(self) -> None:
        self._transport.close()


LOW_DESCRIPTORS = 16
"""node marks the descriptors it inherits below this number close-on-exec when it starts (libuv's
``uv_disable_stdio_inheritance``), so the processes a Node function starts do not inherit them."""


class ExecSpawner:
    """A new process running the spec's command line (``loop.subprocess_exec``) in its own session.

    A worker handed its Runtime API socket gets it at the router's number for it, or, when the worker is
    started with a ``preexec_fn`` anyway (Node, ``run_as``, a cgroup), at a low number the spawner holds
    for that (``low_fd``), where node marks it close-on-exec (``LOW_DESCRIPTORS``)."""

    restores = False

    def __init__(self) -> None:
        # Reserved while the process has few descriptors open (this module is imported at start), and
        # never closed: no pipe subprocess makes for a spawn can get its number (see ``_renumber``).
        fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        if fd >= LOW_DESCRIPTORS:
            os.close(fd)
            fd = -1
        self.low_fd = fd

    async def spawn(self, request: SpawnRequest, on_exit: ExitCallback) -> Worker:
        spec, env = request.spec, request.env
        # The router's own Python bootstrap sets the memory limit and the parent-death signal itself, so
        # it is spawned without a preexec_fn (vfork instead of fork: ~0.5 ms of loop, not ~8 ms); Node
        # cannot (``prctl_in_child``), so its prctls are set here.
        # In the child, in this order: join the cgroup (while still root), drop to ``run_as``, then
        # the limit and the prctls (a change of user clears the parent-death signal).
        steps: list[Callable[[], None]] = []
        if request.cgroup_dir is not None:
            steps.append(CgroupV2.preexec(request.cgroup_dir))
            env = {k: v for k, v in env.items() if k != RLIMIT_AS_VAR}  # the cgroup limits memory instead
        if spec.user is not None:
            steps.append(functools.partial(_become, *spec.user))
        if not spec.self_limits and request.cgroup_dir is None:
            steps.append(rlimit_preexec(spec.memory_limit, data=spec.limit_data))
        preexec: Callable[[], None] | None = None
        pass_fds: tuple[int, ...] = ()
        runtime_fd = request.runtime_fd
        if steps or not spec.self_limits or spec.prctl_in_child:
            if runtime_fd >= 0 and self.low_fd >= 0:  # a preexec_fn runs anyway: renumbered there
                steps.append(functools.partial(_renumber, runtime_fd, self.low_fd))
                runtime_fd = self.low_fd
            preexec = with_parent_death_signal(functools.partial(_run_all, steps), watched=request.watched)
        if runtime_fd >= 0:
            pass_fds = (runtime_fd,)
            env = {**env, RUNTIME_FD_VAR: str(runtime_fd)}
        protocol = ExitProtocol(on_exit)
        try:
            transport, _ = await asyncio.get_running_loop().subprocess_exec(
                lambda: protocol, *spec.argv, stdin=asyncio.subprocess.DEVNULL, stdout=request.output_fd,
                stderr=request.output_fd, cwd=spec.cwd, env=env, start_new_session=True, preexec_fn=preexec,
                pass_fds=pass_fds,
            )
        except OSError as exc:
            raise SpawnFailed(str(exc), functools.partial(results.spawn_error, argv0=spec.argv[0], exc=exc)) \
                from None
        return _ExecWorker(transport)


EXEC = ExecSpawner()


def _run_all(steps: list[Callable[[], None]]) -> None:
    for step in steps:
        step()


def _renumber(fd: int, low: int) -> None:
    """In the child, before subprocess closes what it was not asked to pass: ``fd`` (the Runtime API
    socket, closed then) becomes ``low`` (passed), in place of the child's copy of the spawner's
    reserved descriptor. (subprocess's own error pipe cannot have that number: the parent holds it.)"""
    os.dup2(fd, low)  # inheritable, as a descriptor dup2 makes always is


def _become(uid: int, gid: int) -> None:
    """In a child about to exec: run as ``uid``/``gid`` with no supplementary groups (``run_as``)."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


# --- forked workers -----------------------------------------------------------------------------------


class ForkedWorker:
    """A worker forked from a template, which is nevertheless the router's child (``CLONE_PARENT``).

    A pidfd (``os.pidfd_open``) on the event loop says when it has ended; ``waitid(P_PIDFD)`` then
    reaps it and gives its exit status. Nothing else in the router waits for it (asyncio's child
    watchers and uvloop wait only for the pids they started), and until it is reaped its pid cannot be
    reused, so signalling it by pid stays safe.
    """

    def __init__(self, pid: int, *, restored: bool = False) -> None:
        self.pid = pid
        self.restored = restored
        self.returncode: int | None = None
        self.exited = False
        self._on_exit: ExitCallback | None = None
        self._loop = asyncio.get_running_loop()
        self._fd = os.pidfd_open(pid)
        self._loop.add_reader(self._fd, self._reap)

    def watch(self, on_exit: ExitCallback) -> None:
        """Call ``on_exit`` when the process ends (soon, if it has ended already)."""
        if self.exited:
            self._loop.call_soon(on_exit, self.returncode)
        else:
            self._on_exit = on_exit

    def _reap(self) -> None:
        try:
            info = os.waitid(os.P_PIDFD, self._fd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:  # already reaped: nobody else should, but never spin on it
            info = None
        else:
            if info is None:
                return  # woken before the exit was complete
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1
        self.exited = True
        if info is not None:
            self.returncode = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        on_exit, self._on_exit = self._on_exit, None
        if on_exit is not None:
            on_exit(self.returncode)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if not self.exited:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._fd, sig)

    def detach(self) -> None:
        """Nobody waits for this worker any more: it is still reaped when it ends."""
        self._on_exit = None

    def close(self) -> None:
        self.detach()
