"""Structured logs: one JSON object a line, with route, function, request_id, attempt, error_type."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

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
    def format(self, record: logging.LogRecord) -> str:
        ctx = " ".join(
            f"{k}={record.__dict__[k]}" for k in CONTEXT_FIELDS if record.__dict__.get(k) is not None
        )
        base = f"{record.levelname.lower():7} {record.name}: {record.getMessage()}"
        text = f"{base} [{ctx}]" if ctx else base
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(level: str = "info", fmt: str = "json") -> None:
    """Configure the root logger to write one record a line to stderr."""
    # No caller, thread or process lookups per record: the lines never show them, and they cost
    # a frame walk on every log call (the documented way to skip them).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "apscheduler", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
