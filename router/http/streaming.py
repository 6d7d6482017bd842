"""Answering a caller from a function's streamed response (README "Response streaming"): the invocation
runs in a task this module owns while the answer is written from its ``ResponseStream``.

``StreamedCall`` is an async context manager: ``streams()`` waits until the function either begins
to stream (True: iterate ``stream``) or ends without streaming (False: answer ``result()`` whole).
Leaving it while the invocation still runs (the caller went away) drops the rest of the stream and
waits for the function to finish; a cancelled handler cancels the invocation too.

``write_streamed`` answers an HTTP request from the stream: status, headers and cookies from the
prelude when the content type is ``application/vnd.awslambda.http-integration-response``, else 200 with
the stream's content type; the body chunked as it comes. A function that fails after the first byte
cuts the answer short (the connection is closed without the last chunk), as Lambda's URL does.

``HttpPrelude`` reads the ``application/vnd.awslambda.http-integration-response`` prelude (a JSON
object with ``statusCode``, ``headers``, ``cookies``, then 8 NUL bytes) from the first chunks.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Protocol

from aiohttp import web

from router.invocation import Invocation, Result
from router.response_stream import ResponseStream

log = logging.getLogger("router.http.streaming")

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


async def write_streamed(request: web.Request, call: StreamedCall, *, headers: Mapping[str, str],
                         decorate: Callable[[web.StreamResponse], object],
                         on_malformed: Callable[[str], None], where: str,
                         extra: Mapping[str, Any]) -> web.StreamResponse | None:
    """Answer ``request`` from ``call``'s stream (``call.streams()`` said True); ``headers`` are added to
    the function's, then ``decorate`` sees the response before it is sent. None, with nothing sent,
    when the prelude is malformed (``on_malformed`` says why) or the function failed before it ended:
    the caller answers its error instead."""
    stream = call.stream
    cookies: list[str] = []
    status, out_headers, first = 200, {"Content-Type": stream.content_type}, b""
    if stream.content_type == HTTP_INTEGRATION_RESPONSE:
        got = await _read_prelude(call, on_malformed)
        if got is None:
            return None
        status, out_headers, cookies, first = got
    response = web.StreamResponse(status=status)
    try:
        response.headers.update(out_headers)
        for cookie in cookies:
            response.headers.add("Set-Cookie", cookie)
        response.headers.update(headers)
        decorate(response)
        await response.prepare(request)
    except ValueError as exc:  # a header aiohttp will not write (CR/LF in it): nothing was sent
        on_malformed(f"a header of the prelude cannot be sent ({exc})")
        return None
    except ConnectionError:
        log.info("%s: the client went away before the response streamed", where, extra=extra)
        return response
    try:
        if first:
            await response.write(first)
        async for chunk in stream:
            await response.write(chunk)
    except ConnectionError:
        log.info("%s: the client went away while the response streamed", where, extra=extra)
        return response
    result = await call.result()
    if result.function_error or not result.ok:
        log.warning("%s: the function failed while its response streamed, the response is cut short: %s",
                    where, result.error_summary(), extra={**extra, "error_type": "handler"})
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response


async def _read_prelude(call: StreamedCall, on_malformed: Callable[[str], None]
                        ) -> tuple[int, dict[str, str], list[str], bytes] | None:
    """Status, headers, cookies and the first body bytes from the http-integration-response prelude;
    None when it is malformed (``on_malformed`` says why) or the function failed before it ended."""
    prelude = HttpPrelude()
    try:
        async for chunk in call.stream:
            got = prelude.feed(chunk)
            if got is not None:
                break
        else:
            result = await call.result()
            if result.ok and not result.function_error:
                on_malformed("the stream ended before the 8 NUL bytes that end the prelude")
            return None
    except MalformedPrelude as exc:
        on_malformed(f"http-integration-response prelude: {exc}")
        return None
    meta, first = got
    status = meta.get("statusCode", 200)
    headers = meta.get("headers") or {}
    cookies = meta.get("cookies") or []
    if (not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599
            or not isinstance(headers, dict) or not isinstance(cookies, list)):
        on_malformed("http-integration-response prelude: statusCode must be an integer from 100 to 599, "
                     "headers an object and cookies a list")
        return None
    return status, {str(k): str(v) for k, v in headers.items()}, [str(c) for c in cookies], first
