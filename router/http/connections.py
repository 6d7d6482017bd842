"""Connection-level guards of the HTTP front: a cap on open connections and a header timeout.

aiohttp's ``RequestHandler`` (one per connection) closes idle keep-alive connections
(``keepalive_timeout``, our ``server.idle_timeout``, which also bounds the wait for the first request
of a connection) but has no header timeout and no connection cap: a client trickling its headers one
byte every few seconds, or thousands of such clients, held connections, memory and file descriptors
for an hour. ``GuardedRequestHandler`` adds both; ``GuardedAppRunner`` makes aiohttp build it.

- Header timeout: once the first byte of a request has arrived on a connection that is between
  requests, its request line and headers must be complete within ``header_timeout`` and
  ``MAX_HEADER_BYTES``, or the connection is closed. (A request pipelined behind one being handled is
  bounded by the idle timeout instead.)
- Cap: at most ``cap`` connections per listener. A new one beyond it first makes room by closing the
  oldest connection that is between requests (idle, or still sending its headers: a slow or hostile
  client, never one whose request is being handled); when there is none, the new connection gets a
  503 and is closed at once. Either way it is counted.

- Send timeout: while a client does not take a response (aiohttp waits for the socket to drain), each
  wait is bounded by ``send_timeout`` (``server.body_timeout``), then the connection is closed.

Body timeouts and the memory budget for bodies are in ``router.http.limits``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from router.metrics import Metrics

log = logging.getLogger("router.http")

_OVER_CAP_BODY = b'{"message":"Service Unavailable: too many connections; retry later"}'
_OVER_CAP = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_OVER_CAP_BODY), _OVER_CAP_BODY)
)
MAX_HEADER_BYTES = 64 * 1024
"""A request whose line and headers take more than this (API Gateway allows 10,240 bytes) is closed:
aiohttp limits each line (8,190 bytes) and their number (128), not their total, about 1 MB."""
MALFORMED_LOG_INTERVAL = 10.0
"""Malformed requests (a client's junk: a bad request line, a bad header) are logged at most once per
this many seconds, with how many there were, instead of a traceback each (a log flood on demand)."""
_EVICT_SCAN = 64
"""At most this many connections are looked at to find one to evict; busy ones move to the back."""


class ConnectionGuard:
    """Counts one listener's open connections against its cap, and finds one to evict at the cap."""

    def __init__(self, listener: str, cap: int, metrics: Metrics, header_timeout: float,
                 send_timeout: float) -> None:
        self.listener = listener
        self.cap = cap
        self.header_timeout = header_timeout
        self.send_timeout = send_timeout
        self._open: OrderedDict[GuardedRequestHandler, None] = OrderedDict()  # oldest first
        self._gauge = metrics.http_connections.labels(listener)
        metrics.http_connections_limit.labels(listener).set(cap)
        self._closed = {reason: metrics.http_connections_closed.labels(listener, reason)
                        for reason in ("over_cap", "evicted", "header_timeout", "headers_too_large",
                                       "send_timeout", "malformed")}
        self._malformed = 0  # since the last log line
        self._malformed_logged = -MALFORMED_LOG_INTERVAL

    @property
    def open(self) -> int:
        return len(self._open)

    def admit(self, handler: GuardedRequestHandler) -> bool:
        """Register ``handler``'s new connection; False (counted) when the cap leaves no room."""
        if len(self._open) >= self.cap and not self._evict_one():
            self._closed["over_cap"].inc()
            return False
        self._open[handler] = None
        self._gauge.set(len(self._open))
        return True

    def release(self, handler: GuardedRequestHandler) -> None:
        if self._open.pop(handler, 0) is None:
            self._gauge.set(len(self._open))

    def closed(self, reason: str) -> None:
        self._closed[reason].inc()

    def malformed(self, exc: HttpProcessingError) -> None:
        """A request aiohttp could not parse (it answers 400 and closes): counted, and logged once per
        ``MALFORMED_LOG_INTERVAL`` without the request's bytes (they may hold anything)."""
        self._closed["malformed"].inc()
        self._malformed += 1
        now = time.monotonic()
        if now - self._malformed_logged >= MALFORMED_LOG_INTERVAL:
            log.warning("http: %d malformed request(s) on the %s listener in the last %.0f s "
                        "(the latest: %s, answered %s and closed)", self._malformed, self.listener,
                        min(now - self._malformed_logged, MALFORMED_LOG_INTERVAL), type(exc).__name__,
                        exc.code)
            self._malformed = 0
            self._malformed_logged = now

    def _evict_one(self) -> bool:
        for _ in range(min(_EVICT_SCAN, len(self._open))):
            oldest = next(iter(self._open))
            if oldest.between_requests():
                self.release(oldest)
                oldest.force_close()
                self._closed["evicted"].inc()
                return True
            self._open.move_to_end(oldest)
        return False


class GuardedRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol, with the header timeout and the cap of ``ConnectionGuard``."""

    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._admitted = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._requests_at_arm = 0
        self._header_bytes = 0
        self._last_payload: Any = None  # the body stream of the newest request parsed

    def between_requests(self) -> bool:
        """True while no request is being handled or waiting to be, and the last one's body has been
        received (idle, or reading the next request's headers; not while aiohttp reads and drops the
        rest of a body that was answered early)."""
        return (self._admitted and not self._request_in_progress and not self._messages
                and (self._last_payload is None or self._last_payload.is_eof()))

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """A request aiohttp could not parse is the client's fault: a JSON error without the request's
        bytes (aiohttp's own page echoes them) and a counted, rate-limited log line (aiohttp logs a
        traceback per request: a log flood on demand). Anything else is aiohttp's own handling."""
        if not isinstance(exc, HttpProcessingError) or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        self._guard.malformed(exc)
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Bad Request"
        response = web.json_response({"message": phrase}, status=status)
        response.force_close()
        return response

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._guard.admit(self):
            # Answered before reading anything: the client learns why, and the descriptor is freed now.
            transport.write(_OVER_CAP)  # type: ignore[attr-defined]
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return  # refused at the cap: aiohttp never saw it
        self._admitted = False
        self._cancel_header_timer()
        self._guard.release(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        starts = bool(data) and self._header_timer is None and self.between_requests()
        count = self._request_count
        super().data_received(data)
        if self._request_count > count:
            self._cancel_header_timer()  # headers complete: the handler (or aiohttp's 400) takes over
            if self._messages:
                self._last_payload = self._messages[-1][1]
        elif starts and not (self._force_close or self._close):
            # The first bytes of a new request, its headers not complete yet: they must be in time.
            self._requests_at_arm = count
            self._header_bytes = len(data)
            self._header_timer = self._loop.call_later(self._guard.header_timeout, self._headers_late)
        elif self._header_timer is not None:
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES and self.between_requests():
                self._cancel_header_timer()
                self._guard.closed("headers_too_large")
                self.force_close()

    async def _drain_helper(self) -> None:
        """aiohttp waits here while the client does not take what is written: bounded, so a client that
        stops reading a large response does not hold the connection and the response for ever."""
        if not self._paused or self.transport is None:
            return await super()._drain_helper()
        try:
            async with asyncio.timeout(self._guard.send_timeout):
                await super()._drain_helper()
        except TimeoutError:
            self._guard.closed("send_timeout")
            self.force_close()
            raise ConnectionResetError("the client did not take the response in time") from None

    def force_close(self) -> None:
        """aiohttp's, but with unsent data the transport is aborted: its close() would wait for a client
        that does not read to take it, keeping the descriptor (and the data) for ever."""
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size():
            transport.abort()
        super().force_close()

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._request_count > self._requests_at_arm or not self.between_requests():
            return
        log.debug("closing a connection whose request headers did not arrive within %gs",
                  self._guard.header_timeout)
        self._guard.closed("header_timeout")
        self.force_close()

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None


class GuardedServer(web.Server):
    """aiohttp's low-level server, building ``GuardedRequestHandler``s (or ``protocol``, a subclass,
    given ``protocol_kwargs`` too)."""

    def __init__(self, *args: Any, guard: ConnectionGuard,
                 protocol: type[GuardedRequestHandler] = GuardedRequestHandler,
                 protocol_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard
        self._protocol = protocol
        self._protocol_kwargs = protocol_kwargs or {}

    def __call__(self) -> RequestHandler:
        return self._protocol(self, loop=self._loop, guard=self.guard, **self._protocol_kwargs,
                              **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """``web.AppRunner`` whose server is a ``GuardedServer``: everything else (startup, ordered
    cleanup, shutdown timeout) is aiohttp's own."""

    def __init__(self, app: web.Application, *, guard: ConnectionGuard,
                 protocol: type[GuardedRequestHandler] = GuardedRequestHandler,
                 protocol_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = guard
        self._protocol = protocol
        self._protocol_kwargs = protocol_kwargs

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's startup and freezes it
        return GuardedServer(
            plain.request_handler, request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation, guard=self.guard, protocol=self._protocol,
            protocol_kwargs=self._protocol_kwargs, **plain._kwargs,
        )
