"""The admin API of routes and functions (pause and resume), on the Invoke port beside the Invoke API and
with its credentials: what ``router pause | resume | status`` and the console use.

``GET /admin/routes``, ``GET /admin/functions``: every route (of any type) and function with its state;
``POST /admin/routes/{name}/pause|resume`` and ``POST /admin/functions/{name}/pause|resume``: change it
and answer the new state. A paused route's pollers stop receiving, its webhook answers 503 with
Retry-After and its schedule skips ticks; a paused function (reserved concurrency 0) keeps its async
events queued and throttles sync callers (429). Errors are ``{"message": ...}`` with 404 for an unknown
name. Changes are kept in the state store (``router.core.controls``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from router.core.controls import ControlError, Controls
from router.http.context import CTX
from router.http.control_api import POLLER_TYPES
from router.http.invoke_auth import authenticate
from router.invocation import new_request_id
from router.mappings import mapping_uuid

BODY_LIMIT = 64 * 1024


def route_state(controls: Controls, request: web.Request, name: str) -> dict[str, Any]:
    config = request.app[CTX].config
    route = next(r for r in config.routes if r.name == name)
    out: dict[str, Any] = {
        "name": name, "type": route.source.type, "function": route.function,
        "state": "enabled" if controls.route_enabled(name) else "paused",
        "updated_at": controls.route_updated(name) or None,
    }
    if route.source.type in POLLER_TYPES:
        out["uuid"] = mapping_uuid(name)  # its event source mapping (Lambda's control API)
    return out


def function_state(controls: Controls, request: web.Request, name: str) -> dict[str, Any]:
    config = request.app[CTX].config
    state = controls.function(name)
    settings = controls.async_config(name)
    return {
        "name": name, "arn": config.aws.function_arn(name),
        "kind": config.functions[name].kind,  # local, http or lambda
        "runtime": config.functions[name].runtime if config.functions[name].kind == "local" else None,
        "state": "paused" if controls.paused(name) else "enabled",
        "reserved_concurrency": controls.reserved(name),
        "config_concurrency": config.functions[name].concurrency,
        "maximum_retry_attempts": settings.retries,
        "maximum_event_age": settings.max_event_age,
        "updated_at": state.updated_at or None,
    }


async def _begin(request: web.Request) -> Controls | web.Response:
    answer = await authenticate(request, new_request_id(), BODY_LIMIT)
    if isinstance(answer, web.Response):
        return answer
    controls = request.app[CTX].controls
    assert controls is not None
    return controls


async def list_routes(request: web.Request) -> web.Response:
    controls = await _begin(request)
    if isinstance(controls, web.Response):
        return controls
    return web.json_response({"routes": [route_state(controls, request, n) for n in controls.route_names()]})


async def list_functions(request: web.Request) -> web.Response:
    controls = await _begin(request)
    if isinstance(controls, web.Response):
        return controls
    names = list(request.app[CTX].config.functions)
    return web.json_response({"functions": [function_state(controls, request, n) for n in names]})


async def change_route(request: web.Request) -> web.Response:
    controls = await _begin(request)
    if isinstance(controls, web.Response):
        return controls
    name, action = request.match_info["name"], request.match_info["action"]
    try:
        await controls.set_route_enabled(name, action == "resume")
    except ControlError as exc:
        return web.json_response({"message": f"{exc}; `router status` lists them"}, status=404)
    return web.json_response(route_state(controls, request, name))


async def change_function(request: web.Request) -> web.Response:
    controls = await _begin(request)
    if isinstance(controls, web.Response):
        return controls
    name, action = request.match_info["name"], request.match_info["action"]
    try:
        # Resume: back to the config's concurrency (a cap set through PutFunctionConcurrency is dropped).
        await controls.set_reserved(name, 0 if action == "pause" else None)
    except ControlError as exc:
        status = 404 if exc.code == "ResourceNotFoundException" else 400
        return web.json_response({"message": f"{exc}; `router status` lists them"}, status=status)
    return web.json_response(function_state(controls, request, name))


def add_admin_routes(app: web.Application) -> None:
    """The admin endpoints of routes and functions on ``app`` (with the Invoke API)."""
    r = app.router
    r.add_get("/admin/routes", list_routes)
    r.add_get("/admin/functions", list_functions)
    r.add_post(r"/admin/routes/{name}/{action:pause|resume}", change_route)
    r.add_post(r"/admin/functions/{name}/{action:pause|resume}", change_function)


def add_control_and_admin_routes(app: web.Application) -> None:
    """Lambda's control API and the admin API of routes and functions (``server.invoke_api``)."""
    from router.http.control_api import add_control_routes
    from router.http.versions_api import add_version_routes

    add_control_routes(app)
    add_version_routes(app)
    add_admin_routes(app)
