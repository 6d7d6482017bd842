"""Structured logs: one JSON object a line, with route, function, request_id, attempt, error_type.

Records are written by a ``LoopBufferedHandler``: on the event loop, info lines go out together, at most
``FLUSH_DELAY`` after the first of them or once ``FLUSH_LINES`` are waiting (an invocation logs START,
END and REPORT; under load many invocations share a write); warnings and errors (with the lines before
them), and records logged outside the loop, are written at once.
``FunctionLog`` writes the lines of function output and START/END/REPORT, the hot path's log lines,
straight into that handler without building a ``LogRecord`` each, in exactly the format the
formatters give; with any other logging set-up (a test's capture handler, say) it logs them normally.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from router.redaction import REDACTOR

_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii

# Fields passed through ``extra=`` that belong in the JSON object.
CONTEXT_FIELDS = ("route", "function", "request_id", "attempt", "error_type", "source", "status", "event")


class JsonFormatter(logging.Formatter):
    """One JSON object a line. The hot path logs three lines an invocation (START, END, REPORT), so the
    second-resolution part of the timestamp is cached."""

    _second = -1
    _stamp = ""

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def line(self, created: float, logger: str, message: str, function: str, request_id: str | None) -> str:
        """The same line ``format`` gives for an info record with these fields, built directly."""
        # json.dumps of a str with the default ensure_ascii is this C function, without the wrapper's cost.
        quote = _quote
        rid = "" if request_id is None else f", \"request_id\": {quote(request_id)}"
        return (f'{{"time": "{self._time(created)}", "level": "info", "logger": "{logger}", '
                f'"message": {quote(message)}, "function": {quote(function)}{rid}}}')

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def line(self, created: float, logger: str, message: str, function: str, request_id: str | None) -> str:
        """The same line ``format`` gives for an info record with these fields, built directly."""
        ctx = f"function={function}" if request_id is None else f"function={function} request_id={request_id}"
        return f"info    {logger}: {message} [{ctx}]"

    def format(self, record: logging.LogRecord) -> str:
        ctx = " ".join(
            f"{k}={record.__dict__[k]}" for k in CONTEXT_FIELDS if record.__dict__.get(k) is not None
        )
        base = f"{record.levelname.lower():7} {record.name}: {record.getMessage()}"
        text = f"{base} [{ctx}]" if ctx else base
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


FLUSH_DELAY = 0.005
"""Seconds an info line may wait for others to share its write: one write a loop iteration cost a
saturated router ~3 % of its event loop (writes, flushes); at most this late, a line is still in order."""
FLUSH_LINES = 512
"""Lines waiting that are written at once (the buffer is bounded)."""


class LoopBufferedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes info records in batches, warnings and errors at once (see the module doc)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.add(line, urgent=record.levelno >= logging.WARNING)

    def add(self, line: str, *, urgent: bool = False) -> None:
        """Queue one formatted line (the handler's lock is taken here)."""
        with self._guard:
            self._lines.append(line)
            if urgent or len(self._lines) >= FLUSH_LINES:
                self._write()
                return
            if self._scheduled:
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not on the event loop (a thread, start-up, shutdown): write now
                self._write()
                return
            self._scheduled = True
            loop.call_later(FLUSH_DELAY, self.flush)

    @property
    def _guard(self) -> threading.RLock:
        assert self.lock is not None
        return self.lock

    def flush(self) -> None:
        with self._guard:
            self._write()
            super().flush()

    def _write(self) -> None:
        self._scheduled = False
        if not self._lines:
            return
        text = "\n".join(self._lines) + "\n"
        self._lines.clear()
        if REDACTOR.active:  # no secret of the config reaches the log, whoever wrote the line
            text = REDACTOR(text)
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # the log stream is gone: nowhere left to say so
            pass


class FunctionLog:
    """The log lines of function output and START/END/REPORT, written fast (see the module doc)."""

    def __init__(self, name: str = "router.function") -> None:
        self.name = name
        self.logger = logging.getLogger(name)

    def line(self, message: str, function: str, request_id: str | None) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        root = logging.root
        handlers = root.handlers
        if len(handlers) == 1 and not logger.handlers and logger.propagate and not root.filters:
            handler = handlers[0]
            formatter = handler.formatter
            if isinstance(handler, LoopBufferedHandler) and not handler.filters and isinstance(
                    formatter, JsonFormatter | TextFormatter):
                handler.add(formatter.line(time.time(), self.name, message, function, request_id))
                return
        logger.info(message, extra={"function": function, "request_id": request_id})


def setup_logging(level: str = "info", fmt: str = "json") -> None:
    """Configure the root logger to write one record a line to stderr."""
    # No caller, thread or process lookups per record: the lines never show them, and they cost
    # a frame walk on every log call (the documented way to skip them).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = LoopBufferedHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "apscheduler", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
