"""The webhook source: one aiohttp route per ``type: webhook`` route, events in the shape its ``payload``
names (API Gateway HTTP API 2.0 by default, REST API 1.0 or ALB: ``router.http.shapes``).

Sync routes invoke and map the result as that gateway does; async routes answer 202 with the request
id only after ``dispatcher.submit`` returned, that is after the event is persisted.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, cast

from aiohttp import web

from router import compact_json
from router.config.checks import aiohttp_path
from router.config.models import RouteConfig, RouterConfig, WebhookSourceConfig
from router.core.controls import HELD_WEBHOOK
from router.errors import PayloadTooLarge, RouterError, Throttled, Unavailable
from router.http.context import HttpContext
from router.http.limits import BodyLimits, BodyTooLarge, BodyUnavailable, Reservation, no_room, read_body
from router.http.refusals import REFUSED, Refusals
from router.http.shapes import Shape, shape_for
from router.http.streaming import StreamedCall, write_streamed
from router.http.webhook_auth import build_auth, headers_pass
from router.invocation import Invocation, new_request_id

if TYPE_CHECKING:
    from router.http.whole_request import FastRequest

# Named for the source type, as every source's logger is (router.sources.sqs, ...): log filters keep working.
log = logging.getLogger("router.sources.webhook")

TYPE = "webhook"
PAUSED_RETRY_AFTER = 30
"""Seconds a paused webhook route asks its sender to wait (``Retry-After`` of its 503)."""


class WebhookSource:
    """Serves one webhook route. Metrics are labelled with the route's name, never the raw path."""

    def __init__(self, route: RouteConfig, ctx: HttpContext) -> None:
        if not isinstance(route.source, WebhookSourceConfig):
            raise TypeError(f"route '{route.name}': not a webhook route, got type {route.source.type!r}")
        self.route = route
        self.source: WebhookSourceConfig = route.source
        self._ctx = ctx
        self._auth = build_auth(route.source.auth)
        self._shape = shape_for(route, ctx.config)
        self._refusals = WebhookRefusals(self._shape)
        m = ctx.metrics
        self._events = m.source_events.labels(route=route.name, type=TYPE)

    async def handle(self, request: web.Request,
                     params: Mapping[str, str] | None = None) -> web.StreamResponse:
        """Answer ``request``; ``params``: what the route's ``{name}`` path parts matched."""
        request_id = new_request_id()
        try:
            response = await self._handle(request, request_id, params)
        except (RouterError, OSError) as exc:
            response = _not_dispatched(exc, self.route.name, self.route.function, request_id, self._shape)
        if self._shape.request_id_header is not None and not response.prepared:
            response.headers[self._shape.request_id_header] = request_id
        return await self._send(request, response, request_id)

    async def answer(self, request: FastRequest, body: bytes, limits: BodyLimits,
                     params: Mapping[str, str] | None = None) -> tuple[web.Response, str]:
        """The answer to a request that came whole, the fast path's (``router.http.fast_webhook``: it
        writes it, then calls ``sent`` or ``lost``), and its request id. ``body`` is within
        ``server.max_body`` (a larger one is aiohttp's); it is held in ``limits``' budget while it is
        answered, as ``read_body`` holds one. ``params``: what the route's ``{name}`` parts matched."""
        request_id = new_request_id()
        response: web.StreamResponse
        reservation = Reservation(limits.budget)
        try:
            if not headers_pass(self.source.auth, request.headers):
                response = self._unauthorized(self._extra(request_id))
            elif body and not await reservation.grow_to(len(body), limits.wait):
                response = self._body_refused(no_room(limits), request_id)
            else:
                response = await self._dispatch(request, body, request_id, params)
        except (RouterError, OSError) as exc:
            response = _not_dispatched(exc, self.route.name, self.route.function, request_id, self._shape)
        finally:
            reservation.release()
        if not isinstance(response, web.Response):  # the fast path takes no stream route
            raise TypeError(f"route '{self.route.name}': a whole response was expected")
        if self._shape.request_id_header is not None:
            response.headers[self._shape.request_id_header] = request_id
        return response, request_id

    def _body_refused(self, refusal: BodyUnavailable, request_id: str) -> web.Response:
        log.info("webhook: request body not read, %s", refusal.reason,
                 extra={**self._extra(request_id), "status": refusal.status})
        return refusal.response()

    def _extra(self, request_id: str) -> dict[str, str]:
        return {"route": self.route.name, "function": self.route.function, "request_id": request_id}

    async def _send(self, request: web.Request, response: web.StreamResponse,
                    request_id: str) -> web.StreamResponse:
        """Write the response here, so ``router_webhook_requests_total`` counts the status the client was
        sent: a response aiohttp refuses to serialize becomes a 500, and a reply the connection lost
        counts as a source error, not as a status."""
        try:
            try:
                await response.prepare(request)
            except ValueError as exc:  # a header aiohttp will not write; nothing has been sent yet
                response = self.unwritable(exc, request_id)
                await response.prepare(request)
            await response.write_eof()
        except ConnectionError as exc:  # the client went away: the transport closed under the write
            self.lost(exc, request_id)
            return response
        self.sent(response.status)
        return response

    def unwritable(self, exc: Exception, request_id: str) -> web.Response:
        """The 500 that replaces a response whose headers cannot be written."""
        log.error("webhook: the response could not be written (%s); answered 500 instead",
                  type(exc).__name__, extra={**self._extra(request_id), "error_type": "handler"})
        response = self._shape.internal_error()
        if self._shape.request_id_header is not None:
            response.headers[self._shape.request_id_header] = request_id
        return response

    def sent(self, status: int) -> None:
        """A response with ``status`` was written: counted by status."""
        metrics = self._ctx.metrics
        metrics.child(metrics.webhook_requests, self.route.name, str(status)).inc()

    def lost(self, exc: Exception, request_id: str) -> None:
        """The client went away before its response was written: a source error."""
        log.info("webhook: the client did not get the response (%s)", type(exc).__name__,
                 extra={**self._extra(request_id), "error_type": "connection"})
        metrics = self._ctx.metrics
        metrics.child(metrics.source_errors, self.route.name, TYPE).inc()

    async def _handle(self, request: web.Request, request_id: str,
                      params: Mapping[str, str] | None) -> web.StreamResponse:
        # What needs only the headers is checked before a byte of the body is read or buffered
        # (DESIGN §9a): a stranger's body costs no memory. Content-Length over the limit is read_body's.
        if not headers_pass(self.source.auth, request.headers):
            return self._unauthorized(self._extra(request_id))
        try:
            body = await read_body(request, self._ctx.config.server.max_body)
        except BodyTooLarge:
            return self._shape.too_large()
        except BodyUnavailable as exc:  # too slow (408) or no room for it in server.max_body_buffer (503)
            return self._body_refused(exc, request_id)
        return await self._dispatch(request, body, request_id, params)

    async def _dispatch(self, request: web.Request | FastRequest, body: bytes, request_id: str,
                        params: Mapping[str, str] | None) -> web.StreamResponse:
        """The rest of the answer once the body is read: its signature, the route's pause, the event, the
        invocation and its mapped result."""
        ctx = self._ctx
        route = self.route
        if self._auth is not None and not self._auth.verify(request.headers, body):
            return self._unauthorized(self._extra(request_id))
        if not ctx.dispatcher.route_enabled(route.name):  # paused: the sender retries later
            ctx.dispatcher.held(HELD_WEBHOOK, route.name)
            return web.json_response({"message": f"route '{route.name}' is paused; retry later"}, status=503,
                                     headers={"Retry-After": str(PAUSED_RETRY_AFTER)})
        self._events.inc()

        if route.input is not None:
            event: object = route.input
        else:
            # (the fast path's request has what the shapes read of aiohttp's: router.http.fast_webhook)
            event = self._shape.event(cast(web.Request, request), body, request_id, params)
        inv = Invocation(
            function=route.function,
            payload=compact_json.dumpb(event),
            source=TYPE,
            route=route.name,
            request_id=request_id,
            invocation_type=route.invocation_type,
        )
        if self.source.stream:
            assert isinstance(request, web.Request)  # the fast path takes no stream route
            return await self._streamed(request, inv, self._extra(request_id))
        try:
            if route.invocation_type == "async":
                await ctx.dispatcher.submit(inv)
                return web.json_response({"requestId": request_id}, status=202,
                                         headers={"Location": f"/invocations/{request_id}"})
            result = await ctx.dispatcher.invoke(inv)
        except REFUSED as exc:
            return self._refusals.answer(exc, inv)
        shape = self._shape
        return shape.response(result, lambda reason: log.error(
            "webhook: the function's response is malformed, answered %s: %s; %s (payload: %s)",
            shape.malformed_status, reason, shape.hint, shape.name,
            extra={**self._extra(request_id), "error_type": "handler"}))


    async def _streamed(self, request: web.Request, inv: Invocation,
                        extra: dict[str, str]) -> web.StreamResponse:
        """``stream: true``: a function that streams is answered as it writes (README "Response
        streaming"); one that does not is mapped as any response of the route's payload format."""
        shape = self._shape

        def malformed(reason: str) -> None:
            log.error("webhook: the function's response is malformed, answered %s: %s; %s (payload: %s)",
                      shape.malformed_status, reason, shape.hint, shape.name,
                      extra={**extra, "error_type": "handler"})

        async with StreamedCall(self._ctx.dispatcher, inv) as call:
            try:
                streams = await call.streams()
                result = None if streams else await call.result()
            except REFUSED as exc:
                return self._refusals.answer(exc, inv)
            if result is not None:
                return shape.response(result, malformed)
            request_id = {} if shape.request_id_header is None else {shape.request_id_header: inv.request_id}
            streamed = await write_streamed(request, call, headers=request_id, decorate=lambda _: None,
                                            on_malformed=malformed, where="webhook", extra=extra)
            if streamed is not None:
                return streamed
            result = await call.result()
            if result.function_error or not result.ok:
                return shape.response(result, malformed)  # the function's error, as the route answers it
            failed = shape.internal_error()
            failed.set_status(shape.malformed_status)
            return failed

    @staticmethod
    def _unauthorized(extra: dict[str, str]) -> web.Response:
        log.warning("webhook: authentication failed", extra={**extra, "status": 401})
        return web.json_response({"message": "Unauthorized"}, status=401)


class WebhookRefusals(Refusals):
    """The dispatcher's refusals answered as the route's gateway answers a failed Lambda integration."""

    __slots__ = ("_shape",)

    def __init__(self, shape: Shape) -> None:
        self._shape = shape

    def not_found(self, inv: Invocation) -> web.Response:
        log.error("webhook: the route's function is not configured",
                  extra={**_extra(inv), "error_type": "config"})
        return self._shape.internal_error()

    def throttled(self, inv: Invocation, exc: Throttled) -> web.Response:
        log.info("webhook: throttled", extra={**_extra(inv), "error_type": "throttled"})
        return self._shape.throttled()

    def too_large(self, inv: Invocation, exc: PayloadTooLarge) -> web.Response:
        return self._shape.too_large()

    def unavailable(self, inv: Invocation, exc: Unavailable) -> web.Response:
        log.warning("webhook: event not accepted: %s", exc, extra={**_extra(inv), "error_type": "connection"})
        return web.json_response({"message": "Service Unavailable"}, status=503,
                                 headers={"Retry-After": str(exc.retry_after)})

    def failed(self, inv: Invocation, exc: RouterError | OSError) -> web.Response:
        return _not_dispatched(exc, inv.route, inv.function, inv.request_id, self._shape)


def _extra(inv: Invocation) -> dict[str, str | None]:
    return {"route": inv.route, "function": inv.function, "request_id": inv.request_id}


def _not_dispatched(exc: BaseException, route: str | None, function: str, request_id: str,
                    shape: Shape) -> web.Response:
    log.error("webhook: could not dispatch the event: %s", type(exc).__name__,
              extra={"route": route, "function": function, "request_id": request_id})
    return shape.internal_error()


class WebhookTable:
    """The webhook routes being served, swappable while the router runs (a reload).

    The app has one catch-all route (``register_webhook_routes``) that resolves each request against the
    current table: an aiohttp ``UrlDispatcher`` holding one route per method of every webhook route, so
    paths, ``{name}`` parameters, 404 and 405 (with ``Allow``) behave as they did as routes of the app.

    ``fast`` holds the (method, raw path) pairs that aiohttp's routing, middlewares and this table took to a
    route without ``{name}`` parameters: requests the fast path (``router.http.fast_webhook``) may answer
    itself, the routing being settled. ``fast_params`` holds those taken to a route with parameters, with
    what they matched (``/orders/{id}``: one entry per path seen, the least recently used let go first, so
    that paths of many values neither grow it nor push out the routes without parameters). Learned as
    requests come, forgotten at a reload, bounded.
    """

    def __init__(self, ctx: HttpContext) -> None:
        self._ctx = ctx
        self._urls = web.UrlDispatcher()
        self._served_by: dict[web.AbstractRoute, WebhookSource] = {}
        self.resource: web.AbstractResource | None = None  # the app's catch-all route's
        self.fast: dict[tuple[bytes, bytes], WebhookSource] = {}
        self.fast_params: collections.OrderedDict[
            tuple[bytes, bytes], tuple[WebhookSource, Mapping[str, str]]] = collections.OrderedDict()

    def build(self, config: RouterConfig) -> Table:
        """The table of ``config``'s webhook routes, not yet served (``install`` serves it). Raises
        ``RouterError`` when two routes would answer the same method and path."""
        urls = web.UrlDispatcher()
        served_by: dict[web.AbstractRoute, WebhookSource] = {}
        for route in config.routes:
            if not isinstance(route.source, WebhookSourceConfig):
                continue
            source = WebhookSource(route, self._ctx)
            path = aiohttp_path(route.source.path)
            methods = ["*"] if "ANY" in route.source.methods else route.source.methods
            for method in methods:
                try:
                    served_by[urls.add_route(method, path, source.handle, name=None)] = source
                except (RuntimeError, ValueError) as exc:
                    raise RouterError(
                        f"route '{route.name}': cannot serve {method} {route.source.path}, {exc}; "
                        "give each webhook route its own path or methods"
                    ) from None
        urls.freeze()
        return urls, served_by

    def install(self, built: Table) -> None:
        """Serve a table ``build`` made; requests already being answered finish on the old one."""
        self._urls, self._served_by = built
        self.fast = {}
        self.fast_params = collections.OrderedDict()

    def _learn(self, request: web.Request, source: WebhookSource, params: dict[str, str]) -> None:
        """``request``'s method and raw path lead to ``source``, its ``{name}`` parts matching ``params``
        (see the class doc)."""
        if (source.source.stream or request.method == "HEAD" or (not params and len(self.fast) >= FAST_PATHS)
                or request.host is None or ".lambda-url." in request.host):
            return
        try:
            key = (request.method.encode("ascii"), request.rel_url.raw_path.encode("ascii"))
        except UnicodeEncodeError:
            return
        if request.raw_path.split("?", 1)[0].encode("ascii", "replace") != key[1]:
            return
        if not params:
            self.fast[key] = source
            return
        learned = self.fast_params
        if key not in learned and len(learned) >= FAST_PATHS:
            learned.popitem(last=False)
        learned[key] = (source, MappingProxyType(dict(params)))  # a copy: the caller's dict goes on

    def learned(self, key: tuple[bytes, bytes]) -> tuple[WebhookSource, Mapping[str, str] | None] | None:
        """The route a (method, raw path) pair was learned to lead to, with what its ``{name}`` parts
        matched (None for a route without parameters); None when it was not learned."""
        source = self.fast.get(key)
        if source is not None:
            return source, None
        learned = self.fast_params.get(key)
        if learned is not None:
            self.fast_params.move_to_end(key)  # used last: let go last
        return learned

    async def handle(self, request: web.Request) -> web.StreamResponse:
        match = await self._urls.resolve(request)
        error = match.http_exception
        if error is None:
            source = self._served_by[match.route]
            params = dict(match)
            self._learn(request, source, params)
            return await source.handle(request, params)
        if isinstance(error, web.HTTPNotFound):  # another route of the app's may know the path
            allowed: set[str] = set()
            for resource in request.app.router.resources():
                if resource is not self.resource:
                    allowed |= (await resource.resolve(request))[1]
            if allowed:
                raise web.HTTPMethodNotAllowed(request.method, allowed)
        raise error


Table = tuple[web.UrlDispatcher, dict[web.AbstractRoute, WebhookSource]]
CATCH_ALL = "/{webhook_path:.*}"
"""The app's last route: every request no other route took goes to the webhook table."""
FAST_PATHS = 1024
"""(method, raw path) pairs the fast path learns at most, for routes without and for routes with
parameters each (percent-encoded spellings of a path are pairs of their own)."""
WEBHOOKS = web.AppKey("router_webhooks", WebhookTable)


def register_webhook_routes(app: web.Application, ctx: HttpContext) -> WebhookTable:
    """Serve ``ctx.config``'s webhook routes through a ``WebhookTable`` (``app[WEBHOOKS]``), on a
    catch-all route that must be the app's last. Raises ``RouterError`` for clashing routes."""
    table = WebhookTable(ctx)
    table.install(table.build(ctx.config))
    app[WEBHOOKS] = table
    table.resource = app.router.add_route("*", CATCH_ALL, table.handle).resource
    return table
