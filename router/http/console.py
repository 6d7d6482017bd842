"""The web console (``server.console: true``): one static page and its script, shipped in the package.

The page holds no data of its own: everything it shows it asks of the router's APIs (the admin API, the
status API, the Invoke API, ``/metrics``) from the browser, with the credentials the user types in (an
Invoke API token, or an access key of ``server.invoke_keys`` the page signs SigV4 with), so it is behind
exactly the auth of those APIs. The files are served with a strict Content-Security-Policy (own scripts
only, no inline script, no framing) and never cached stale (ETag of the package's file).
"""

from __future__ import annotations

import hashlib
from importlib import resources

from aiohttp import web

PREFIX = "/console"
_FILES = {
    "": ("index.html", "text/html"),
    "console.js": ("console.js", "text/javascript"),
    "console.css": ("console.css", "text/css"),
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; "
                                "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                                "base-uri 'none'; form-action 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class _Asset:
    __slots__ = ("body", "content_type", "etag")

    def __init__(self, body: bytes, content_type: str) -> None:
        self.body = body
        self.content_type = content_type
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _load() -> dict[str, _Asset]:
    folder = resources.files("router.http").joinpath("console_static")
    return {name: _Asset(folder.joinpath(file).read_bytes(), ctype) for name, (file, ctype) in _FILES.items()}


def add_console_routes(app: web.Application) -> None:
    """``/console`` (the page), ``/console/console.js`` and ``/console/console.css``."""
    assets = _load()

    async def serve(request: web.Request) -> web.StreamResponse:
        asset = assets.get(request.match_info.get("file", ""))
        if asset is None:
            raise web.HTTPNotFound()
        if request.headers.get("If-None-Match") == asset.etag:
            return web.Response(status=304, headers={"ETag": asset.etag, **_SECURITY_HEADERS})
        return web.Response(body=asset.body, content_type=asset.content_type, charset="utf-8",
                            headers={"ETag": asset.etag, **_SECURITY_HEADERS})

    async def slash(_request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(PREFIX)

    app.router.add_get(PREFIX, serve)
    app.router.add_get(PREFIX + "/", slash)
    app.router.add_get(PREFIX + "/{file:console\\.(?:js|css)}", serve)
