"""One execution environment: a worker process speaking the Runtime API, its output and its invocations.

The process is started with ``loop.subprocess_exec`` (what ``asyncio.create_subprocess_exec`` is built
on) in its own process group; its stdout and stderr are one pipe the router made
(``router.runtime.output``) and reads line by line as the bytes arrive, so output is attributed in the
loop callback that reads it and no reader task per environment or invocation is needed; the death of
the process is seen at once (``process_exited``).

Ordering of logs: a runtime flushes stdout/stderr before it posts the result, so when the result
arrives every byte of the invocation's output is already in the pipe; the environment drains it
(synchronously) before it writes END/REPORT, so REPORT comes last.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from router.core.invocation import Invocation, Result
from router.logs import FunctionLog
from router.runtime import results
from router.runtime.api import NO_INIT_ERROR, PendingEvent, Reply, ReplyKind, RuntimeApiServer, RuntimeChannel
from router.runtime.launch import RLIMIT_AS_VAR, LaunchSpec, with_parent_death_signal
from router.runtime.memory import CgroupV2, ProcStatus, rlimit_preexec
from router.runtime.output import MAX_LINE, OutputPipe

log = logging.getLogger("router.runtime")
function_log = FunctionLog("router.function")

INIT_TIMEOUT = 10.0
"""Lambda's init phase limit; a function with a longer timeout may use that instead (see ``init_timeout``)."""
TERM_GRACE = 2.0
"""Time between SIGTERM and SIGKILL when an environment is shut down."""
MAX_TAIL_LINES = 500  # function lines kept per invocation for Result.logs (all are logged)


def init_timeout(function_timeout: float) -> float:
    """Init may take Lambda's 10 s, or the function's timeout when that is longer (Lambda re-runs a slow
    init inside the invoke phase, under the function timeout)."""
    return max(INIT_TIMEOUT, function_timeout)


class EnvState(enum.StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    DEAD = "dead"


class _ExitProtocol(asyncio.SubprocessProtocol):
    """Tells the environment when its process has ended (the output pipes are the router's own)."""

    def __init__(self, env: Environment) -> None:
        self._env = env

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.SubprocessTransport without subclassing it.
        self._env._transport = cast(asyncio.SubprocessTransport, transport)

    def process_exited(self) -> None:
        self._env._process_exited()


class Environment:
    """One worker process of one function; runs one invocation at a time."""

    def __init__(
        self,
        spec: LaunchSpec,
        api: RuntimeApiServer,
        *,
        arn: str,
        provisioned: bool,
        on_exit: Callable[[Environment], None],
        cgroup: CgroupV2 | None = None,
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
        self._on_exit = on_exit
        self._cgroup = cgroup
        self._cgroup_dir: Path | None = None
        self._loop = asyncio.get_running_loop()
        self._exit: asyncio.Future[int | None] = self._loop.create_future()
        self._transport: asyncio.SubprocessTransport | None = None
        self._output: OutputPipe | None = None
        self._channel: RuntimeChannel | None = None
        self._scratch: str | None = None
        self._lines: collections.deque[str] | None = None
        self._request_id: str | None = None
        self._max_memory = 0
        self._status: ProcStatus | None = None
        self._killed = False

    @property
    def alive(self) -> bool:
        """Running and usable: started, not exited, not killed."""
        return self._transport is not None and not self._exit.done() and not self._killed

    # --- start ----------------------------------------------------------------------------------------

    async def start(self, request_id: str, time_limit: float) -> Result | None:
        """Spawn the worker and wait until its runtime asks for the first event (init done).

        Returns None when ready, else the error result for the invocation waiting on this cold start
        (``request_id``); the environment is then dead and must be closed.
        """
        self._channel = channel = await self.api.open_channel()
        self._scratch = tempfile.mkdtemp(prefix=f"router-{self.spec.function}-")
        env = self.spec.environment(
            runtime_api=channel.address, scratch=self._scratch,
            init_type="provisioned-concurrency" if self.provisioned else "on-demand",
        )
        preexec: Callable[[], None] | None = (
            None if self.spec.self_limits else with_parent_death_signal(rlimit_preexec(self.spec.memory)))
        if self._cgroup is not None:
            try:
                self._cgroup_dir = await asyncio.to_thread(
                    self._cgroup.create, f"router-{self.spec.function}-{os.path.basename(self._scratch)}",
                    self.spec.memory)
                preexec = with_parent_death_signal(CgroupV2.preexec(self._cgroup_dir))
                env.pop(RLIMIT_AS_VAR, None)  # the cgroup limits memory instead
            except OSError as exc:
                log.warning("function '%s': cgroup unavailable, using RLIMIT_AS, got %s",
                            self.spec.function, exc, extra={"function": self.spec.function})
        init_lines: collections.deque[str] = collections.deque(maxlen=MAX_TAIL_LINES)
        self._lines = init_lines
        try:
            return await self._start(request_id, time_limit, env, preexec, init_lines)
        finally:
            self._lines = None

    async def _start(
        self, request_id: str, time_limit: float, env: dict[str, str], preexec: Callable[[], None] | None,
        init_lines: collections.deque[str],
    ) -> Result | None:
        started = self._loop.time()
        self._output, output_w = OutputPipe.open(self._line)
        try:
            await self._loop.subprocess_exec(
                lambda: _ExitProtocol(self), *self.spec.argv,
                stdin=asyncio.subprocess.DEVNULL, stdout=output_w, stderr=output_w, cwd=self.spec.cwd,
                env=env, start_new_session=True, preexec_fn=preexec,
            )
        except OSError as exc:
            self._exit.set_result(None)
            return results.spawn_error(request_id, self.spec.argv[0], exc)
        finally:
            os.close(output_w)
        failure = await self._wait_ready(request_id, time_limit, started)
        if failure is not None:
            failure.logs = "\n".join(init_lines)
        return failure

    async def _wait_ready(self, request_id: str, time_limit: float, started: float) -> Result | None:
        assert self._channel is not None
        channel = self._channel
        assert self._transport is not None
        self.pid = self._transport.get_pid()
        self._status = ProcStatus(self.pid)
        try:
            async with asyncio.timeout(time_limit):
                init = await asyncio.shield(channel.ready)
        except TimeoutError:
            self.kill()
            return results.timeout_error(request_id, time_limit, phase="Init phase")
        except BaseException:
            self.kill()
            raise
        if init is None:
            self.init_duration = self._loop.time() - started
            return None
        self._drain()
        self.kill()
        if init is NO_INIT_ERROR:
            await asyncio.wait([self._exit], timeout=1.0)
            return results.exit_error(request_id, self._returncode(), oom=await self._oom())
        return results.init_error(init)

    # --- invoke ---------------------------------------------------------------------------------------

    async def invoke(self, invocation: Invocation, time_limit: float) -> Result | None:
        """Run one invocation; the environment must be ready and idle. Never raises for function failures.

        Returns None when the process died before it took the event (the event never reached the
        function): the caller may run it in another environment.
        """
        assert self._channel is not None
        rid = invocation.request_id
        start_line = f"START RequestId: {rid} Version: $LATEST"
        function_log.line(start_line, self.spec.function, rid)
        lines: collections.deque[str] = collections.deque(maxlen=MAX_TAIL_LINES)
        self._lines, self._request_id = lines, rid
        headers = {
            "Content-Type": "application/json",
            "Lambda-Runtime-Aws-Request-Id": rid,
            "Lambda-Runtime-Deadline-Ms": str(int((time.time() + time_limit) * 1000)),
            "Lambda-Runtime-Invoked-Function-Arn": self.arn,
            "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{os.urandom(12).hex()};Sampled=0",
        }
        if invocation.client_context:
            decoded = _client_context_json(invocation.client_context)
            if decoded is not None:
                headers["Lambda-Runtime-Client-Context"] = decoded
        future: asyncio.Future[Reply] = self._loop.create_future()
        started = self._loop.time()
        self._channel.send(PendingEvent(rid, invocation.payload, headers, future))
        reply: Reply | None = None
        try:
            async with asyncio.timeout(time_limit):
                reply = await future
        except TimeoutError:
            self._read_max_memory()
            self.kill()
        except BaseException:
            self.kill()
            self._lines = self._request_id = None
            raise
        duration = self._loop.time() - started
        if reply is not None and reply.kind is ReplyKind.UNDELIVERED:
            self._lines = self._request_id = None
            return None
        self._drain()
        status = error_name = None
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
        elif reply.kind is ReplyKind.TOO_LARGE:
            result = results.too_large_error()
        elif reply.kind is ReplyKind.EXITED:
            oom = await self._oom()
            result = results.exit_error(rid, reply.returncode, oom=oom)
            status, error_name = "error", ("Runtime.OutOfMemory" if oom else "Runtime.ExitError")
        else:
            result = results.closed_error(rid)
            status, error_name = "error", "Runtime.ExitError"
        if self.alive:
            self._read_max_memory()
        init = self.init_duration if self.pending_init_report else None
        self.pending_init_report = False
        end_line = f"END RequestId: {rid}"
        report = results.report_line(
            rid, duration, self.spec.memory, self._max_memory, init, status, error_name)
        function_log.line(end_line, self.spec.function, rid)
        function_log.line(report, self.spec.function, rid)
        self._lines = self._request_id = None
        result.logs = "\n".join((start_line, *lines, end_line, report))
        result.duration = duration
        return result

    # --- output and exit ------------------------------------------------------------------------------

    def _line(self, raw: bytes) -> None:
        text = raw[:MAX_LINE].decode("utf-8", "replace")
        if text.endswith("\r"):
            text = text[:-1]
        if self._lines is not None:
            self._lines.append(text)
        function_log.line(text, self.spec.function, self._request_id)

    def _drain(self) -> None:
        """Attribute what the worker has written so far (it flushes before it posts a result)."""
        if self._output is not None:
            self._output.drain()

    def _process_exited(self) -> None:
        assert self._transport is not None
        returncode = self._transport.get_returncode()
        self._drain()  # what it wrote before it died belongs to the invocation it ran
        if not self._exit.done():
            self._exit.set_result(returncode)
        channel = self._channel
        if channel is not None:
            if not channel.ready.done():
                channel.ready.set_result(NO_INIT_ERROR)
            channel.finish(Reply(ReplyKind.EXITED, returncode=returncode))
        self._on_exit(self)

    def _read_max_memory(self) -> None:
        if self._status is not None:
            self._max_memory = max(self._max_memory, self._status.max_memory_mb() or 0)

    def _returncode(self) -> int | None:
        return self._exit.result() if self._exit.done() else None

    async def _oom(self) -> bool:
        if self._cgroup_dir is None:
            return False
        return await asyncio.to_thread(CgroupV2.oom_killed, self._cgroup_dir)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (the worker and anything it started)."""
        if self.pid is None:
            return
        self._killed = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def close(self, grace: float = TERM_GRACE) -> None:
        """Stop the process (SIGTERM, SIGKILL after ``grace``) and release the port and scratch dir."""
        if self.alive and self.pid is not None and grace > 0:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)
            await asyncio.wait([self._exit], timeout=grace)
        self.kill(signal.SIGKILL)  # also whatever the worker left behind in its group
        if self._transport is not None:
            if not self._exit.done():
                await asyncio.wait([self._exit], timeout=5.0)
            self._transport.close()
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


def _client_context_json(b64: str) -> str | None:
    """X-Amz-Client-Context is base64 JSON; the Runtime API header carries the JSON itself."""
    import base64
    import binascii
    import json

    try:
        text = base64.b64decode(b64, validate=True).decode()
        parsed: Any = json.loads(text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return text if isinstance(parsed, dict) else None
