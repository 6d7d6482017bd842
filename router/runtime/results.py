"""Lambda's wording for what an execution environment reports: error results and the REPORT line."""

from __future__ import annotations

import json
import math
import signal
import time

from router.invocation import RESPONSE_LIMIT, ErrorType, Outcome, Result
from router.runtime.api import InitError

# Go's names for signals, as Lambda prints them in "Runtime exited with error: signal: killed".
_SIGNAL_TEXT = {
    signal.SIGKILL: "killed",
    signal.SIGTERM: "terminated",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGABRT: "aborted",
    signal.SIGINT: "interrupt",
    signal.SIGHUP: "hangup",
    signal.SIGBUS: "bus error",
    signal.SIGFPE: "floating point exception",
    signal.SIGILL: "illegal instruction",
    signal.SIGPIPE: "broken pipe",
    signal.SIGUSR1: "user defined signal 1",
    signal.SIGUSR2: "user defined signal 2",
}


def exit_text(returncode: int | None) -> str:
    """``exit status 1`` or ``signal: killed``, as Lambda (Go's ProcessState) words a process's end."""
    if returncode is None:
        return "unknown"
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        sig = signal.Signals(-returncode)
    except ValueError:
        return f"signal: signal {-returncode}"
    return "signal: " + _SIGNAL_TEXT.get(sig, sig.name.lower())


def exit_error(request_id: str, returncode: int | None, *, oom: bool = False) -> Result:
    """The result of an invocation whose runtime process ended before it answered."""
    return Result.error(
        "Runtime.OutOfMemory" if oom else "Runtime.ExitError",
        f"RequestId: {request_id} Error: Runtime exited with error: {exit_text(returncode)}",
    )


def worker_exit_error(request_id: str) -> Result:
    """The invocation's runtime worker (one of a multi-concurrent environment's) ended before it
    answered; the environment's other workers go on."""
    return Result.error(
        "Runtime.ExitError",
        f"RequestId: {request_id} Error: the runtime worker running the invocation exited",
    )


def timeout_error(request_id: str, seconds: float, *, phase: str = "Task") -> Result:
    return Result.error(
        "Sandbox.Timedout",
        f"RequestId: {request_id} Error: {phase} timed out after {seconds:.2f} seconds",
        outcome=Outcome.TIMEOUT,
        error_type=ErrorType.TIMEOUT,
    )


def too_large_error() -> Result:
    return Result.error(
        "Function.ResponseSizeTooLarge",
        f"Response payload size exceeded maximum allowed payload size ({RESPONSE_LIMIT} bytes).",
    )


def closed_error(request_id: str) -> Result:
    """The router closed the environment while the invocation ran (shutdown)."""
    return Result.error(
        "Runtime.ExitError",
        f"RequestId: {request_id} Error: execution environment shut down by the router",
        error_type=ErrorType.CONNECTION,
    )


def spawn_error(request_id: str, argv0: str, exc: OSError) -> Result:
    """The worker process could not be started (Lambda: Runtime.InvalidEntrypoint)."""
    return Result.error(
        "Runtime.InvalidEntrypoint",
        f"RequestId: {request_id} Error: fork/exec {argv0}: {exc.strerror or exc}",
        error_type=ErrorType.CONFIG,
    )


def init_error(init: InitError) -> Result:
    """The error the runtime posted to /init/error, returned as the invocation's result: its body as the
    runtime sent it (Lambda's invoke response is those bytes), unless it is not a JSON object."""
    try:
        valid = isinstance(json.loads(init.body), dict)
    except ValueError:
        valid = False
    payload = init.body if valid else json.dumps(
        {"errorMessage": init.body.decode("utf-8", "replace"), "errorType": init.error_type}).encode()
    return Result(
        payload=payload, outcome=Outcome.ERROR, function_error="Unhandled", error_type=ErrorType.HANDLER,
    )


def handler_error(body: bytes, error_type: str | None) -> Result:
    """A function error posted to /invocation/{id}/error; the body is kept as the runtime sent it."""
    try:
        valid = isinstance(json.loads(body), dict)
    except ValueError:
        valid = False
    if not valid:
        body = json.dumps({
            "errorMessage": body.decode("utf-8", "replace"),
            "errorType": error_type or "Unhandled",
        }).encode()
    return Result(
        payload=body, outcome=Outcome.ERROR, function_error="Unhandled", error_type=ErrorType.HANDLER)


def timeout_log_line(request_id: str, seconds: float) -> str:
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
    return f"{stamp} {request_id} Task timed out after {seconds:.2f} seconds"


class RestoreDuration(float):
    """The init duration of an environment restored from a snapshot (``snap_start``), in seconds: its
    REPORT says ``Restore Duration`` and ``Billed Restore Duration`` instead of ``Init Duration``, as
    Lambda's SnapStart REPORT lines do."""


def billed_ms(duration: float, init_duration: float | None) -> int:
    """REPORT's Billed Duration: the invocation and, on a cold start, its init, rounded up to the
    millisecond (at least 1). Lambda bills the INIT phase of every on-demand function since 1 August 2025
    (before, only of custom runtimes and container images, whose REPORT lines showed it the same way); a
    SnapStart restore is billed apart, as Billed Restore Duration."""
    if init_duration is not None and not isinstance(init_duration, RestoreDuration):
        duration += init_duration
    return whole_ms(duration)


def whole_ms(seconds: float) -> int:
    """Milliseconds as Lambda bills them: rounded up, at least 1 (Billed Duration, Billed Restore
    Duration)."""
    return max(1, math.ceil(seconds * 1000))


def report_line(
    request_id: str,
    duration: float,
    memory: int,
    max_memory: int,
    init_duration: float | None,
    status: str | None = None,
    error_type: str | None = None,
) -> str:
    ms = duration * 1000
    line = (
        f"REPORT RequestId: {request_id}\tDuration: {ms:.2f} ms"
        f"\tBilled Duration: {billed_ms(duration, init_duration)} ms"
        f"\tMemory Size: {memory} MB\tMax Memory Used: {max_memory} MB"
    )
    if isinstance(init_duration, RestoreDuration):
        restore = init_duration * 1000
        line += (f"\tRestore Duration: {restore:.2f} ms"
                 f"\tBilled Restore Duration: {whole_ms(init_duration)} ms")
    elif init_duration is not None:
        line += f"\tInit Duration: {init_duration * 1000:.2f} ms"
    if status is not None:
        line += f"\tStatus: {status}"
    if error_type is not None:
        line += f"\tError Type: {error_type}"
    return line
