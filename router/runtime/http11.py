"""A lean HTTP/1.1 server transport for the Runtime API: an ``asyncio.Protocol`` per connection.

Made for a few loopback clients exchanging small requests, where a general web framework costs more
CPU than the work itself. httptools (llhttp, as uvicorn uses) parses; the ``Handler`` answers each
complete request with ``Connection.respond`` (one ``transport.write`` per response), at once or later
(the long-polled ``/invocation/next``). Requests on one connection are answered in order; while one
waits, later ones queue (reading pauses, so the queue stays short). Supported: Content-Length and
chunked bodies, keep-alive, ``Connection: close``, HTTP/1.0, ``Expect: 100-continue``. A body over
``max_body`` is not kept: the handler sees ``body=None`` as soon as the size is known, the answer
closes the connection, and the rest of the body is read and dropped for at most ``LINGER_SECONDS``.
A malformed request is answered 400 and the connection closed.

Streamed bodies (Lambda's response streaming): a request carrying ``Lambda-Runtime-Function-Response-Mode``
is offered to the handler's ``stream`` when its head is complete; a ``BodySink`` it returns takes the
body piece by piece as it arrives (no size limit, nothing kept here), may pause reading (back pressure:
``push`` returns True, reading resumes when the sink calls back), and the request then goes to
``handle`` as usual with an empty body and its trailers among its headers. Other requests never reach
that code: the buffered path costs one dictionary lookup more per request.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import select
import socket
from collections.abc import Callable
from typing import Protocol, cast

import httptools

log = logging.getLogger("router.runtime")

MAX_HEAD_BYTES = 1024 * 1024
"""Request line plus headers; above it the request is refused (431) and the connection closed."""
LINGER_SECONDS = 5.0
"""How long the rest of a refused (too large) body is read and dropped before the connection closes."""
HOLD_SECONDS = 0.01
"""Longest an answer is held back to go out with the answer of the request pipelined behind it."""

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_REASONS = {
    200: "OK", 202: "Accepted", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 410: "Gone", 413: "Request Entity Too Large",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
}
_TEXT = "Content-Type: text/plain; charset=utf-8\r\n"
_STREAM_MODE = b"lambda-runtime-function-response-mode"


class Request:
    """One complete request. ``headers`` has lower-cased names (first occurrence wins); ``body`` is
    None when it was over the size limit."""

    __slots__ = ("body", "headers", "http10", "keep_alive", "method", "url")

    def __init__(self, method: bytes, url: bytes, headers: dict[bytes, bytes], body: bytes | None,
                 keep_alive: bool, http10: bool) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.http10 = http10


class Handler(Protocol):
    def handle(self, conn: Connection, request: Request) -> None:
        """Answer ``request`` with ``conn.respond`` now or later (must not raise for bad input)."""

    def lost(self, conn: Connection) -> None:
        """``conn`` is closed (a pending answer will never be sent)."""

    def stream(self, conn: Connection, request: Request, resume: Callable[[], None]) -> BodySink | None:
        """Whether to take the body of ``request`` (head only, ``body`` None) as it arrives: a sink,
        or None to have it buffered as any other; ``resume`` restarts reading after ``push`` paused it."""


class BodySink(Protocol):
    """Takes a streamed request body as it arrives (see the module doc)."""

    def push(self, data: bytes) -> bool:
        """The next bytes of the body; True: stop reading the connection until resumed."""

    def end(self, *, failed: bool = False) -> None:
        """No more bytes: ``failed`` when the connection was lost before the body was complete."""


class Connection(asyncio.Protocol):
    """One client connection: parses requests, hands them to the handler in order, writes answers."""

    def __init__(self, handler: Handler, listener: Listener, max_body: int) -> None:
        self._handler = handler
        self._listener = listener
        self._max_body = max_body
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._fd = -1
        self._poller: select.poll | None = None
        self._closing = False
        self._busy = False  # a request is with the handler, not answered yet
        self._dispatching = False
        self._keep_alive = True  # of the request being answered
        self._http10 = False
        self._queue: collections.deque[Request] | None = None
        self._read_paused = self._write_paused = False
        self._linger: asyncio.TimerHandle | None = None
        self._held: bytes = b""  # answers given but not yet sent (see respond)
        self._feeding = False  # inside data_received
        self._hold_timer: asyncio.TimerHandle | None = None
        # the request being parsed
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._too_large = False
        self._in_head = False
        self._head_bytes = 0
        self._discard = False  # answered early (too large): drop the rest of this request's body
        self._sink: BodySink | None = None  # takes the body being read (a streamed response)
        self._sink_paused = False
        self.admitted = False  # the handler's check of the client passed (kept for the connection)
        self.peername: tuple[str, int] | None = None  # the client's address and port
        self.sockname: tuple[str, int] | None = None  # the server's

    # --- asyncio.Protocol -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1
        peername, sockname = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
        if isinstance(peername, tuple) and isinstance(sockname, tuple):
            self.peername, self.sockname = peername[:2], sockname[:2]
        self._listener.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._busy = False
        self._queue = None
        self._held = b""
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.end(failed=True)
        self._listener.lost(self)
        self._handler.lost(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._feeding = True
        try:
            self._feed(data)
        finally:
            self._feeding = False
        if self._held:
            self._flush_held()

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An Upgrade/CONNECT request: answered as plain HTTP/1.1, then the connection closes.
            if self._busy:
                self._keep_alive = False
            else:
                self.close()
            return
        except httptools.HttpParserCallbackError:
            log.exception("runtime API: internal error while parsing a request")
            self._refuse(500)
            return
        except httptools.HttpParserError:
            self._refuse(400)
            return
        if self._in_head and not self._closing:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(431)
                return
        self._update_reading()

    def eof_received(self) -> bool | None:
        return False  # the client is gone (or half-closed): close; a pending answer is dropped

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    # --- httptools callbacks --------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0
        self._too_large = False
        self._in_head = True
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.setdefault(name.lower(), value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._closing:
            return
        headers = self._headers
        length = headers.get(b"content-length")
        if length is not None and int(length) > self._max_body:  # llhttp checked it is a number
            self._too_large = True
        expect = headers.get(b"expect")
        expects = expect is not None and expect.lower() == b"100-continue" and not self._http_10()
        idle = not self._busy and not self._queue
        if _STREAM_MODE in headers and idle and not self._too_large:
            self._offer_stream()
        if self._too_large and idle:
            self._answer_early(client_waits=expects)
        elif expects and idle:
            assert self.transport is not None
            self.transport.write(_CONTINUE)
        # (a request queued behind a pending one gets no 100 Continue: its client sends after a timeout)

    def on_body(self, body: bytes) -> None:
        if self._too_large or self._closing:
            return
        if self._sink is not None:
            if self._sink.push(body) and not self._sink_paused:
                self._sink_paused = True
                self._update_reading()
            return
        self._size += len(body)
        if self._size > self._max_body:
            self._too_large = True
            self._body = []
            if not self._busy and not self._queue:
                self._answer_early(client_waits=False)
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._closing:
            return
        if self._discard:
            self._discard = False
            if not self._busy:  # answered already (with Connection: close)
                self.close()
            return
        if self._sink is not None:
            self._sink = None
            self._sink_paused = False  # the handler ends the sink when it answers the request
        parts = self._body
        body = None if self._too_large else (parts[0] if len(parts) == 1 else b"".join(parts))
        self._body = []
        request = Request(self._parser.get_method(), self._url, self._headers, body,
                          self._parser.should_keep_alive(), self._http_10())
        if self._busy or self._queue:
            if self._queue is None:
                self._queue = collections.deque()
            self._queue.append(request)
        else:
            self._dispatch(request)

    # --- answering ------------------------------------------------------------------------------------

    def respond(self, status: int, body: bytes, head: str = "") -> None:
        """Answer the request the handler holds: ``head`` is the extra header lines ("Name: value\\r\\n",
        Content-Type included); Content-Length and Connection are added. Dropped if the connection is
        gone or the request was answered already.

        Answers given while a read is being parsed are sent when the parsing ends, in one write. When
        the client has pipelined its next request behind this one (a runtime that posts a result and
        asks for the next event in one write) and that request waits (a long-polled ``/next``), the
        answer is held back and goes out with the next answer, or after ``HOLD_SECONDS``: the client
        wakes up once for both, not twice. A client that waits for each answer before it sends the
        next request never has an answer held back.
        """
        if self._closing or not self._busy:
            return
        assert self.transport is not None
        self._busy = False
        keep_alive = self._keep_alive
        if not keep_alive:
            connection = "Connection: close\r\n"
        elif self._http10:
            connection = "Connection: keep-alive\r\n"
        else:
            connection = ""
        text = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n{head}"
                f"Content-Length: {len(body)}\r\n{connection}\r\n").encode()
        data = text + body if body else text
        if self._held:
            data = self._held + data
            self._held = b""
            if self._hold_timer is not None:
                self._hold_timer.cancel()
                self._hold_timer = None
        if keep_alive and (self._feeding or self._queue):
            self._held = data  # sent after this read (see data_received), or with the next answer
        else:
            self.transport.write(data)
        if not keep_alive:
            if self._discard:  # still reading a refused body: close when it ends, or after a while
                loop = asyncio.get_running_loop()
                self._linger = loop.call_later(LINGER_SECONDS, self.close)
            else:
                self.close()
            return
        if self._queue and not self._dispatching:
            self._pump()

    def respond_and_close(self, status: int, body: bytes, head: str = "") -> None:
        """``respond``, then close the connection."""
        self._keep_alive = False
        self.respond(status, body, head)

    def _send_held(self) -> None:
        self._hold_timer = None
        if self._held and not self._closing and self.transport is not None:
            data, self._held = self._held, b""
            self.transport.write(data)

    def peer_closed(self) -> bool:
        """Whether the client has closed its end, even if the event loop has not read the EOF yet."""
        if self._closing or self._fd < 0:
            return True
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(self._fd, select.POLLIN | select.POLLRDHUP)
        hangup = select.POLLRDHUP | select.POLLHUP | select.POLLERR
        return any(mask & hangup for _, mask in self._poller.poll(0))

    def close(self) -> None:
        """Close once the answers written so far are sent."""
        self._send_held()
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.abort()

    # --- internals ------------------------------------------------------------------------------------

    def _http_10(self) -> bool:
        return self._parser.get_http_version() == "1.0"

    def _dispatch(self, request: Request) -> None:
        self._busy = True
        self._keep_alive = request.keep_alive
        self._http10 = request.http10
        self._dispatching = True
        try:
            self._handler.handle(self, request)
        except Exception:
            log.exception("runtime API: internal error answering %s %s",
                          request.method.decode("latin-1"), request.url.decode("latin-1"))
            self._keep_alive = False
            self.respond(500, b"500: Internal Server Error", _TEXT)
        finally:
            self._dispatching = False

    def _pump(self) -> None:
        while self._queue and not self._busy and not self._closing:
            self._dispatch(self._queue.popleft())
        if self._held and not self._feeding:
            self._flush_held()
        self._update_reading()

    def _flush_held(self) -> None:
        """Send held answers now, or, while a pipelined request waits for its answer, with that answer
        (at the latest after ``HOLD_SECONDS``)."""
        if self._closing:
            return
        if not self._busy:
            self._send_held()
        elif self._hold_timer is None:
            self._hold_timer = asyncio.get_running_loop().call_later(HOLD_SECONDS, self._send_held)

    def _answer_early(self, *, client_waits: bool) -> None:
        """The body is over the limit: answer now (Connection: close) and drop whatever else arrives."""
        request = Request(self._parser.get_method(), self._url, self._headers, None, False, self._http_10())
        if not client_waits:
            self._discard = True
        self._dispatch(request)
        if client_waits and not self._busy:
            self.close()  # the client sends no body after a final answer to Expect: 100-continue

    def _offer_stream(self) -> None:
        """Offer the request whose head is complete to the handler's ``stream`` (see the module doc)."""
        stream = getattr(self._handler, "stream", None)
        if stream is None:
            return
        head = Request(self._parser.get_method(), self._url, self._headers, None,
                       self._parser.should_keep_alive(), self._http_10())
        self._sink = stream(self, head, self._resume_sink)

    def _resume_sink(self) -> None:
        if self._sink_paused:
            self._sink_paused = False
            self._update_reading()

    def _refuse(self, status: int) -> None:
        if self.transport is None or self._closing:
            return
        self._busy, self._keep_alive, self._queue = True, False, None
        self._discard = False
        self.respond(status, f"{status}: {_REASONS[status]}".encode(), _TEXT)

    def _update_reading(self) -> None:
        if self._closing or self.transport is None:
            return
        pause = self._write_paused or (self._busy and bool(self._queue)) or self._sink_paused
        if pause != self._read_paused:
            self._read_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()


class Listener:
    """One listening socket and its connections."""

    def __init__(self, handler: Handler, max_body: int) -> None:
        self.connections: set[Connection] = set()
        self._handler = handler
        self._max_body = max_body
        self._server: asyncio.Server | None = None
        self._all_lost: asyncio.Future[None] | None = None

    @classmethod
    async def start(cls, sock: socket.socket, handler: Handler, max_body: int) -> Listener:
        listener = cls(handler, max_body)
        loop = asyncio.get_running_loop()
        listener._server = await loop.create_server(listener._connection, sock=sock)
        return listener

    def _connection(self) -> Connection:
        return Connection(self._handler, self, self._max_body)

    async def adopt(self, sock: socket.socket) -> Connection:
        """Serve ``sock``, a socket connected by other means than this listener (e.g. one end of a
        socketpair whose other end a worker was handed), as one of its connections."""
        _, conn = await asyncio.get_running_loop().connect_accepted_socket(self._connection, sock)
        return conn

    def lost(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if not self.connections and self._all_lost is not None and not self._all_lost.done():
            self._all_lost.set_result(None)

    async def close(self, grace: float = 1.0) -> None:
        """Stop listening and close every connection (answers already written get ``grace`` seconds)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        if self.connections:
            self._all_lost = asyncio.get_running_loop().create_future()
            for conn in list(self.connections):
                conn.close()
            try:
                async with asyncio.timeout(grace):
                    await self._all_lost
            except TimeoutError:
                for conn in list(self.connections):
                    conn.abort()
                await self._all_lost  # abort() calls connection_lost at the next loop iteration
        if server is not None:
            await server.wait_closed()
