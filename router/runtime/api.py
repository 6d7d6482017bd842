"""The Lambda Runtime API server: one per router process, one listening port per execution environment.

Every environment gets a ``RuntimeChannel`` with its own loopback port (``AWS_LAMBDA_RUNTIME_API``),
served by the lean HTTP/1.1 transport of ``router.runtime.http11`` (one listener per channel, so a
request's channel is known from its connection). Events are handed to one channel, never
to a shared queue, so a worker that dies cannot take an event meant for another: its pending
``/invocation/next`` only ever sees its own environment's events, and the environment turns the death of
its process into the invocation's result.

A channel takes up to ``capacity`` invocations at once (1, Lambda's default; more for an environment
of Lambda Managed Instances' multi-concurrency, ``AWS_LAMBDA_MAX_CONCURRENCY``): as many ``/next``
requests may wait on it, each answered with its own event. There, a connection lost while the event
its ``/next`` took is still running ends that invocation (``EXITED``): the runtime worker holding it
died, while the environment's other workers go on.

Only the environment's own processes may use its Runtime API (a ``confined`` channel, as every
environment's is): the first request of each connection waits until the worker's pid is known
(``set_owner``), then is served only if the client's socket is held by the worker or a process below
it (``router.runtime.peer``); any other connection is answered 403 ``AccessDenied`` and closed. Without
this, any local process could take another function's next event from its port.

Endpoints (as AWS's Runtime API): GET ``/2018-06-01/runtime/invocation/next``, POST
``.../invocation/{id}/response`` and ``.../invocation/{id}/error`` (202), POST
``/2018-06-01/runtime/init/error`` (202); an unknown or finished request id answers 400
``InvalidRequestID``, a response over 6 MB answers 413 and fails the invocation with
``Function.ResponseSizeTooLarge``.

Response streaming: a POST to ``.../invocation/{id}/response`` with ``Lambda-Runtime-Function-Response-Mode:
streaming`` (a chunked body) is handed on as it arrives to the invocation's ``ResponseStream`` when its
caller takes one (a function URL in RESPONSE_STREAM mode, InvokeWithResponseStream), else buffered as any
response. An error the runtime reports mid-stream comes in the trailers ``Lambda-Runtime-Function-Error-Type``
and ``Lambda-Runtime-Function-Error-Body`` (base64 of the error JSON): the invocation ends with that error.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import enum
import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar
from urllib.parse import unquote

from router.invocation import RESPONSE_LIMIT
from router.response_stream import ResponseStream
from router.runtime import peer
from router.runtime.http11 import Connection, Listener, Request

log = logging.getLogger("router.runtime")

"""Largest function response (and error) body, as Lambda's synchronous limit."""

_PREFIX = "/2018-06-01/runtime"
_ACCEPTED = b'{"status":"OK"}'
_JSON = "Content-Type: application/json\r\n"
_NEXT = (_PREFIX + "/invocation/next").encode()
_INVOCATION = (_PREFIX + "/invocation/").encode()
_INIT_ERROR = (_PREFIX + "/init/error").encode()
_ERROR_TYPE = b"lambda-runtime-function-error-type"
_ERROR_BODY = b"lambda-runtime-function-error-body"  # a trailer of a streamed response: base64 JSON
_RESPONSE_MODE = b"lambda-runtime-function-response-mode"
_MEMORY = b"router-memory"
"""Sent by the router's own bootstraps with a result: the worker's ``VmHWM`` (kB) and ``Threads`` from
its /proc/self/status, read as it posts (``Reply.memory``)."""
_DURATION = b"router-duration"
"""Sent by the router's own bootstraps with a result: the microseconds from taking the event to posting
its result, by the runtime's own clock (``Reply.duration``). The router's clock cannot tell that time
apart from the time a result waits for the router's busy event loop to read it."""
_T = TypeVar("_T")


class ReplyKind(enum.Enum):
    RESPONSE = "response"  # body is the function's response
    ERROR = "error"  # body is the error JSON, error_type from the header
    TOO_LARGE = "too_large"  # the response was over RESPONSE_LIMIT
    EXITED = "exited"  # the process ended while running the event; returncode set
    UNDELIVERED = "undelivered"  # the process ended before it took the event: safe to run elsewhere
    CLOSED = "closed"  # the channel was closed (router shutting down)


class Reply(NamedTuple):
    """How one invocation ended, as seen from the Runtime API."""

    kind: ReplyKind
    body: bytes = b""
    error_type: str | None = None
    returncode: int | None = None
    memory: bytes | None = None  # the worker's own figures (``_MEMORY``), when it sent them
    duration: float | None = None  # seconds the runtime held the event by its own clock (``_DURATION``)


@dataclass(slots=True, eq=False)
class PendingEvent:
    """One event handed to one environment; ``future`` receives the ``Reply``."""

    request_id: str
    payload: bytes
    headers: dict[str, str]
    future: asyncio.Future[Reply]
    stream: ResponseStream | None = None  # the caller takes a streamed response as it comes
    taken_by: Connection | None = None  # the connection whose /next took it


class InitError(NamedTuple):
    """What ended init without a first ``/next``: the error the runtime posted, or NO_INIT_ERROR."""

    error_type: str
    body: bytes
    memory: bytes | None = None  # the worker's own figures (``_MEMORY``), when it sent them


NO_INIT_ERROR = InitError("", b"")
"""``ready`` value when init ended without a posted error (the process exited, the channel closed)."""


@dataclass(slots=True, eq=False)
class RuntimeChannel:
    """The Runtime API of one execution environment.

    ``ready`` resolves at the first ``/invocation/next`` (init done, value None), with the error the
    runtime posted to ``/init/error``, or with ``NO_INIT_ERROR`` (process exited, channel closed).
    """

    port: int
    address: str
    listener: Listener
    ready: asyncio.Future[InitError | None]
    capacity: int = 1
    queued: collections.deque[PendingEvent] = field(default_factory=collections.deque)  # not yet taken
    running: dict[str, PendingEvent] = field(default_factory=dict)  # taken by /next, no result yet
    waiters: collections.deque[Connection] = field(default_factory=collections.deque)  # pending /next
    closed: bool = False
    init_ended: bool = False  # a /next or /init/error came (``ready`` is settled a moment later)
    confined: bool = False  # only the owner's process tree may connect (see the module doc)
    owner: int | None = None  # pid of the environment's worker, once known
    owner_uid: int | None = None  # the worker's own user (run_as), if any
    held: list[tuple[Connection, Request]] = field(default_factory=list)  # first requests awaiting owner
    refused: int = 0  # connections refused
    endpoints: _Endpoints | None = None

    def set_owner(self, pid: int, uid: int | None = None) -> None:
        """The environment's worker is ``pid`` (running as ``uid`` of its own, with ``run_as``): serve
        the requests that waited for it (if its own)."""
        self.owner, self.owner_uid = pid, uid
        held, self.held = self.held, []
        for conn, request in held:
            if self.endpoints is not None:
                self.endpoints.handle(conn, request)

    def send(self, event: PendingEvent) -> None:
        """Hand ``event`` to this environment; its result arrives in ``event.future``."""
        if len(self.queued) + len(self.running) >= self.capacity:
            raise RuntimeError(
                f"runtime API {self.address}: {self.capacity} invocation(s) already in progress")
        self.queued.append(event)
        while self.queued and self.waiters:
            _hand_over(self, self.waiters.popleft())

    def finish(self, reply: Reply) -> None:
        """End every invocation in progress (queued or running) with ``reply``, e.g. when the process
        died. An event the runtime never took ends ``UNDELIVERED`` instead of ``EXITED``."""
        for event in self.running.values():
            if not event.future.done():
                event.future.set_result(reply)
        exited = reply.kind is ReplyKind.EXITED
        for event in self.queued:
            if not event.future.done():
                event.future.set_result(reply._replace(kind=ReplyKind.UNDELIVERED) if exited else reply)
        self.running.clear()
        self.queued.clear()


def _settle(future: asyncio.Future[_T], value: _T) -> None:
    """Resolve ``future`` unless it is done already. (What the worker printed before it posted is in
    its output pipe: the environment drains that synchronously before it reports the result.)"""
    if not future.done():
        future.set_result(value)


def _json_error(conn: Connection, status: int, error_type: str, message: str) -> None:
    conn.respond(status, json.dumps({"errorMessage": message, "errorType": error_type}).encode(), _JSON)


def _event_head(headers: dict[str, str]) -> str:
    """The header lines of an event: the environment's headers (CR/LF blanked) and a Content-Type."""
    lines = []
    for name, value in headers.items():
        if "\r" in value or "\n" in value:
            value = value.replace("\r", " ").replace("\n", " ")
        lines.append(f"{name}: {value}\r\n")
    if "Content-Type" not in headers and "content-type" not in headers:
        lines.append("Content-Type: application/octet-stream\r\n")
    return "".join(lines)


def _hand_over(channel: RuntimeChannel, conn: Connection) -> None:
    """Answer the pending ``/next`` on ``conn`` with the first queued event."""
    if conn.peer_closed():
        # The worker died while this /next waited and the loop has not read the EOF yet: leave the
        # event queued (another /next may take it, or the environment reports it undelivered when the
        # process exit arrives).
        _json_error(conn, 410, "Gone", "connection closed by the runtime")
        return
    event = channel.queued.popleft()
    event.taken_by = conn
    channel.running[event.request_id] = event
    conn.respond(200, event.payload, _event_head(event.headers))


class _Endpoints:
    """The Runtime API routes of one channel (an ``http11.Handler``)."""

    __slots__ = ("channel",)

    def __init__(self) -> None:
        self.channel: RuntimeChannel | None = None

    def lost(self, conn: Connection) -> None:
        channel = self.channel
        if channel is None:
            return
        if channel.held:
            channel.held = [(c, r) for c, r in channel.held if c is not conn]
        if conn in channel.waiters:
            channel.waiters.remove(conn)  # a worker gone with /next pending
        if channel.capacity > 1:
            # In a multi-concurrent environment each runtime worker keeps its own connection: one that
            # is lost with an event still running is a worker that died with it (the environment's
            # other workers go on, as on Lambda Managed Instances).
            for event in [e for e in channel.running.values() if e.taken_by is conn]:
                del channel.running[event.request_id]
                _settle(event.future, Reply(ReplyKind.EXITED))

    def stream(self, conn: Connection, request: Request, resume: Callable[[], None]) -> ResponseStream | None:
        """The invocation's stream, for a streamed POST of its response that its caller takes as it
        comes; None to buffer the body (any other request, or a caller that wants the whole response)."""
        channel = self.channel
        if (channel is None or request.method != b"POST"
                or request.headers.get(_RESPONSE_MODE, b"").lower() != b"streaming"):
            return None
        if channel.confined and not conn.admitted:
            # A streamed response comes on a connection of its own (the Node runtime's): admitted here
            # when its client is the environment's; anything else is left to ``handle`` to refuse.
            client, server = conn.peername, conn.sockname
            if (channel.owner is None or client is None or server is None
                    or not peer.belongs_to(client, server, channel.owner, channel.owner_uid)):
                return None
            conn.admitted = True
        path = request.url.partition(b"?")[0]
        if not path.startswith(_INVOCATION) or not path.endswith(b"/response"):
            return None
        request_id = path[len(_INVOCATION):-len(b"/response")].decode("utf-8", "replace")
        if "%" in request_id:
            request_id = unquote(request_id)
        event = channel.running.get(request_id)
        stream = event.stream if event is not None else None
        if event is None or stream is None or stream.opened:
            return None
        content_type = request.headers.get(b"content-type", b"application/octet-stream")
        stream.open(content_type.decode("latin-1"), resume)
        # However the invocation ends (timeout, exit, shutdown), its stream ends with it.
        event.future.add_done_callback(lambda _: stream.end(failed=True))
        return stream

    def handle(self, conn: Connection, request: Request) -> None:
        channel = self.channel
        assert channel is not None
        if channel.confined and not conn.admitted and not self._admit(conn, channel, request):
            return
        url = request.url
        if url == _NEXT:
            path = url
        else:
            path = url.partition(b"?")[0]
            if path.startswith(b"http://"):  # absolute form
                path = b"/" + path[7:].partition(b"/")[2]
        method = request.method
        if path == _NEXT:
            if method != b"GET":
                conn.respond(405, b"405: Method Not Allowed", "Content-Type: text/plain; charset=utf-8\r\n"
                             "Allow: GET\r\n")
            else:
                self._next(conn, channel)
            return
        if path.startswith(_INVOCATION):
            parts = path[len(_INVOCATION):].split(b"/")
            if len(parts) == 2 and parts[0] and parts[1] in (b"response", b"error"):
                if method != b"POST":
                    conn.respond(405, b"405: Method Not Allowed",
                                 "Content-Type: text/plain; charset=utf-8\r\nAllow: POST\r\n")
                    return
                request_id = parts[0].decode("utf-8", "replace")
                if "%" in request_id:
                    request_id = unquote(request_id)
                self._result(conn, channel, request, request_id, parts[1] == b"error")
                return
        elif path == _INIT_ERROR:
            if method != b"POST":
                conn.respond(405, b"405: Method Not Allowed",
                             "Content-Type: text/plain; charset=utf-8\r\nAllow: POST\r\n")
            else:
                self._init_error(conn, channel, request)
            return
        conn.respond(404, b"404: Not Found", "Content-Type: text/plain; charset=utf-8\r\n")

    @staticmethod
    def _admit(conn: Connection, channel: RuntimeChannel, request: Request) -> bool:
        """Whether ``conn`` comes from the environment's own processes (checked once per connection);
        a request that comes before the worker's pid is known waits for it (``set_owner``)."""
        if channel.owner is None:
            channel.held.append((conn, request))
            return False
        client, server = conn.peername, conn.sockname
        if client is not None and server is not None and peer.belongs_to(
                client, server, channel.owner, channel.owner_uid):
            conn.admitted = True
            return True
        channel.refused += 1
        if channel.refused == 1:  # once per environment: a stranger cannot flood the log
            log.warning("runtime API %s: refused a connection from %s:%s, which no process of the "
                        "environment (worker pid %d) holds; only the environment's own processes may "
                        "use its Runtime API", channel.address, *(client or ("?", "?")), channel.owner)
        conn.respond_and_close(403, json.dumps({
            "errorMessage": "this Runtime API serves only the processes of its own execution environment",
            "errorType": "AccessDenied"}).encode(), _JSON)
        return False

    @staticmethod
    def _next(conn: Connection, channel: RuntimeChannel) -> None:
        if channel.closed:
            _json_error(conn, 410, "Gone", "execution environment is shutting down")
            return
        if not channel.init_ended:
            channel.init_ended = True
            _settle(channel.ready, None)
        if not channel.queued:
            if len(channel.waiters) >= channel.capacity:
                _json_error(conn, 400, "InvalidStateTransition",
                            f"{channel.capacity} /invocation/next request(s) already pending")
                return
            channel.waiters.append(conn)  # answered by send(), close_channel() or never (connection lost)
            return
        _hand_over(channel, conn)

    @staticmethod
    def _result(conn: Connection, channel: RuntimeChannel, request: Request, request_id: str,
                error: bool) -> None:
        event = channel.running.pop(request_id, None)
        if event is None:
            _json_error(conn, 400, "InvalidRequestID", "Invalid request ID")
            return
        body = request.body
        if body is None:
            _settle(event.future, Reply(ReplyKind.TOO_LARGE))
            _json_error(
                conn, 413, "RequestEntityTooLarge",
                f"Response payload size exceeded maximum allowed payload size ({RESPONSE_LIMIT} bytes).",
            )
            return
        memory = request.headers.get(_MEMORY)
        duration = _runtime_duration(request.headers.get(_DURATION))
        if error:
            error_type = request.headers.get(_ERROR_TYPE)
            reply = Reply(ReplyKind.ERROR, body,
                          error_type.decode("utf-8", "replace") if error_type is not None else None,
                          memory=memory, duration=duration)
        elif _ERROR_TYPE in request.headers:  # a streamed response that failed (its trailers)
            reply = _stream_error(request.headers)
        else:
            reply = Reply(ReplyKind.RESPONSE, body, memory=memory, duration=duration)
        if event.stream is not None and event.stream.opened:
            event.stream.end(failed=reply.kind is not ReplyKind.RESPONSE)
        _settle(event.future, reply)
        conn.respond(202, _ACCEPTED, _JSON)

    @staticmethod
    def _init_error(conn: Connection, channel: RuntimeChannel, request: Request) -> None:
        if channel.closed:
            _json_error(conn, 410, "Gone", "execution environment is shutting down")
            return
        if channel.init_ended or channel.ready.done():
            _json_error(conn, 403, "InvalidStateTransition", "init is already complete")
            return
        if request.body is None:
            _json_error(conn, 413, "RequestEntityTooLarge",
                        f"Init error size exceeded maximum allowed size ({RESPONSE_LIMIT} bytes).")
            return
        channel.init_ended = True
        error_type = request.headers.get(_ERROR_TYPE)
        _settle(channel.ready, InitError(
            error_type.decode("utf-8", "replace") if error_type else "Runtime.Unknown", request.body,
            request.headers.get(_MEMORY)))
        conn.respond(202, _ACCEPTED, _JSON)


def _runtime_duration(value: bytes | None) -> float | None:
    """``_DURATION``'s microseconds as seconds; None when absent or not a count (a runtime of the user's
    own may send anything)."""
    if value is None or not value.isdigit():
        return None
    return int(value) / 1e6


def _stream_error(headers: dict[bytes, bytes]) -> Reply:
    """The error a runtime reported in a streamed response's trailers (the body is base64 JSON)."""
    error_type = headers[_ERROR_TYPE].decode("utf-8", "replace")
    try:
        body = base64.b64decode(headers.get(_ERROR_BODY, b""), validate=True)
    except binascii.Error:
        body = b""
    if not body:
        body = json.dumps({"errorMessage": "the function's streamed response failed",
                           "errorType": error_type}).encode()
    return Reply(ReplyKind.ERROR, body, error_type)


class RuntimeApiServer:
    """Serves the Lambda Runtime API for every execution environment of the router process."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._channels: dict[int, RuntimeChannel] = {}
        self._started = False

    async def start(self) -> None:
        self._started = True

    async def close(self) -> None:
        for channel in list(self._channels.values()):
            await self.close_channel(channel)
        self._started = False

    async def open_channel(self, capacity: int = 1, *, confined: bool = False) -> RuntimeChannel:
        """Listen on a new loopback port for one environment taking ``capacity`` invocations at once;
        ``confined``: only the process tree of the pid given to ``set_owner`` may use it."""
        if not self._started:
            raise RuntimeError("runtime API: open_channel() before start(); call RuntimeApiServer.start()")
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        endpoints = _Endpoints()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self.host, 0))
            port = sock.getsockname()[1]
            listener = await Listener.start(sock, endpoints, RESPONSE_LIMIT)
        except BaseException:
            sock.close()
            raise
        host = f"[{self.host}]" if ":" in self.host else self.host
        channel = RuntimeChannel(
            port=port, address=f"{host}:{port}", listener=listener,
            ready=asyncio.get_running_loop().create_future(), capacity=capacity, confined=confined,
            endpoints=endpoints,
        )
        endpoints.channel = channel
        self._channels[port] = channel
        return channel

    async def worker_socket(self, channel: RuntimeChannel) -> socket.socket:
        """One end of a new connected socket pair, for ``channel``'s worker to be handed when it starts
        (the caller closes this copy once the worker has it); the router serves the other end as one of
        the channel's connections, admitted as the worker's own: only the processes it is handed to
        hold it, so no client check is needed, and there is no connection to make."""
        if channel.closed:
            raise RuntimeError(f"runtime API {channel.address}: channel closed")
        router_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn = await channel.listener.adopt(router_end)
        except BaseException:
            router_end.close()
            worker_end.close()
            raise
        conn.admitted = True
        return worker_end

    async def close_channel(self, channel: RuntimeChannel) -> None:
        """Stop listening for ``channel``; a pending invocation ends with ``ReplyKind.CLOSED``."""
        if channel.closed:
            return
        channel.closed = True
        self._channels.pop(channel.port, None)
        channel.finish(Reply(ReplyKind.CLOSED))
        while channel.waiters:
            _json_error(channel.waiters.popleft(), 410, "Gone", "execution environment is shutting down")
        held, channel.held = channel.held, []
        for conn, _ in held:
            _json_error(conn, 410, "Gone", "execution environment is shutting down")
        if not channel.ready.done():
            channel.ready.set_result(NO_INIT_ERROR)
        await channel.listener.close()
