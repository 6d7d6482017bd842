"""One execution environment: a worker process speaking the Runtime API, its output and its invocations.

The process is started by a ``Spawner`` (``router.runtime.spawn``: exec, or a fork from a
pre-initialised template, ``router.runtime.template``) in its own process group; its stdout and stderr
are one pipe the router made (``router.runtime.output``) and reads line by line as the bytes arrive, so
output is attributed in the loop callback that reads it and no reader task per environment or invocation
is needed; the death of the process is seen at once (the spawner's exit callback).

The environment is the worker and everything it starts (``router.runtime.proctree``): a kill ends the
whole tree (or cgroup), the router's watchdog ends it if the router dies, Max Memory Used covers it,
and its Runtime API channel serves only its processes (``confined``, owner set once the pid is known).

Ordering of logs: a runtime flushes stdout/stderr before it posts the result, so when the result
arrives every byte of the invocation's output is already in the pipe; the environment drains it
(synchronously) before it writes END/REPORT, so REPORT comes last. For a result the handler returned or
raised, that closing work (drain, Max Memory Used, END, REPORT, ``Result.logs``) runs in the event loop's
turn after the invocation returns, so the caller's answer is written first (``Environment._finish``); it
runs at once when anything else would write or end the environment first, or a reader asks for the
result's ``logs``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import dataclasses
import enum
import json
import logging
import os
import random
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from router.invocation import Invocation, Outcome, Result
from router.logs import FunctionLog
from router.runtime import proctree, results
from router.runtime.api import NO_INIT_ERROR, PendingEvent, Reply, ReplyKind, RuntimeApiServer, RuntimeChannel
from router.runtime.launch import LaunchSpec, limit_open_files
from router.runtime.memory import CgroupV2, ProcStatus
from router.runtime.output import MAX_LINE, OutputPipe
from router.runtime.proctree import Watchdog
from router.runtime.spawn import EXEC, Spawner, SpawnFailed, SpawnRequest, Worker

log = logging.getLogger("router.runtime")
function_log = FunctionLog("router.function")

INIT_TIMEOUT = 10.0
"""Lambda's init phase limit; a function with a longer timeout may use that instead (see ``init_timeout``)."""
TERM_GRACE = 2.0
"""Time between SIGTERM and SIGKILL when an environment is shut down."""
MAX_TAIL_LINES = 500  # function lines kept per invocation for Result.logs (all are logged)


def init_timeout(function_timeout: float) -> float:
    """Init may take Lambda's 10 s, or the function's timeout when that is longer: Lambda re-runs an init
    that passed 10 s inside the invoke phase, under the function timeout, so an on-demand cold start whose
    init takes longer spends the invocation's own time (``Environment.init_in_invoke``)."""
    return max(INIT_TIMEOUT, function_timeout)


class EnvState(enum.StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    DEAD = "dead"


class Environment:
    """One worker process of one function; runs ``capacity`` invocations at once (1 unless the function
    sets ``per_environment_concurrency``)."""

    def __init__(
        self,
        spec: LaunchSpec,
        api: RuntimeApiServer,
        *,
        arn: str,
        provisioned: bool,
        on_exit: Callable[[Environment], None],
        on_slot: Callable[[Environment], None] = lambda env: None,
        cgroup: CgroupV2 | None = None,
        spawner: Spawner | None = None,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.spec = spec
        self.api = api
        self.arn = arn
        self.provisioned = provisioned
        self.state = EnvState.STARTING
        self.pid: int | None = None
        self.init_duration: float | None = None
        self.idle_since = 0.0
        self.pending_init_report = not provisioned  # Init Duration goes on the cold invocation's REPORT
        # An on-demand init that passed INIT_TIMEOUT: Lambda runs it again in the invoke phase, so the cold
        # invocation's time limit, Duration and Billed Duration include it (seconds; 0: not so).
        self.init_in_invoke = 0.0
        # The init's lines (INIT_START, its output, the platform's closing lines), for the LogType Tail of
        # the invocation that waited on this cold start (its first), as Lambda's tail holds them.
        self._init_log: list[str] | None = None
        self._instance = ""  # the environment's log stream name (AWS_LAMBDA_LOG_STREAM_NAME)
        self._on_exit = on_exit
        self._cgroup = cgroup
        self._cgroup_dir: Path | None = None
        self._spawner = spawner or EXEC
        self._watchdog = watchdog
        self._watched = False  # registered with the watchdog (so spawned without parent-death signal)
        self._loop = asyncio.get_running_loop()
        self._exit: asyncio.Future[int | None] = self._loop.create_future()
        self._proc: Worker | None = None
        self._output: OutputPipe | None = None
        self._channel: RuntimeChannel | None = None
        self._scratch: str | None = None
        self._lines: collections.deque[str] | None = None  # where output goes now (see _line)
        self._request_id: str | None = None
        self._running: dict[str, collections.deque[str]] = {}  # invocations in progress: their lines
        self._ending: collections.deque[_Ending] = collections.deque()  # answered, END/REPORT to write
        self.capacity = spec.concurrency  # invocations at once (AWS_LAMBDA_MAX_CONCURRENCY)
        self.in_flight = 0  # slots taken (by the pool, for an invocation) and not yet freed
        self._late = 0  # timed-out invocations whose handler has not returned
        self._on_slot = on_slot
        self._max_memory = 0
        self._status: ProcStatus | None = None
        self._killed = False
        self._keep = spec.log.keep  # the platform's level filter of application lines (JSON), or None

    @property
    def alive(self) -> bool:
        """Running and usable: started, not exited, not killed."""
        return self._proc is not None and not self._exit.done() and not self._killed

    # --- start ----------------------------------------------------------------------------------------

    async def start(self, request_id: str, time_limit: float) -> Result | None:
        """Spawn the worker and wait until its runtime asks for the first event (init done).

        Returns None when ready, else the error result for the invocation waiting on this cold start
        (``request_id``); the environment is then dead and must be closed.
        """
        self._channel = channel = await self.api.open_channel(self.capacity, confined=True)
        self._scratch = tempfile.mkdtemp(prefix=f"router-{self.spec.function}-")
        if self.spec.user is not None:
            os.chown(self._scratch, *self.spec.user)  # run_as: the worker's own (still mode 0700)
        self._watched = self._watchdog is not None and self._watchdog.running
        env = self.spec.environment(
            runtime_api=channel.address, scratch=self._scratch,
            init_type="provisioned-concurrency" if self.provisioned else "on-demand", watched=self._watched,
        )
        if self._cgroup is not None:
            try:
                self._cgroup_dir = await asyncio.to_thread(
                    self._cgroup.create, f"router-{self.spec.function}-{os.path.basename(self._scratch)}",
                    self.spec.memory)
            except OSError as exc:
                log.warning("function '%s': cgroup unavailable, using RLIMIT_AS, got %s",
                            self.spec.function, exc, extra={"function": self.spec.function})
        init_lines: collections.deque[str] = collections.deque(maxlen=MAX_TAIL_LINES)
        self._lines = init_lines
        self._instance = env["AWS_LAMBDA_LOG_STREAM_NAME"]
        restores = self._spawner.restores
        if not restores:  # else known once spawned: a restore, or an init when the snapshot was unavailable
            self._platform_line(self._init_start(restore=False), init_lines)
        try:
            failure = await self._start(request_id, time_limit, env, init_lines, restores)
        finally:
            self._lines = None
        if failure is None and request_id:
            self._init_log = list(init_lines)
        return failure

    def _init_start(self, *, restore: bool) -> str | None:
        spec = self.spec
        return spec.log.init_start(
            spec.runtime_version, spec.runtime_arn, spec.function, spec.version, self._instance, spec.memory,
            initialization_type="provisioned-concurrency" if self.provisioned else "on-demand",
            restore=restore)

    def _platform_line(self, line: str | None, init_lines: collections.deque[str], *,
                       first: bool = False) -> None:
        """A platform line of the init phase: to the function's log and the init's lines."""
        if line is not None:
            function_log.line(line, self.spec.function, None)
            if first:
                init_lines.appendleft(line)
            else:
                init_lines.append(line)

    async def _start(
        self, request_id: str, time_limit: float, env: dict[str, str], init_lines: collections.deque[str],
        restores: bool,
    ) -> Result | None:
        started = self._loop.time()  # for the init phase's deadline
        began = time.monotonic()  # for Init Duration (the loop's clock may tick in whole milliseconds)
        assert self._channel is not None
        with contextlib.ExitStack() as closing:  # the worker's copies of its fds: closed once it has them
            runtime_fd = -1
            if self.spec.runtime_fd:
                runtime_fd = closing.enter_context(await self.api.worker_socket(self._channel)).fileno()
            self._output, output_w = OutputPipe.open(self._line)
            closing.callback(os.close, output_w)
            try:
                async with asyncio.timeout(time_limit):
                    self._proc = await self._spawner.spawn(
                        SpawnRequest(self.spec, env, output_w, self._cgroup_dir, self._watched, runtime_fd),
                        self._process_exited)
            except SpawnFailed as exc:
                self._set_exit(None)
                failure = exc.result(request_id)
                self._failed_init(request_id, failure, time.monotonic() - began,
                                  exc.logs or "\n".join(init_lines), reported=exc.init_reported)
                return failure
            except TimeoutError:  # e.g. a snap_start template's init took the whole init phase
                self._set_exit(None)
                failure = _init_timeout_error(request_id, time_limit)
                self._failed_init(request_id, failure, time_limit, "\n".join(init_lines))
                return failure
            if restores:  # first of the init's lines (any output read while spawning comes after it)
                self._platform_line(self._init_start(restore=self._proc.restored), init_lines, first=True)
        not_ready = await self._wait_ready(request_id, time_limit, started, began)
        if not_ready is None:
            if (self.init_duration is not None and _past_init_phase(request_id, self.init_duration)
                    and not isinstance(self.init_duration, results.RestoreDuration)):
                # Lambda's init phase ended at its limit and the init ran again in the invoke phase:
                # the invocation pays for it (see ``invoke``), and the log says why
                self.init_in_invoke, self.pending_init_report = self.init_duration, False
                self._platform_line(self.spec.log.init_report(INIT_TIMEOUT, phase="init", status="timeout"),
                                    init_lines)
            elif self.init_duration is not None:
                for line in self.spec.log.init_done(
                        self.init_duration, restore=isinstance(self.init_duration, results.RestoreDuration),
                        initialization_type="provisioned-concurrency" if self.provisioned else "on-demand"):
                    self._platform_line(line, init_lines)
        else:
            timed_out = not_ready.outcome is Outcome.TIMEOUT
            self._failed_init(request_id, not_ready, time_limit if timed_out else time.monotonic() - began,
                              "\n".join(init_lines))
        return not_ready

    def _failed_init(self, request_id: str, failure: Result, elapsed: float, init_logs: str, *,
                     reported: bool = False) -> None:
        """Lambda's platform lines of an init that failed or timed out, written to the function's log and
        put on ``failure.logs`` after the init's own output: ``INIT_REPORT`` (Phase: invoke when an
        invocation waited on the cold start, else init; unless the init's spawner ``reported`` it, as a
        snap_start template does), then the waiting invocation's START, END and a REPORT whose Duration
        includes the failed init (Status: error and its Error Type, or Status: timeout).

        Lambda retries a failed init once inside the invoke phase and so logs two INIT_REPORT lines
        (Phase: init, then Phase: invoke); the router inits on the invocation's behalf once: one line. An
        init that timed out after the init phase's limit (a function timeout over 10 s) was in the invoke
        phase, as on Lambda: the init phase's own timeout first, and the task's timeout line. A restore
        (snap_start) that failed says ``RESTORE_REPORT ... Status: error`` instead, as Lambda's."""
        platform = self.spec.log
        status = "timeout" if failure.outcome is Outcome.TIMEOUT else "error"
        error_type = failure.error_name() if status == "error" else None
        lines = [init_logs] if init_logs else []
        task_timeout = status == "timeout" and _past_init_phase(request_id, elapsed)

        def write(line: str | None, rid: str | None) -> None:
            if line is not None:
                function_log.line(line, self.spec.function, rid)
                lines.append(line)

        restored = self._proc is not None and self._proc.restored  # an after-restore hook failed or hung
        if task_timeout and not reported and not restored:
            write(platform.init_report(INIT_TIMEOUT, phase="init", status="timeout"), None)
        if restored:
            write(platform.restore_report(elapsed, status=status, error_type=error_type), None)
        elif not reported:
            write(platform.init_report(
                elapsed, phase="invoke" if request_id else "init", status=status, error_type=error_type,
                initialization_type="provisioned-concurrency" if self.provisioned else "on-demand"), None)
        if request_id:
            write(platform.start(request_id, self.spec.version), request_id)
            if task_timeout:
                write(results.timeout_log_line(request_id, elapsed), request_id)
            write(platform.end(request_id, elapsed, status, error_type), request_id)
            write(platform.report(request_id, elapsed, self.spec.memory, self._max_memory, None, status,
                                  error_type), request_id)
        failure.logs = "\n".join(lines)

    async def _wait_ready(self, request_id: str, time_limit: float, started: float,
                          began: float) -> Result | None:
        assert self._channel is not None
        channel = self._channel
        assert self._proc is not None
        self.pid = self._proc.pid
        limit_open_files(self.pid)
        if self._watchdog is not None and self._watched:
            self._watchdog.register(self.pid)
        # Only this worker's processes may use its Runtime API (run_as: or its user's, when the router
        # may not read their file descriptors).
        channel.set_owner(self.pid, self.spec.user[0] if self.spec.user is not None else None)
        self._status = ProcStatus(self.pid)
        try:
            async with asyncio.timeout_at(started + time_limit):
                init = await asyncio.shield(channel.ready)
        except TimeoutError:
            self._read_max_memory()
            self.kill()
            return _init_timeout_error(request_id, time_limit)
        except BaseException:
            self.kill()
            raise
        if init is None:
            elapsed = time.monotonic() - began
            # A snap_start environment was restored, not initialised: its REPORT says Restore Duration.
            self.init_duration = results.RestoreDuration(elapsed) if self._proc.restored else elapsed
            return None
        self._drain()
        self._read_max_memory(init.memory)  # the worker's own figures when it sent them (it is exiting)
        self.kill()
        if init is NO_INIT_ERROR:
            await asyncio.wait([self._exit], timeout=1.0)
            return results.exit_error(request_id, self._returncode(), oom=await self._oom())
        return results.init_error(init)

    # --- invoke ---------------------------------------------------------------------------------------

    async def invoke(self, invocation: Invocation, time_limit: float) -> Result | None:
        """Run one invocation; the environment must be ready with a free slot (``in_flight`` under
        ``capacity``). Never raises for function failures.

        Returns None when the process died before it took the event (the event never reached the
        function): the caller may run it in another environment.

        A timeout kills the environment (Lambda's reset), unless it takes several invocations at once:
        then, as Lambda Managed Instances do, only this invocation fails, its slot stays taken until the
        handler does return, and the environment is recycled only when every slot is held that way.
        """
        assert self._channel is not None
        if self._ending:
            self._finish()  # the previous invocation's END and REPORT before this one's START
        rid = invocation.request_id
        platform = self.spec.log
        init_log = self._init_log
        if init_log is not None:  # the first invocation of a cold start: the init's lines lead its tail
            self._init_log = None
        start_line = platform.start(rid, self.spec.version)
        if start_line is not None:
            function_log.line(start_line, self.spec.function, rid)
        lines: collections.deque[str] = collections.deque(maxlen=MAX_TAIL_LINES)
        self._track(rid, lines)
        # A cold start whose init ran in the invoke phase (``init_in_invoke``) spent part of the time limit
        carried, self.init_in_invoke = self.init_in_invoke, 0.0
        budget = max(time_limit - carried, 0.001)
        now = time.time()
        headers = {
            "Content-Type": "application/json",
            "Lambda-Runtime-Aws-Request-Id": rid,
            "Lambda-Runtime-Deadline-Ms": str(int((now + budget) * 1000)),
            "Lambda-Runtime-Invoked-Function-Arn": invocation.invoked_arn or self.arn,
            # The dispatcher's header (router.lineage: the chain's hop count rides in it); else a new one.
            # X-Ray ids need to be unique, not secret: no getrandom(2) call per invocation.
            "Lambda-Runtime-Trace-Id": invocation.trace_id
            or f"Root=1-{int(now):08x}-{random.getrandbits(96):024x};Sampled=0",
        }
        if invocation.client_context:
            decoded = _client_context_json(invocation.client_context)
            if decoded is not None:
                headers["Lambda-Runtime-Client-Context"] = decoded
        future: asyncio.Future[Reply] = self._loop.create_future()
        started = time.monotonic()  # not the loop's clock: uvloop's ticks in whole milliseconds
        self._channel.send(PendingEvent(rid, invocation.payload, headers, future, stream=invocation.stream))
        reply: Reply | None = None
        late = False
        try:
            if self.capacity == 1:
                # One timer handle that settles the future (the Runtime API settles it only if not done)
                # costs less than a timeout scope around the await, once per invocation.
                timer = self._loop.call_later(budget, _settle, future, _TIMED_OUT)
                try:
                    reply = await future
                finally:
                    timer.cancel()
                if reply is _TIMED_OUT:
                    raise TimeoutError
            else:
                async with asyncio.timeout(budget):
                    # A timed-out invocation of a multi-concurrent environment keeps its future (and
                    # slot) until its handler returns: the timeout must not cancel it.
                    reply = await asyncio.shield(future)
        except TimeoutError:
            reply = None
            self._read_max_memory()
            if self.capacity == 1:
                self.kill()
            else:
                late = True
                self._outlive(future, rid)
        except BaseException:
            self.kill()
            self._untrack(rid)
            raise
        finally:
            if not late:
                self.in_flight -= 1  # the slot the pool took for this invocation
        duration = time.monotonic() - started
        if reply is not None and reply.kind is ReplyKind.UNDELIVERED:
            self._untrack(rid)
            return None
        # A result the handler returned or raised: the caller's answer need not wait for END and REPORT
        # (and the output drain and Max Memory Used they need), written just after it (see ``_finish``)
        # unless the caller asked for the log tail or the invocation ran out of time.
        after = (reply is not None and not late and not invocation.log_tail
                 and reply.kind in (ReplyKind.RESPONSE, ReplyKind.ERROR))
        if not after:
            self._drain()
        status = error_name = function_error = None
        if reply is None:
            result = results.timeout_error(rid, time_limit)
            timed_out = results.timeout_log_line(rid, time_limit)
            lines.append(timed_out)
            function_log.line(timed_out, self.spec.function, rid)
            status = "timeout"
        elif reply.kind is ReplyKind.RESPONSE:
            result = Result(payload=reply.body)
        elif reply.kind is ReplyKind.ERROR:
            result = results.handler_error(reply.body, reply.error_type)
            function_error = reply.error_type or "Unhandled"
        elif reply.kind is ReplyKind.TOO_LARGE:
            result = results.too_large_error()
        elif reply.kind is ReplyKind.EXITED and self.alive:  # one runtime worker of several died
            result = results.worker_exit_error(rid)
            status, error_name = "error", "Runtime.ExitError"
        elif reply.kind is ReplyKind.EXITED:
            oom = await self._oom()
            result = results.exit_error(rid, reply.returncode, oom=oom)
            status, error_name = "error", ("Runtime.OutOfMemory" if oom else "Runtime.ExitError")
        else:
            result = results.closed_error(rid)
            status, error_name = "error", "Runtime.ExitError"
        result.duration = duration
        if reply is not None:
            result.runtime_duration = reply.duration
        ending = _Ending(result, rid, reply, duration, carried, time_limit, lines, start_line, init_log, late,
                         status, error_name, function_error, drain=after)
        if after:
            self._ending.append(ending)
            result.finish_logs = self._finish
            if len(self._ending) == 1:
                self._loop.call_soon(self._finish)
        else:
            self._end(ending)
        return result

    def _finish(self) -> None:
        """Write the END and REPORT of the invocations answered before them, in order. Runs in the loop
        turn after the answer; and at once, first, when the environment is asked for anything else that
        writes lines or ends it (the next invocation, its exit, a kill or close) or a reader wants an
        answered invocation's ``logs``: so an invocation's END and REPORT still come before the next
        one's START, and no log tail or history row misses them."""
        ending = self._ending
        while ending:
            self._end(ending.popleft())

    def _end(self, e: _Ending) -> None:
        """An invocation's closing bookkeeping: its remaining output, Max Memory Used, END, REPORT, its
        log lines on the result."""
        result, rid, reply = e.result, e.request_id, e.reply
        result.finish_logs = None
        if e.drain:
            self._drain()
        platform = self.spec.log
        if self.alive:
            # A single-worker environment's bootstrap sends its own figures with its result (the
            # worker is the process whose peak this is); else they are read here.
            self._read_max_memory(reply.memory if reply is not None and self.capacity == 1 else None)
        init = self.init_duration if self.pending_init_report else None
        self.pending_init_report = False
        # Lambda's Duration is the function's time: the runtime's own clock where it says (the router's
        # adds the time a result waited for the router's busy event loop to read it); a timed-out one
        # ran (and Lambda bills) exactly its time limit, not the router's few milliseconds more to notice
        if reply is None:
            ran = e.time_limit
        else:
            ran = e.carried + (e.duration if reply.duration is None else min(e.duration, reply.duration))
        end_line = platform.end(rid, ran, e.status, e.error_name, e.function_error)
        report = platform.report(
            rid, ran, self.spec.memory, self._max_memory, init, e.status, e.error_name, e.function_error)
        if end_line is not None:
            function_log.line(end_line, self.spec.function, rid)
        if report is not None:
            function_log.line(report, self.spec.function, rid)
        if not e.late:
            self._untrack(rid)
        every = (*(e.init_log or ()), e.start_line, *e.lines, end_line, report)
        result.log_text = "\n".join(line for line in every if line is not None)

    def _outlive(self, future: asyncio.Future[Reply], request_id: str) -> None:
        """A timed-out invocation of a multi-concurrent environment: its slot is freed when its handler
        returns after all; when every slot is held by such invocations, the environment is killed."""
        self._late += 1

        def returned(_: asyncio.Future[Reply]) -> None:
            self._late -= 1
            self.in_flight -= 1
            self._untrack(request_id)
            self._on_slot(self)

        future.add_done_callback(returned)
        if self._late >= self.capacity:
            log.warning("function '%s': every slot of environment pid %s runs a timed-out invocation; "
                        "recycling it", self.spec.function, self.pid, extra={"function": self.spec.function})
            self.kill()

    # --- output and exit ------------------------------------------------------------------------------

    def _track(self, request_id: str, lines: collections.deque[str]) -> None:
        """Output is attributed to ``request_id`` while it runs (alone, or found in the line)."""
        self._running[request_id] = lines
        self._lines, self._request_id = (lines, request_id) if len(self._running) == 1 else (None, None)

    def _untrack(self, request_id: str) -> None:
        self._running.pop(request_id, None)
        if len(self._running) == 1:
            self._request_id, self._lines = next(iter(self._running.items()))
        else:
            self._lines = self._request_id = None

    def _line(self, raw: bytes) -> None:
        text = raw[:MAX_LINE].decode("utf-8", "replace")
        if text.endswith("\r"):
            text = text[:-1]
        if self._keep is not None and not self._keep(text):
            return  # below the function's application_log_level
        lines, request_id = self._lines, self._request_id
        if len(self._running) > 1:
            # Several invocations at once: a line is theirs when it names their request id, as the
            # runtimes' log formats do (Node's console, Python's logging); other lines are the
            # environment's.
            for rid, rid_lines in self._running.items():
                if rid in text:
                    lines, request_id = rid_lines, rid
                    break
        if lines is not None:
            lines.append(text)
        function_log.line(text, self.spec.function, request_id)

    def _drain(self) -> None:
        """Attribute what the worker has written so far (it flushes before it posts a result)."""
        if self._output is not None:
            self._output.drain()

    def _process_exited(self, returncode: int | None) -> None:
        self._finish()  # the answered invocations' END and REPORT before what the exit writes
        self._drain()  # what it wrote before it died belongs to the invocation it ran
        self._set_exit(returncode)
        if self._watchdog is not None and self.pid is not None:
            self._watchdog.unregister(self.pid)
        if self._status is not None and self._status.below:
            # The worker ended on its own: what it started went to another parent; end what was seen.
            _end_noted(self._status.below.items())
        channel = self._channel
        if channel is not None:
            if not channel.ready.done():
                channel.ready.set_result(NO_INIT_ERROR)
            channel.finish(Reply(ReplyKind.EXITED, returncode=returncode))
        self._on_exit(self)

    def _read_max_memory(self, reported: bytes | None = None) -> None:
        """Max Memory Used: the cgroup's peak (every process of the environment), else the summed peak
        resident sets of the worker and the processes below it (``ProcStatus.max_memory_mb``; the
        worker's own figures from ``reported``, what its bootstrap sent with the result, when given)."""
        if self._cgroup_dir is not None:
            peak = CgroupV2.peak_mb(self._cgroup_dir)
            if peak is not None:
                self._max_memory = max(self._max_memory, peak)
                return
        if self._status is not None:
            self._max_memory = max(self._max_memory, self._status.max_memory_mb(reported) or 0)

    def run_and_wait_ns(self) -> tuple[int, int] | None:
        """CPU time the worker has run and waited runnable, in ns (None when unknown): the pool tells
        environments that wait on I/O from ones that use or wait for the CPUs."""
        return self._status.run_and_wait_ns() if self._status is not None else None

    def _set_exit(self, returncode: int | None) -> None:
        if not self._exit.done():
            self._exit.set_result(returncode)

    def _returncode(self) -> int | None:
        return self._exit.result() if self._exit.done() else None

    async def _oom(self) -> bool:
        if self._cgroup_dir is None:
            return False
        return await asyncio.to_thread(CgroupV2.oom_killed, self._cgroup_dir)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the worker and everything it started: SIGKILL ends the environment's cgroup, or its
        whole process tree (``proctree.kill_tree``: daemons that left the process group included, as
        the worker is their subreaper); another signal goes to the process group."""
        if self.pid is None:
            return
        self._finish()  # with the figures of a worker still running
        self._killed = True
        if sig == signal.SIGKILL:
            if self._cgroup_dir is not None:
                CgroupV2.kill(self._cgroup_dir)
            if not self._exit.done():  # not reaped yet: the pid is still the worker's
                proctree.kill_tree(self.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def close(self, grace: float = TERM_GRACE) -> None:
        """Stop the process (SIGTERM, SIGKILL after ``grace``) and release the port and scratch dir."""
        self._finish()
        below: list[tuple[int, int | None]] = []
        if self.alive and self.pid is not None and grace > 0:
            # Once the worker exits, what it started is re-parented away from its tree: note it now.
            below = [(pid, proctree.start_time(pid)) for pid in proctree.descendants(self.pid)]
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)
            await asyncio.wait([self._exit], timeout=grace)
        self.kill(signal.SIGKILL)  # also whatever the worker left behind
        _end_noted(below)
        if self._proc is not None:
            if not self._exit.done():
                await asyncio.wait([self._exit], timeout=5.0)
            self._proc.close()
        if self._output is not None:
            self._output.close()
            self._output = None
        if self._status is not None:
            self._status.close()
            self._status = None
        if self._channel is not None:
            await self.api.close_channel(self._channel)
        if self._scratch is not None:
            await asyncio.to_thread(shutil.rmtree, self._scratch, True)
            self._scratch = None
        if self._cgroup_dir is not None:
            await asyncio.to_thread(CgroupV2.remove, self._cgroup_dir)
            self._cgroup_dir = None


def _past_init_phase(request_id: str, seconds: float) -> bool:
    """An init that ran ``seconds`` for the invocation ``request_id`` waits on (not a provisioned one) and
    outlasted Lambda's init phase: Lambda runs it in the invoke phase, under the function's timeout."""
    return bool(request_id) and seconds > INIT_TIMEOUT


def _init_timeout_error(request_id: str, time_limit: float) -> Result:
    """An init that ran out of time: past Lambda's init phase (a function timeout over 10 s, for an
    invocation waiting on it) it ran in the invoke phase, and Lambda says the task timed out."""
    phase = "Task" if _past_init_phase(request_id, time_limit) else "Init phase"
    return results.timeout_error(request_id, time_limit, phase=phase)


@dataclasses.dataclass(slots=True)
class _Ending:
    """What an invocation's END and REPORT are written from (``Environment._end``)."""

    result: Result
    request_id: str
    reply: Reply | None  # None: it timed out
    duration: float
    carried: float  # init time that counts towards it (an init run in the invoke phase)
    time_limit: float
    lines: collections.deque[str]
    start_line: str | None
    init_log: list[str] | None
    late: bool
    status: str | None
    error_name: str | None
    function_error: str | None
    drain: bool  # the output is still to be drained (it was not before the answer)


_TIMED_OUT = Reply(ReplyKind.CLOSED)
"""Put on an invocation's future by its timer (compared by identity): the function timed out."""


def _settle(future: asyncio.Future[Reply], reply: Reply) -> None:
    if not future.done():
        future.set_result(reply)


def _end_noted(processes: Iterable[tuple[int, int | None]]) -> None:
    """End the trees of processes noted earlier as an environment's, when still the same processes."""
    for pid, started in list(processes):
        if started is not None and proctree.start_time(pid) == started:
            proctree.kill_tree(pid)


def _client_context_json(b64: str) -> str | None:
    """X-Amz-Client-Context is base64 JSON; the Runtime API header carries the JSON itself."""
    try:
        text = base64.b64decode(b64, validate=True).decode()
        parsed: Any = json.loads(text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return text if isinstance(parsed, dict) else None
