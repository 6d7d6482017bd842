"""Reading request bodies under a size limit, a time limit and a memory budget shared by all requests.

Oversize bodies become 413s (from Content-Length before a byte is read, or as soon as the bytes read
pass the limit), never 500s. With a :class:`BodyLimits` in the app (``LIMITS``), a body must
also arrive within ``server.body_timeout`` (else 408) and fit in
``server.max_body_buffer``, the bytes of request bodies held in memory across all requests; a request
that cannot get room within ``BUDGET_WAIT`` gets 503. The room is held until the request has been
answered, since the body lives that long.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from router.metrics import Metrics

BUDGET_WAIT = 1.0
"""Longest a request waits for room in the body budget before it gets 503."""
GROW_STEP = 64 * 1024
"""A body of unknown length (chunked) takes room in steps of this size as it arrives."""


class BodyTooLarge(Exception):
    """Raised by ``read_body`` when a request body is over its limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"request body: over the limit of {limit} bytes")


class BodyUnavailable(Exception):
    """Raised by ``read_body`` when a body could not be read: ``status`` 408 (it did not arrive within
    ``server.body_timeout``) or 503 (no room in ``server.max_body_buffer`` within ``BUDGET_WAIT``).
    The answer closes the connection."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        self.status = status
        self.message = message
        self.reason = reason  # metric label: body_timeout | body_budget
        super().__init__(message)

    def response(self) -> web.Response:
        resp = web.json_response({"message": self.message}, status=self.status)
        if self.status == 503:
            resp.headers["Retry-After"] = "1"
        resp.force_close()
        return resp


class ByteBudget:
    """A counted pool of bytes, granted first come, first served (a large request is not starved by a
    stream of small ones)."""

    def __init__(self, total: int, on_change: Callable[[int], None] | None = None) -> None:
        self.total = total
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._on_change = on_change

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.used)

    def try_take(self, n: int) -> bool:
        if self._waiters or self.used + n > self.total:
            return False
        self.used += n
        self._changed()
        return True

    async def take(self, n: int, wait: float) -> bool:
        """Take ``n`` bytes, waiting up to ``wait`` seconds; False when they could not be had."""
        if n > self.total:
            return False
        if self.try_take(n):
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, fut)
        self._waiters.append(entry)
        granted = False
        try:
            # Not wait_for: on 3.11 it can swallow a cancellation that races with the grant.
            async with asyncio.timeout(max(0.0, wait)):
                await asyncio.shield(fut)
            granted = True
        except TimeoutError:
            granted = fut.done() and not fut.cancelled()  # granted just as the wait ended
        finally:
            if not fut.done():
                fut.cancel()
                self._waiters.remove(entry)
                self._wake()  # the head may have been this one
            elif not granted:  # granted, but the caller is leaving (cancelled): give it back
                self.give(n)
        return granted

    def give(self, n: int) -> None:
        self.used -= n
        self._changed()
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            n, fut = self._waiters[0]
            if self.used + n > self.total:
                return
            self._waiters.popleft()
            self.used += n
            fut.set_result(None)
            self._changed()


@dataclass(slots=True)
class Reservation:
    """The budget one request holds; given back when the request has been answered."""

    budget: ByteBudget
    size: int = 0

    async def grow_to(self, n: int, wait: float) -> bool:
        if n <= self.size:
            return True
        if not await self.budget.take(n - self.size, wait):
            return False
        self.size = n
        return True

    def release(self, _: object = None) -> None:
        if self.size:
            self.budget.give(self.size)
            self.size = 0


@dataclass(slots=True)
class BodyLimits:
    """One app's body limits: the shared budget and the time a body may take."""

    budget: ByteBudget
    timeout: float
    metrics: Metrics | None = None
    wait: float = BUDGET_WAIT

    def count_refusal(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.http_requests_refused.labels(reason).inc()


LIMITS = web.AppKey("router_body_limits", BodyLimits)
"""Where ``read_body`` finds the app's limits; an app without them reads bodies as aiohttp does."""


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, or ``BodyTooLarge`` as soon as Content-Length or the bytes read pass ``limit``;
    ``BodyUnavailable`` when the body is too slow or the body budget has no room (see the module).

    The room a body takes is given back when the request's task ends, that is once it has been
    answered (aiohttp runs each request, middlewares and response included, in a task of its own)."""
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge(limit)
    limits = request.config_dict.get(LIMITS)
    if limits is None or request._read_bytes is not None:  # no limits, or read already: aiohttp's read
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise BodyTooLarge(limit) from None
        if len(body) > limit:
            raise BodyTooLarge(limit)
        return body
    reservation = Reservation(limits.budget)
    content = request.content
    if content.is_eof():  # the whole body came with the request (the common case): nothing to wait for
        body = content.read_nowait()
        if len(body) > limit:
            raise BodyTooLarge(limit)
        if body and not await reservation.grow_to(len(body), limits.wait):
            raise no_room(limits)
        return _keep(request, body, reservation)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.timeout
    try:
        async with asyncio.timeout_at(deadline):
            if length and not await reservation.grow_to(length, min(limits.wait, deadline - loop.time())):
                raise no_room(limits)
            chunks: list[bytes] = []
            total = 0
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    raise BodyTooLarge(limit)
                if total > reservation.size:
                    want = min(limit, max(total, reservation.size + GROW_STEP))
                    if not await reservation.grow_to(want, min(limits.wait, deadline - loop.time())):
                        raise no_room(limits)
                chunks.append(chunk)
    except TimeoutError:
        reservation.release()
        limits.count_refusal("body_timeout")
        raise BodyUnavailable(
            408, f"Request Timeout: the body did not arrive within {limits.timeout:g} seconds",
            "body_timeout") from None
    except BaseException:
        reservation.release()
        raise
    return _keep(request, b"".join(chunks), reservation)


def _keep(request: web.Request, body: bytes, reservation: Reservation) -> bytes:
    """``body`` is the request's (as request.read() keeps it: a second read gets it again); its room in
    the budget is given back when the request's task ends."""
    request._read_bytes = body
    if not reservation.size:  # nothing taken from the budget (an empty body): nothing to give back
        return body
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - a request is always handled in a task
        reservation.release()
    else:
        task.add_done_callback(reservation.release)
    return body


def no_room(limits: BodyLimits) -> BodyUnavailable:
    limits.count_refusal("body_budget")
    return BodyUnavailable(
        503, "Service Unavailable: too many request bodies are being received at once; retry later",
        "body_budget")
