"""The webhook fast path: a request that came whole in one read (request line, headers and body) to a
webhook route aiohttp has already routed there once is answered on the connection's own protocol, without
aiohttp's request, per-request task and response machinery, which cost a saturated router a sixth to a
fifth of its event loop (bench/RESULTS.md, 2026-12-06, sixth session).

The same ``WebhookSource`` answers it (auth, body limit and budget, pause, event shape, invocation,
response mapping, metrics, logs); only the HTTP framing differs, and it is aiohttp's own where it shows:
the response's headers are made as aiohttp makes them (``Content-Length``, ``Content-Type``, ``Date``,
``Server``, ``Connection``, cookies) and serialized by aiohttp's serializer. Everything else goes to aiohttp
on the same connection, as before: a request whose headers or body are still coming, pipelined requests, a
compressed body, ``Expect``, an upgrade, ``HEAD``, a function URL host, a stream route, a path no request
has been routed by aiohttp to a webhook yet (so the app's own routes and middlewares keep their
precedence), a router that is draining, and anything httptools cannot parse (aiohttp answers it). The
connection's lifecycle stays aiohttp's: the idle timeout, the connection cap and eviction, the send timeout
and a graceful shutdown see a request answered here as one in progress.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING, Any

import httptools
from aiohttp import hdrs, web
from aiohttp import http_parser as aiohttp_http_parser
from aiohttp.helpers import must_be_empty_body, rfc822_formatted_time, should_remove_content_length
from aiohttp.http import SERVER_SOFTWARE, HttpVersion, HttpVersion10, HttpVersion11
from aiohttp.http_writer import _serialize_headers
from multidict import CIMultiDict, CIMultiDictProxy

from router.http.connections import GuardedRequestHandler
from router.http.limits import BodyLimits
from router.http.whole_request import FastRequest

if TYPE_CHECKING:
    from router.http.context import HttpContext
    from router.http.webhook import WebhookSource, WebhookTable

log = logging.getLogger("router.http")

MAX_LINE = 8190
"""aiohttp's limits (``max_line_size``, ``max_field_size``, ``max_headers``): a request past them is
aiohttp's to refuse, as it would without this path."""
MAX_HEADERS = 128
PENDING_LIMIT = 64 * 1024
"""Bytes a client may send while its request is answered here before the connection stops reading."""
_HANDED_OVER = ("content-encoding", "expect", "upgrade")
"""Headers that make a request aiohttp's: it decompresses bodies, answers ``100-continue``, upgrades."""
_SINGLETONS: frozenset[str] = getattr(aiohttp_http_parser, "SINGLETON_HEADERS", frozenset())
"""Headers (lower case) aiohttp refuses twice in a request with 400 (RFC 9110's singletons: aiohttp 3.14 and
later; none before): a request that repeats one is aiohttp's to refuse."""


class _Boundaries:
    """httptools' callbacks counting the requests begun and complete: in what aiohttp's parser was given
    (equal: its parser is between requests), and in one read (``_Message``)."""

    __slots__ = ("begun", "complete")

    def __init__(self) -> None:
        self.begun = 0
        self.complete = 0

    def on_message_begin(self) -> None:
        self.begun += 1

    def on_message_complete(self) -> None:
        self.complete += 1


class _Message(_Boundaries):
    """httptools' callbacks: one request's parts (reset before each)."""

    __slots__ = ("body", "headers", "keep_alive", "method", "parser", "refused", "singletons", "url",
                 "version")

    def __init__(self) -> None:
        super().__init__()
        self.parser: httptools.HttpRequestParser | None = None
        self.reset()

    def reset(self) -> None:
        self.begun = 0
        self.complete = 0
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.singletons: set[str] = set()  # the singleton headers seen (lower case)
        self.body: list[bytes] = []
        self.refused = False  # past aiohttp's limits, a header only aiohttp handles, or one repeated
        self.method = b""
        self.version = ""
        self.keep_alive = False

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_LINE:
            self.refused = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) > MAX_LINE or len(value) > MAX_LINE or len(self.headers) >= MAX_HEADERS:
            self.refused = True
            return
        key = name.decode("utf-8", "surrogateescape")
        lower = key.lower()
        if lower in _HANDED_OVER:
            self.refused = True
        elif lower in _SINGLETONS:
            if lower in self.singletons:
                self.refused = True
            self.singletons.add(lower)
        self.headers.append((key, value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        # read here: once the message is complete, llhttp's flags are the next message's
        parser = self.parser
        assert parser is not None
        self.method = parser.get_method()
        self.version = parser.get_http_version()
        self.keep_alive = parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)


class FastWebhooks:
    """The listener's part: which route a request is for, when it may take the fast path."""

    def __init__(self, table: WebhookTable, ctx: HttpContext, limits: BodyLimits) -> None:
        self.table = table
        self.ctx = ctx
        self.limits = limits
        self.answered = ctx.metrics.webhook_fast_path

    def source_for(self, data: bytes) -> tuple[WebhookSource, Mapping[str, str] | None] | None:
        """The route of the request at the start of ``data`` and what its ``{name}`` parts matched, when
        it may be answered here (its request line only is looked at); None when it is aiohttp's."""
        sp = data.find(b" ", 0, 24)
        if sp <= 0:
            return None
        end = data.find(b" ", sp + 1, sp + 1 + MAX_LINE)
        if end < 0:
            return None
        path = data[sp + 1:end]
        if b"#" in path:  # aiohttp's URL has a fragment: not this path's
            return None
        query = path.find(b"?")
        if query >= 0:
            path = path[:query]
        return self.table.learned((data[:sp], path))


def response_bytes(response: web.Response, method: str, version: HttpVersion, keep_alive: bool) -> bytes:
    """``response`` as aiohttp writes it (``StreamResponse._prepare_headers`` and ``Response._start``) for
    a request with ``method`` and ``version``; raises ``ValueError`` for a header aiohttp will not write
    and ``TypeError`` for a response this path cannot write (a streamed, chunked or compressed one)."""
    body = response.body
    if response.chunked or response.compression or not (body is None or isinstance(body, bytes | bytearray)):
        raise TypeError(f"the fast path writes whole byte bodies only, not {type(response).__name__}")
    headers = response.headers
    status = response.status
    if hdrs.CONTENT_LENGTH in headers:  # Response._start, then StreamResponse._prepare_headers
        if should_remove_content_length(method, status):
            del headers[hdrs.CONTENT_LENGTH]
    else:
        length = len(body) if body else 0
        if length or (status != 304 and method != hdrs.METH_HEAD):
            headers[hdrs.CONTENT_LENGTH] = str(length)
    cookies: SimpleCookie = response.cookies
    for cookie in cookies.values():
        headers.add(hdrs.SET_COOKIE, cookie.output(header="")[1:])
    empty = must_be_empty_body(method, status)
    if empty:
        if hdrs.CONTENT_LENGTH in headers and should_remove_content_length(method, status):
            del headers[hdrs.CONTENT_LENGTH]
        headers.popall(hdrs.TRANSFER_ENCODING, None)
    elif response.content_length != 0:
        headers.setdefault(hdrs.CONTENT_TYPE, "application/octet-stream")
    if hdrs.DATE not in headers:
        headers[hdrs.DATE] = rfc822_formatted_time()
    headers.setdefault(hdrs.SERVER, SERVER_SOFTWARE)
    if hdrs.CONNECTION not in headers:
        if keep_alive:
            if version == HttpVersion10:
                headers[hdrs.CONNECTION] = "keep-alive"
        elif version == HttpVersion11:
            headers[hdrs.CONNECTION] = "close"
    head: bytes = _serialize_headers(f"HTTP/{version[0]}.{version[1]} {status} {response.reason}", headers)
    return head if empty or not body else head + bytes(body)


class FastRequestHandler(GuardedRequestHandler):
    """aiohttp's per-connection protocol (with the guards), answering whole webhook requests itself."""

    def __init__(self, manager: web.Server, *, fast: FastWebhooks, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._fast = fast
        self._fast_task: asyncio.Task[None] | None = None
        self._fast_pending = bytearray()
        self._fast_paused = False
        self._fast_parser: httptools.HttpRequestParser | None = None
        self._fast_message = _Message()
        # What aiohttp's parser was given, parsed again to know where its requests end: the fast path
        # takes a request only at a boundary of both (never the rest of one aiohttp began to read).
        self._aiohttp_seen = _Boundaries()
        self._aiohttp_shadow: httptools.HttpRequestParser | None = None
        self._fast_off = False  # what aiohttp was given could not be followed: aiohttp's for good
        self._fast_peer: str | None = None  # the client's address (aiohttp's request.remote), looked up once
        self._fast_peer_known = False

    def between_requests(self) -> bool:
        return self._fast_task is None and super().between_requests()

    def data_received(self, data: bytes) -> None:
        if self._fast_task is not None:  # a request is answered here: the next waits for its turn
            if not (self._force_close or self._close):
                self._fast_pending += data
                if len(self._fast_pending) > PENDING_LIMIT and not self._fast_paused and self.transport:
                    self._fast_paused = True
                    self.transport.pause_reading()
            return
        if not self._take(data):
            self._to_aiohttp(data)

    def _to_aiohttp(self, data: bytes) -> None:
        if not self._fast_off:
            shadow = self._aiohttp_shadow
            if shadow is None:
                shadow = self._aiohttp_shadow = httptools.HttpRequestParser(self._aiohttp_seen)
            try:
                shadow.feed_data(data)
            except httptools.HttpParserError:  # an upgrade, or bytes aiohttp answers with a 400
                self._fast_off = True
        super().data_received(data)

    def _take(self, data: bytes) -> bool:
        """Answer ``data`` here if it is one whole request the fast path takes; False: aiohttp's."""
        if (self._force_close or self._close or self._fast_off or self._messages
                or self._header_timer is not None or self._payload_parser is not None or self._upgraded):
            return False
        seen = self._aiohttp_seen
        if seen.begun != seen.complete:  # aiohttp's parser holds the start of a request
            return False
        if seen.complete:  # aiohttp has had requests here: it must be waiting for the next one
            waiter = self._waiter
            if waiter is None or waiter.done() or self._request_in_progress:
                return False
        if not super().between_requests():
            return False
        fast = self._fast
        routed = fast.source_for(data)
        if routed is None or b"\r\n\r\n" not in data or fast.ctx.readiness.shutting_down:
            return False
        message = self._fast_message
        message.reset()
        parser = self._fast_parser
        if parser is None:
            parser = self._fast_parser = message.parser = httptools.HttpRequestParser(message)
        try:
            parser.feed_data(data)
        except httptools.HttpParserError:  # aiohttp answers it (400) or handles it (an upgrade)
            self._fast_parser = None
            return False
        if message.complete != 1 or message.begun != 1:  # a body still coming, or pipelined requests
            self._fast_parser = None  # its state is inside a request: not reused
            return False
        if message.refused:
            return False
        headers = CIMultiDictProxy(CIMultiDict(message.headers))
        host = headers.get(hdrs.HOST)
        transport = self.transport
        if host is None or ".lambda-url." in host or transport is None:
            return False
        body = b"".join(message.body)
        if len(body) > fast.ctx.config.server.max_body:
            return False  # aiohttp's path answers it (the route's 413)
        if message.version == "1.1":
            version = HttpVersion11
        elif message.version == "1.0":
            version = HttpVersion10
        else:
            return False
        if not self._fast_peer_known:
            peer = transport.get_extra_info("peername")
            self._fast_peer = (str(peer[0]) if isinstance(peer, list | tuple)
                               else None if peer is None else str(peer))
            self._fast_peer_known = True
        remote = self._fast_peer
        request = FastRequest(message.method.decode("ascii"), message.url.decode("utf-8", "surrogateescape"),
                              headers, host, remote, version, transport, message.keep_alive)
        fast.answered.inc()
        # aiohttp's bookkeeping of a request in progress: the idle timer stops, shutdown waits for it
        self._request_count += 1
        if self._manager is not None:
            self._manager.requests_count += 1
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
            self._keepalive_handle = None
        self._request_in_progress = True
        source, params = routed
        self._fast_task = self._loop.create_task(self._answer(source, params, request, body))
        return True

    async def _answer(self, source: WebhookSource, params: Mapping[str, str] | None, request: FastRequest,
                      body: bytes) -> None:
        keep_alive = False
        try:
            try:
                response, request_id = await source.answer(request, body, self._fast.limits, params)
            except Exception:
                log.exception("unhandled error in HTTP handler", extra={"event": request.method})
                request_id = ""
                response = web.json_response({"message": "Internal Server Error"}, status=500)
            keep_alive = (request.keep_alive and response.keep_alive is not False
                          and not (self._force_close or self._close)
                          and not self._fast.ctx.readiness.shutting_down)
            try:
                data = response_bytes(response, request.method, request.version, keep_alive)
            except (ValueError, TypeError) as exc:
                response = source.unwritable(exc, request_id)
                data = response_bytes(response, request.method, request.version, keep_alive)
            transport = self.transport
            if transport is None or transport.is_closing():
                source.lost(ConnectionResetError("the connection closed"), request_id)
                keep_alive = False
                return
            transport.write(data)
            source.sent(response.status)
            if self._paused:
                await self._drain_helper()  # bounded by the send timeout (the guard's)
        except ConnectionError as exc:
            source.lost(exc, request_id)
            keep_alive = False
        finally:
            self._fast_task = None
            self._request_in_progress = False
            waiter = self._handler_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            self._after(keep_alive)

    def _after(self, keep_alive: bool) -> None:
        """A request answered here: the connection waits for the next (aiohttp's idle timer) or closes."""
        transport = self.transport
        if transport is None:
            return
        if not keep_alive or self._force_close or self._close:
            self._close = True
            self._fast_pending.clear()
            transport.close()  # once what was written is sent
            return
        close_time = self._loop.time() + self._keepalive_timeout
        self._next_keepalive_close_time = close_time
        if self._keepalive_handle is None:
            self._keepalive_handle = self._loop.call_at(close_time, self._process_keepalive)
        if self._fast_paused:
            self._fast_paused = False
            transport.resume_reading()
        if self._fast_pending:
            pending = bytes(self._fast_pending)
            self._fast_pending.clear()
            self.data_received(pending)

    async def shutdown(self, timeout: float | None = 15.0) -> None:  # noqa: ASYNC109 - aiohttp's signature
        await super().shutdown(timeout)  # waits for a request answered here, as for aiohttp's own
        task = self._fast_task
        if task is not None:  # still running past the timeout: cancelled, as aiohttp's handlers are
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
