"""Answering a caller from a function's streamed response (README "Response streaming"): the invocation
runs in a task this module owns while the answer is written from its ``ResponseStream``.

``StreamedCall`` is an async context manager: ``streams()`` waits until the function either begins
to stream (True: iterate ``stream``) or ends without streaming (False: answer ``result()`` whole).
Leaving it while the invocation still runs (the caller went away) drops the rest of the stream and
waits for the function to finish; a cancelled handler cancels the invocation too.

``HttpPrelude`` reads the ``application/vnd.awslambda.http-integration-response`` prelude (a JSON
object with ``statusCode``, ``headers``, ``cookies``, then 8 NUL bytes) from the first chunks.
"""

from __future__ import annotations

import asyncio
import json
from types import TracebackType
from typing import Any, Protocol

from router.invocation import Invocation, Result
from router.response_stream import ResponseStream

HTTP_INTEGRATION_RESPONSE = "application/vnd.awslambda.http-integration-response"
PRELUDE_DELIMITER = b"\0" * 8
PRELUDE_LIMIT = 64 * 1024
"""Largest prelude read before the body; a longer one is malformed."""


class Invoker(Protocol):
    async def invoke(self, inv: Invocation) -> Result: ...


class StreamedCall:
    """One invocation whose caller takes its response as it streams (see the module doc)."""

    def __init__(self, dispatcher: Invoker, inv: Invocation) -> None:
        self.stream = ResponseStream()
        inv.stream = self.stream
        self._dispatcher = dispatcher
        self._inv = inv
        self._task: asyncio.Task[Result] | None = None

    async def __aenter__(self) -> StreamedCall:
        self._task = asyncio.create_task(self._dispatcher.invoke(self._inv),
                                         name=f"invoke {self._inv.function} {self._inv.request_id}")
        return self

    async def streams(self) -> bool:
        """True once the function has streamed a first byte (or ended a streamed body cleanly); False
        when the invocation ended otherwise (a buffered function, an error before any byte)."""
        task = self._task
        assert task is not None
        started = asyncio.create_task(self.stream.started())
        try:
            await asyncio.wait((task, started), return_when=asyncio.FIRST_COMPLETED)
        finally:
            started.cancel()
            await asyncio.wait((started,))
        stream = self.stream
        if not stream.opened:
            return False
        if not task.done() or stream.has_data:
            return True
        return not stream.failed

    async def result(self) -> Result:
        """The invocation's result (raises what the dispatcher raised: a refusal)."""
        assert self._task is not None
        return await self._task

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        task = self._task
        if task is None:
            return
        if not task.done():
            self.stream.discard()
            if exc is not None and not isinstance(exc, Exception):
                task.cancel()  # the handler itself is cancelled (shutdown)
            try:
                await asyncio.wait((task,))
            finally:
                if not task.done():
                    task.cancel()
                    await asyncio.wait((task,))
        if not task.cancelled():
            task.exception()  # retrieved: the answer has been given (or the caller is gone)


class MalformedPrelude(ValueError):
    """Raised when an http-integration-response prelude is not a JSON object ended by 8 NUL bytes."""


class HttpPrelude:
    """Reads the http-integration-response prelude from the first chunks of a stream."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> tuple[dict[str, Any], bytes] | None:
        """The prelude and the body bytes after it once the delimiter has come, else None (more is
        needed). Raises MalformedPrelude."""
        self._buffer += chunk
        at = self._buffer.find(PRELUDE_DELIMITER)
        if at < 0:
            if len(self._buffer) > PRELUDE_LIMIT:
                raise MalformedPrelude(f"no 8 NUL bytes after the first {PRELUDE_LIMIT} bytes")
            return None
        try:
            prelude = json.loads(self._buffer[:at]) if at else {}
        except ValueError as exc:
            raise MalformedPrelude(f"the prelude is not JSON: {exc}") from None
        if not isinstance(prelude, dict):
            raise MalformedPrelude("the prelude is not a JSON object")
        return prelude, self._buffer[at + len(PRELUDE_DELIMITER):]

    def unfinished(self) -> bytes:
        """What was read when the stream ended before the delimiter."""
        return self._buffer
