"""Invocation and Result: what flows from sources through the dispatcher to invokers and back."""

from __future__ import annotations

import enum
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from router.redaction import redact
from router.response_stream import ResponseStream

InvocationType = Literal["sync", "async"]

PAYLOAD_LIMIT = 6 * 1024 * 1024
"""Lambda's 6 MB: the largest request of a synchronous invocation, and of a batch an event source hands a
function; the default of ``server.max_body``."""
RESPONSE_LIMIT = PAYLOAD_LIMIT + 100
"""The largest response a function may return: Lambda's is 100 bytes over its request limit ("Response
payload size exceeded maximum allowed payload size (6291556 bytes).")."""


class Outcome(enum.StrEnum):
    """Label value of ``router_invocations_total{outcome}``."""

    SUCCESS = "success"
    ERROR = "error"
    TIMEOUT = "timeout"
    THROTTLED = "throttled"


class ErrorType(enum.StrEnum):
    """The closed set of error kinds shared by logs and metrics (STYLE: Errors and logs)."""

    TIMEOUT = "timeout"
    THROTTLED = "throttled"
    CONNECTION = "connection"
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    HANDLER = "handler"
    DECODE = "decode"
    CONFIG = "config"


_RANDOM = 4096
"""Random bytes drawn from the OS at a time for request ids (256 ids a ``getrandom`` call, not one each)."""


class _RequestIds:
    """Version 4 UUIDs as ``uuid.uuid4`` makes them (122 random bits from ``os.urandom``), drawn from a
    buffer of random bytes and formatted without a ``UUID`` object: the router makes one an invocation.
    A forked child starts with a buffer of its own (it must not hand out its parent's ids)."""

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._pool, self._at = b"", 0

    def __call__(self) -> str:
        at = self._at
        if at >= len(self._pool):
            self._pool, at = os.urandom(_RANDOM), 0
        self._at = at + 16
        h = self._pool[at:at + 16].hex()
        # the version nibble (4) and the variant's two top bits (10), as uuid.UUID(version=4) sets them
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_VARIANT = {f"{n:x}": f"{8 | (n & 3):x}" for n in range(16)}

new_request_id = _RequestIds()
"""A new request id: a random (version 4) UUID in its usual text form."""


@dataclass(slots=True)
class Invocation:
    """One call of one function with one event payload.

    ``payload`` is the event as JSON bytes, exactly as the handler will receive it. ``request_id`` stays
    the same across the retries of an async invocation. ``source`` is a metric label: webhook, schedule,
    invoke_api, cli, function (a destination), sqs, ...
    """

    function: str
    payload: bytes
    source: str
    route: str | None = None
    request_id: str = field(default_factory=new_request_id)
    invocation_type: InvocationType = "sync"
    attempt: int = 1
    log_tail: bool = False
    client_context: str | None = None  # base64 JSON, as X-Amz-Client-Context
    enqueued_at: float = field(default_factory=time.time)  # wall clock, for event age
    # The X-Ray trace header the event came with (``router.lineage``: its ``Lineage`` counts the chain's
    # hops); the dispatcher replaces it with the header of this invocation before the invoker runs.
    trace_id: str | None = None
    qualifier: str | None = None  # a version number or alias asked for (None: $LATEST)
    version: str | None = None  # the published version that runs, set by the dispatcher (None: $LATEST)
    invoked_arn: str | None = None  # the qualified ARN the function was invoked by (None: unqualified)
    stream: ResponseStream | None = None  # the caller takes a streamed response (router.response_stream)

    def event(self) -> Any:
        return json.loads(self.payload)


@dataclass(slots=True)
class Result:
    """What an invoker returns. ``payload`` is the response JSON bytes; on a function error it is
    Lambda's error object ``{"errorType", "errorMessage", "stackTrace"}`` as JSON bytes.

    ``retryable`` tells the async path whether another attempt may help (a 400 from an http target is
    not); ``throttle`` marks results that must not use up a retry (DESIGN §4.1); ``retry_after`` is a
    hint in seconds (an http target's Retry-After).
    """

    payload: bytes
    outcome: Outcome = Outcome.SUCCESS
    function_error: str | None = None  # "Unhandled" for X-Amz-Function-Error, None on success
    error_type: ErrorType | None = None
    retryable: bool = True
    throttle: bool = False
    retry_after: float | None = None
    status_code: int = 200
    executed_version: str = "$LATEST"
    log_text: str = ""  # this invocation's log lines (for X-Amz-Log-Type: Tail); read them as ``logs``
    duration: float = 0.0  # seconds from handing the event over to reading its result, by the router's clock
    # Seconds the function's runtime held the event by its own clock (the router's own bootstraps say;
    # None otherwise): unlike ``duration``, without the time a result waited for a busy router to read it.
    runtime_duration: float | None = None
    # Set by an environment that writes the invocation's END and REPORT just after the answer instead of
    # before it (router.runtime.environment): ``logs`` runs it first, so no reader sees them missing.
    finish_logs: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SUCCESS

    @property
    def logs(self) -> str:
        """This invocation's log lines: the init's of a cold start, START, the function's output, END and
        REPORT (what ``X-Amz-Log-Type: Tail`` returns and the history keeps)."""
        finish = self.finish_logs
        if finish is not None:
            self.finish_logs = None
            finish()
        return self.log_text

    @logs.setter
    def logs(self, text: str) -> None:
        self.log_text = text

    def _error_object(self) -> dict[str, Any] | None:
        try:
            body = json.loads(self.payload)
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def error_message(self, limit: int = 300) -> str:
        """The ``errorMessage`` of Lambda's error object in ``payload`` (first ``limit`` characters), or
        the outcome's name when the payload is not one."""
        body = self._error_object()
        text = body.get("errorMessage") if body is not None else None
        return str(text)[:limit] if text else self.outcome.value

    def error_name(self) -> str | None:
        """The ``errorType`` of Lambda's error object in ``payload`` (``Runtime.ImportModuleError``), or
        None when the payload is not one or names none."""
        body = self._error_object()
        name = body.get("errorType") if body is not None else None
        return name if isinstance(name, str) and name else None

    def error_summary(self, limit: int = 200) -> str:
        """``errorType: errorMessage`` of an error result (first ``limit`` characters), or the outcome's
        name when the payload is not Lambda's error object."""
        body = self._error_object()
        if body is None:
            return self.outcome.value[:limit]
        return f"{body.get('errorType', 'Error')}: {body.get('errorMessage', '')}"[:limit]

    @classmethod
    def error(
        cls,
        error_type_name: str,
        message: str,
        *,
        outcome: Outcome = Outcome.ERROR,
        error_type: ErrorType = ErrorType.HANDLER,
        stack: list[str] | None = None,
        **kw: Any,
    ) -> Result:
        """An error result with Lambda's error shape, for errors the router itself detects."""
        body: dict[str, Any] = {"errorMessage": redact(message), "errorType": error_type_name}
        if stack is not None:
            body["stackTrace"] = stack
        return cls(
            payload=json.dumps(body).encode(),
            outcome=outcome,
            function_error=kw.pop("function_error", "Unhandled"),
            error_type=error_type,
            **kw,
        )
