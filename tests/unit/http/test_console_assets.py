"""The console's files: served only with ``server.console: true``, with a strict CSP, revalidated by ETag."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from .conftest import make_config


async def test_the_console_is_off_by_default(serve: Any) -> None:
    server = await serve()
    for path in ("/console", "/console/console.js"):
        async with server.session.get(server.url + path) as r:
            assert r.status == 404


async def test_the_page_and_its_files_with_a_strict_policy(serve: Any) -> None:
    server = await serve(make_config(server={"console": True}))
    async with server.session.get(server.url + "/console") as r:
        assert r.status == 200
        assert r.content_type == "text/html"
        page = await r.text()
        policy = r.headers["Content-Security-Policy"]
        etag = r.headers["ETag"]
    assert '<script src="/console/console.js" defer></script>' in page
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "default-src 'none'" in policy
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    async with server.session.get(server.url + "/console", headers={"If-None-Match": etag}) as r:
        assert r.status == 304
    for name, ctype in (("console.js", "text/javascript"), ("console.css", "text/css")):
        async with server.session.get(server.url + "/console/" + name) as r:
            assert r.status == 200
            assert r.content_type == ctype
            assert len(await r.read()) > 1000
    async with server.session.get(server.url + "/console/other.js") as r:
        assert r.status == 404
    async with server.session.get(server.url + "/console/", allow_redirects=False) as r:
        assert r.status == 302
        assert r.headers["Location"] == "/console"


def test_the_console_needs_the_invoke_api() -> None:
    with pytest.raises(ValidationError, match="console: true needs invoke_api: true"):
        make_config(server={"console": True, "invoke_api": False})
