"""The log lines the platform writes for each invocation, in the function's log format (Lambda's
LoggingConfig), and the platform's filter of application records by level.

Text (the default): ``INIT_START`` (``RESTORE_START`` and ``RESTORE_REPORT`` of a snap_start restore) once
an environment, ``START RequestId: ...``, ``END RequestId: ...``, the ``REPORT`` line and, for an init that
failed, ``INIT_REPORT``. JSON: the Telemetry API's platform events as Lambda writes them to the log stream,
one object a line, ``{"time": ..., "type": "platform.start", "record": {...}}``: ``platform.initStart``,
``platform.start``, ``platform.report`` and a failed init's ``platform.initReport`` at INFO;
``platform.initRuntimeDone``, a successful init's ``platform.initReport`` and ``platform.runtimeDone``
(in place of END) at DEBUG; ``system_log_level`` drops those below it.
In JSON, application records below ``application_log_level`` are dropped too: the runtimes do it
themselves (AWS_LAMBDA_LOG_LEVEL), and the platform drops any other JSON line whose ``"level"`` is
below it, as Lambda does for libraries that write JSON of their own (Powertools).

Everything is decided once per function (``PlatformLog.of``), not per line.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from router import compact_json
from router.config.models import FunctionLoggingConfig
from router.runtime import results

_SYSTEM_LEVELS = {"DEBUG": 2, "INFO": 3, "WARN": 4}
_APPLICATION_LEVELS = {"TRACE": 1, "DEBUG": 2, "INFO": 3, "WARN": 4, "ERROR": 5, "FATAL": 6}
# Level names as runtimes and libraries write them (Python's WARNING and CRITICAL, lower case ...).
_LEVEL_ALIASES = {**_APPLICATION_LEVELS, "WARNING": 4, "CRITICAL": 6}

_BELOW_INFO = re.compile(r'"(?i:trace|debug)"')
"""A quoted level name below INFO: a line without one cannot be below an INFO (or lower) minimum."""

_dumps: Callable[[Any], str] = compact_json.dumps


def log_time(now: float) -> str:
    """``2024-03-13T18:56:24.046Z``: the platform records' ``time``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def application_level(config: FunctionLoggingConfig) -> str | None:
    """AWS_LAMBDA_LOG_LEVEL as Lambda sets it: the application level in JSON format (INFO by default),
    none in Text."""
    if config.log_format != "JSON":
        return None
    return config.application_log_level or "INFO"


@dataclass(frozen=True, slots=True)
class PlatformLog:
    """The platform lines of one function's invocations; a method returns None for a line not written."""

    json: bool = False
    system_level: int = _SYSTEM_LEVELS["INFO"]
    application_level: int = 0  # 0: no filter (Text)

    @classmethod
    def of(cls, config: FunctionLoggingConfig | None) -> PlatformLog:
        if config is None or config.log_format != "JSON":
            return TEXT
        return cls(
            json=True,
            system_level=_SYSTEM_LEVELS[config.system_log_level or "INFO"],
            application_level=_APPLICATION_LEVELS[application_level(config) or "INFO"],
        )

    def _event(self, level: str, kind: str, record: dict[str, Any]) -> str | None:
        if _SYSTEM_LEVELS[level] < self.system_level:
            return None
        return _dumps({"time": log_time(time.time()), "type": kind, "record": record})

    def init_start(self, runtime_version: str, runtime_arn: str, function: str, version: str,
                   instance: str, memory: int, *, initialization_type: str = "on-demand",
                   restore: bool = False) -> str | None:
        """Lambda's first line of an environment's init: ``INIT_START Runtime Version: ...<TAB>Runtime
        Version ARN: ...``, or ``RESTORE_START`` of one restored from a snapshot (snap_start). JSON:
        ``platform.initStart`` / ``platform.restoreStart`` at INFO, with the function, its version, the
        environment's log stream (``instanceId``) and its memory in bytes (``instanceMaxMemory``)."""
        if not self.json:
            name = "RESTORE_START" if restore else "INIT_START"
            return f"{name} Runtime Version: {runtime_version}\tRuntime Version ARN: {runtime_arn}"
        record: dict[str, Any] = {} if restore else {
            "initializationType": initialization_type, "phase": "init"}
        record.update(runtimeVersion=runtime_version, runtimeVersionArn=runtime_arn, functionName=function,
                      functionVersion=version, instanceId=instance, instanceMaxMemory=memory * 1024 * 1024)
        return self._event("INFO", "platform.restoreStart" if restore else "platform.initStart", record)

    def init_done(self, duration: float, *, initialization_type: str = "on-demand",
                  restore: bool = False) -> list[str]:
        """The lines that close an init that succeeded. Text: none (Init Duration is on the REPORT line),
        ``RESTORE_REPORT Restore Duration: X ms`` of a restore. JSON: ``platform.initRuntimeDone`` and
        ``platform.initReport`` (status success) at DEBUG, as Lambda writes them to the log stream (a
        log at the default INFO has ``platform.initStart`` alone before the first ``platform.start``);
        of a restore ``platform.restoreRuntimeDone`` (DEBUG) and ``platform.restoreReport`` (INFO, as
        its Text line is written by default)."""
        if restore:
            lines = [self._event("DEBUG", "platform.restoreRuntimeDone", {"status": "success"})
                     if self.json else None, self.restore_report(duration)]
        elif self.json:
            phase = {"initializationType": initialization_type, "phase": "init"}
            lines = [self._event("DEBUG", "platform.initRuntimeDone", {**phase, "status": "success"}),
                     self._event("DEBUG", "platform.initReport", _phase_record(phase, duration, None, None))]
        else:
            return []
        return [line for line in lines if line is not None]

    def restore_report(self, duration: float, *, status: str | None = None,
                       error_type: str | None = None) -> str | None:
        """Lambda's ``RESTORE_REPORT Restore Duration: X ms`` (and ``Status``, ``Error Type`` of a restore
        that failed, as Lambda's SnapStart docs show them); JSON ``platform.restoreReport`` at INFO."""
        if not self.json:
            line = f"RESTORE_REPORT Restore Duration: {duration * 1000:.2f} ms"
            return _with_status(line, status, error_type)
        return self._event("INFO", "platform.restoreReport", _phase_record({}, duration, status, error_type))

    def init_report(self, duration: float, *, phase: str = "init", status: str | None = None,
                    error_type: str | None = None, initialization_type: str = "on-demand") -> str | None:
        """Lambda's INIT_REPORT: of an init that failed (``status`` error, with its ``error_type``) or
        timed out, in the ``phase`` it ran in (``invoke`` when an invocation waited on it); or, with
        no ``status``, of a snapshot's init (Text: Init Duration alone, as Lambda's SnapStart line).
        JSON: ``platform.initReport``, as the Telemetry API's record."""
        if not self.json:
            line = f"INIT_REPORT Init Duration: {duration * 1000:.2f} ms"
            return line if status is None else _with_status(f"{line}\tPhase: {phase}", status, error_type)
        record = _phase_record({"initializationType": initialization_type, "phase": phase}, duration, status,
                               error_type)
        return self._event("INFO", "platform.initReport", record)

    def start(self, request_id: str, version: str = "$LATEST") -> str | None:
        if not self.json:
            return f"START RequestId: {request_id} Version: {version}"
        return self._event("INFO", "platform.start", {"requestId": request_id, "version": version})

    def end(self, request_id: str, duration: float, status: str | None, error_type: str | None = None,
            function_error: str | None = None) -> str | None:
        if not self.json:
            return f"END RequestId: {request_id}"
        record = _outcome(request_id, status, error_type, function_error)
        record["metrics"] = {"durationMs": round(duration * 1000, 3)}
        return self._event("DEBUG", "platform.runtimeDone", record)

    def report(
        self,
        request_id: str,
        duration: float,
        memory: int,
        max_memory: int,
        init_duration: float | None,
        status: str | None = None,
        error_type: str | None = None,
        function_error: str | None = None,
    ) -> str | None:
        """``status``/``error_type``: the platform's (timeout, Runtime.ExitError ...), on both formats'
        lines; ``function_error``: the errorType the handler's error was posted with (JSON only, as the
        Text REPORT line does not show it)."""
        if not self.json:
            return results.report_line(
                request_id, duration, memory, max_memory, init_duration, status, error_type)
        ms = duration * 1000
        metrics: dict[str, Any] = {
            "durationMs": round(ms, 2),
            "billedDurationMs": results.billed_ms(duration, init_duration),
            "memorySizeMB": memory,
            "maxMemoryUsedMB": max_memory,
        }
        if isinstance(init_duration, results.RestoreDuration):
            restore = init_duration * 1000
            metrics["restoreDurationMs"] = round(restore, 2)
            metrics["billedRestoreDurationMs"] = results.whole_ms(init_duration)
        elif init_duration is not None:
            metrics["initDurationMs"] = round(init_duration * 1000, 2)
        record = _outcome(request_id, status, error_type, function_error)
        record["metrics"] = metrics
        return self._event("INFO", "platform.report", record)

    @property
    def keep(self) -> Callable[[str], bool] | None:
        """The platform's filter of application lines (None: every line is kept, as in Text)."""
        if not self.json or self.application_level <= _APPLICATION_LEVELS["TRACE"]:
            return None
        minimum = self.application_level

        info = _APPLICATION_LEVELS["INFO"]
        if minimum <= info:
            def keep(line: str) -> bool:
                # Only a JSON object naming a level below INFO can be below the minimum: most lines
                # (INFO and above) are told apart without parsing them.
                if not line.startswith("{") or '"level"' not in line or _BELOW_INFO.search(line) is None:
                    return True
                return _level(line) >= minimum
        else:
            def keep(line: str) -> bool:
                # A JSON object without a level (or with one not known) is INFO, as on Lambda; a line
                # that is not a JSON object is kept whatever the level (the router cannot tell it).
                if not line.startswith("{"):
                    return True
                return _level(line) >= minimum

        return keep


def _level(line: str) -> int:
    """The level of a line that starts with ``{``: its ``"level"`` when a known name, else INFO (and
    a line that is not a JSON object after all counts as INFO too)."""
    try:
        record = json.loads(line)
    except ValueError:
        return _APPLICATION_LEVELS["INFO"]
    level = record.get("level") if isinstance(record, dict) else None
    if not isinstance(level, str):
        return _APPLICATION_LEVELS["INFO"]
    return _LEVEL_ALIASES.get(level.upper(), _APPLICATION_LEVELS["INFO"])


def _with_status(line: str, status: str | None, error_type: str | None) -> str:
    """A Text INIT_REPORT/RESTORE_REPORT line with the ``Status`` and ``Error Type`` of a phase that
    failed or timed out (none of one that went well)."""
    if status is not None:
        line += f"\tStatus: {status}"
        if error_type is not None:
            line += f"\tError Type: {error_type}"
    return line


def _phase_record(record: dict[str, Any], duration: float, status: str | None,
                  error_type: str | None) -> dict[str, Any]:
    """A ``platform.initReport``/``restoreReport`` record: ``record``'s fields, then status, errorType?
    and metrics.durationMs."""
    record["status"] = status or "success"
    if error_type is not None:
        record["errorType"] = error_type
    record["metrics"] = {"durationMs": round(duration * 1000, 3)}
    return record


def _outcome(request_id: str, status: str | None, error_type: str | None,
             function_error: str | None) -> dict[str, Any]:
    """requestId, status (success | error | timeout) and errorType, as the Telemetry API's records."""
    if status is None and function_error is not None:
        status, error_type = "error", function_error
    record: dict[str, Any] = {"requestId": request_id, "status": status or "success"}
    if error_type is not None:
        record["errorType"] = error_type
    return record


TEXT = PlatformLog()
"""The Text format: today's lines, nothing filtered."""
