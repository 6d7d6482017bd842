"""The Lambda Runtime API server: one per router process, one listening port per execution environment.

Every environment gets a ``RuntimeChannel`` with its own loopback port (``AWS_LAMBDA_RUNTIME_API``).
All channels share one aiohttp ``AppRunner``; each channel is a ``SockSite`` on its own socket, and a
request finds its channel by the local port of its connection. Events are handed to one channel, never
to a shared queue, so a worker that dies cannot take an event meant for another: its pending
``/invocation/next`` only ever sees its own environment's events, and the environment turns the death of
its process into the invocation's result.

Endpoints (as AWS's Runtime API): GET ``/2018-06-01/runtime/invocation/next``, POST
``.../invocation/{id}/response`` and ``.../invocation/{id}/error`` (202), POST
``/2018-06-01/runtime/init/error`` (202); an unknown or finished request id answers 400
``InvalidRequestID``, a response over 6 MB answers 413 and fails the invocation with
``Function.ResponseSizeTooLarge``.
"""

from __future__ import annotations

import asyncio
import enum
import json
import select
import socket
from dataclasses import dataclass, field
from typing import NamedTuple

from aiohttp import web

MAX_RESPONSE_BYTES = 6 * 1024 * 1024
"""Largest function response (and error) body, as Lambda's synchronous limit."""

_PREFIX = "/2018-06-01/runtime"
_ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
_ACCEPTED = b'{"status":"OK"}'


class ReplyKind(enum.Enum):
    RESPONSE = "response"  # body is the function's response
    ERROR = "error"  # body is the error JSON, error_type from the header
    TOO_LARGE = "too_large"  # the response was over MAX_RESPONSE_BYTES
    EXITED = "exited"  # the process ended while running the event; returncode set
    UNDELIVERED = "undelivered"  # the process ended before it took the event: safe to run elsewhere
    CLOSED = "closed"  # the channel was closed (router shutting down)


class Reply(NamedTuple):
    """How one invocation ended, as seen from the Runtime API."""

    kind: ReplyKind
    body: bytes = b""
    error_type: str | None = None
    returncode: int | None = None


@dataclass(slots=True, eq=False)
class PendingEvent:
    """One event handed to one environment; ``future`` receives the ``Reply``."""

    request_id: str
    payload: bytes
    headers: dict[str, str]
    future: asyncio.Future[Reply]


class InitError(NamedTuple):
    """What ended init without a first ``/next``: the error the runtime posted, or NO_INIT_ERROR."""

    error_type: str
    body: bytes


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
    site: web.SockSite
    ready: asyncio.Future[InitError | None]
    queued: PendingEvent | None = None  # handed over, not yet taken by /next
    current: PendingEvent | None = None  # taken by /next, no result yet
    waiter: asyncio.Future[None] | None = field(default=None)  # the pending /next
    closed: bool = False

    def send(self, event: PendingEvent) -> None:
        """Hand ``event`` to this environment (one at a time); its result arrives in ``event.future``."""
        if self.queued is not None or self.current is not None:
            raise RuntimeError(f"runtime API {self.address}: an invocation is already in progress")
        self.queued = event
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def finish(self, reply: Reply) -> None:
        """End the invocation in progress (queued or running) with ``reply``, e.g. when the process died.

        An event the runtime never took ends ``UNDELIVERED`` instead of ``EXITED``."""
        if self.current is not None and not self.current.future.done():
            self.current.future.set_result(reply)
        if self.queued is not None and not self.queued.future.done():
            exited = reply.kind is ReplyKind.EXITED
            self.queued.future.set_result(reply._replace(kind=ReplyKind.UNDELIVERED) if exited else reply)
        self.current = self.queued = None


def _peer_closed(request: web.Request) -> bool:
    """Whether the client's end of the connection is closed (one poll(2), no read)."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return True
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | select.POLLRDHUP)
    return any(mask & (select.POLLRDHUP | select.POLLHUP | select.POLLERR) for _, mask in poller.poll(0))


def _json_error(status: int, error_type: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps({"errorMessage": message, "errorType": error_type}).encode(),
        content_type="application/json",
    )


class RuntimeApiServer:
    """Serves the Lambda Runtime API for every execution environment of the router process."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._channels: dict[int, RuntimeChannel] = {}
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_RESPONSE_BYTES + 1)
        app.router.add_get(_PREFIX + "/invocation/next", self._next)
        app.router.add_post(_PREFIX + "/invocation/{request_id}/response", self._response)
        app.router.add_post(_PREFIX + "/invocation/{request_id}/error", self._error)
        app.router.add_post(_PREFIX + "/init/error", self._init_error)
        # handler_cancellation: a /next whose worker went away is cancelled instead of lingering.
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()

    async def close(self) -> None:
        for channel in list(self._channels.values()):
            await self.close_channel(channel)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def open_channel(self) -> RuntimeChannel:
        """Listen on a new loopback port for one environment."""
        if self._runner is None:
            raise RuntimeError("runtime API: open_channel() before start(); call RuntimeApiServer.start()")
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self.host, 0))
            port = sock.getsockname()[1]
            site = web.SockSite(self._runner, sock)
            await site.start()
        except BaseException:
            sock.close()
            raise
        host = f"[{self.host}]" if ":" in self.host else self.host
        channel = RuntimeChannel(
            port=port, address=f"{host}:{port}", site=site,
            ready=asyncio.get_running_loop().create_future(),
        )
        self._channels[port] = channel
        return channel

    async def close_channel(self, channel: RuntimeChannel) -> None:
        """Stop listening for ``channel``; a pending invocation ends with ``ReplyKind.CLOSED``."""
        if channel.closed:
            return
        channel.closed = True
        self._channels.pop(channel.port, None)
        channel.finish(Reply(ReplyKind.CLOSED))
        if channel.waiter is not None and not channel.waiter.done():
            channel.waiter.cancel()
        if not channel.ready.done():
            channel.ready.set_result(NO_INIT_ERROR)
        await channel.site.stop()

    # --- handlers -------------------------------------------------------------------------------------

    def _channel(self, request: web.Request) -> RuntimeChannel | None:
        transport = request.transport
        if transport is None:
            return None
        sockname = transport.get_extra_info("sockname")
        return self._channels.get(sockname[1]) if sockname else None

    async def _next(self, request: web.Request) -> web.StreamResponse:
        channel = self._channel(request)
        if channel is None:
            return _json_error(410, "Gone", "execution environment is shutting down")
        if not channel.ready.done():
            channel.ready.set_result(None)
        if channel.queued is None:
            if channel.waiter is not None and not channel.waiter.done():
                return _json_error(400, "InvalidStateTransition", "another /invocation/next is pending")
            channel.waiter = asyncio.get_running_loop().create_future()
            try:
                await channel.waiter
            except asyncio.CancelledError:
                if channel.closed:
                    return _json_error(410, "Gone", "execution environment is shutting down")
                raise
            finally:
                channel.waiter = None
        event = channel.queued
        if event is None:  # finished (process death, close) before it was taken
            return _json_error(410, "Gone", "execution environment is shutting down")
        if _peer_closed(request):
            # The worker died while this /next waited and aiohttp has not noticed yet: leave the event
            # queued; the environment reports it undelivered when the process exit arrives.
            return _json_error(410, "Gone", "connection closed by the runtime")
        channel.queued = None
        channel.current = event
        return web.Response(body=event.payload, headers=event.headers)

    def _take(self, request: web.Request) -> tuple[RuntimeChannel, PendingEvent] | web.Response:
        channel = self._channel(request)
        event = channel.current if channel is not None else None
        if channel is None or event is None or event.request_id != request.match_info["request_id"]:
            return _json_error(400, "InvalidRequestID", "Invalid request ID")
        return channel, event

    async def _read_limited(
        self, request: web.Request, channel: RuntimeChannel, event: PendingEvent
    ) -> bytes | web.Response:
        length = request.content_length
        body: bytes | None = None
        if length is None or length <= MAX_RESPONSE_BYTES:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                body = None
        if body is None or len(body) > MAX_RESPONSE_BYTES:
            channel.current = None
            if not event.future.done():
                event.future.set_result(Reply(ReplyKind.TOO_LARGE))
            return _json_error(
                413, "RequestEntityTooLarge",
                f"Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).",
            )
        return body

    async def _response(self, request: web.Request) -> web.Response:
        taken = self._take(request)
        if isinstance(taken, web.Response):
            return taken
        channel, event = taken
        body = await self._read_limited(request, channel, event)
        if isinstance(body, web.Response):
            return body
        channel.current = None
        if not event.future.done():
            event.future.set_result(Reply(ReplyKind.RESPONSE, body))
        return web.Response(status=202, body=_ACCEPTED, content_type="application/json")

    async def _error(self, request: web.Request) -> web.Response:
        taken = self._take(request)
        if isinstance(taken, web.Response):
            return taken
        channel, event = taken
        body = await self._read_limited(request, channel, event)
        if isinstance(body, web.Response):
            return body
        channel.current = None
        if not event.future.done():
            event.future.set_result(Reply(ReplyKind.ERROR, body, request.headers.get(_ERROR_TYPE_HEADER)))
        return web.Response(status=202, body=_ACCEPTED, content_type="application/json")

    async def _init_error(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if channel is None:
            return _json_error(410, "Gone", "execution environment is shutting down")
        if channel.ready.done():
            return _json_error(403, "InvalidStateTransition", "init is already complete")
        body = await request.read()
        error_type = request.headers.get(_ERROR_TYPE_HEADER) or "Runtime.Unknown"
        channel.ready.set_result(InitError(error_type, body))
        return web.Response(status=202, body=_ACCEPTED, content_type="application/json")
