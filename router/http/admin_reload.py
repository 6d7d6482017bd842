"""``POST /admin/reload``: re-read the config file, as SIGHUP does, and answer what came of it.

Behind the Invoke API's credentials (``router.http.invoke_auth``). 200 with ``result`` applied or
unchanged; 400 with ``result: refused`` and the problems (FILE:LINE:COL lines, or the settings only a
restart changes) when the running config was kept; 503 when this app cannot reload (a router not started
from a file).
"""

from __future__ import annotations

from aiohttp import web

from router.http.context import CTX
from router.http.invoke_auth import authenticate
from router.invocation import new_request_id

PATH = "/admin/reload"
_BODY_LIMIT = 1024


async def reload(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    request_id = new_request_id()
    authenticated = await authenticate(request, request_id, _BODY_LIMIT)
    if isinstance(authenticated, web.Response):
        return authenticated
    if ctx.reload is None:
        return web.json_response({"message": "this router cannot reload: it was not started from a config "
                                  "file"}, status=503)
    outcome = await ctx.reload()
    return web.json_response(outcome.as_json(), status=400 if outcome.result == "refused" else 200)


def add_reload_route(app: web.Application) -> None:
    app.router.add_post(PATH, reload)
