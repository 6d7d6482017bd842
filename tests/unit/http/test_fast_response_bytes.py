"""``response_bytes`` (the webhook fast path's writer) against aiohttp writing the same response: a real
aiohttp server answers each case over a socket, and the bytes must be the same but for the ``Date``."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import pytest
from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11

from router.http.fast_webhook import response_bytes


def _with_cookie() -> web.Response:
    response = web.Response(text="c")
    response.set_cookie("session", "abc", httponly=True, path="/")
    response.headers.add("Set-Cookie", "other=1")
    return response


def _closing() -> web.Response:
    response = web.json_response({"bye": True})
    response.force_close()
    return response


CASES: dict[str, Callable[[], web.Response]] = {
    "text": lambda: web.Response(text="hello"),
    "json": lambda: web.json_response({"a": 1}, headers={"X-Id": "1"}),
    "bytes without a type": lambda: web.Response(body=b"\x00\x01"),
    "empty": lambda: web.Response(status=200),
    "204 with a type": lambda: web.Response(status=204, content_type="application/json"),
    "304": lambda: web.Response(status=304, headers={"ETag": '"x"'}),
    "an explicit length": lambda: web.Response(body=b"four", headers={"Content-Length": "4"}),
    "a rare status": lambda: web.Response(status=299, text="odd"),
    "repeated headers": lambda: web.Response(text="r", headers=[("X-A", "1"), ("X-A", "2")]),  # type: ignore[arg-type]
    "cookies": _with_cookie,
    "forced close": _closing,
    "a connection header of its own": lambda: web.Response(text="k", headers={"Connection": "keep-alive"}),
}


async def _aiohttp_bytes(case: str, version: str, keep_alive: bool) -> bytes:
    async def handle(request: web.Request) -> web.Response:
        return CASES[case]()

    app = web.Application()
    app.router.add_get("/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        connection = "" if keep_alive == (version == "1.1") else (
            "Connection: keep-alive\r\n" if keep_alive else "Connection: close\r\n")
        writer.write(f"GET / HTTP/{version}\r\nHost: x\r\n{connection}\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        match = re.search(rb"(?i)content-length: (\d+)", head)
        body = await reader.readexactly(int(match.group(1))) if match else b""
        writer.close()
        return head + body
    finally:
        await runner.cleanup()


def _undated(raw: bytes) -> bytes:
    return re.sub(rb"Date: [^\r]*\r\n", b"Date: -\r\n", raw)


@pytest.mark.parametrize("version", ["1.1", "1.0"])
@pytest.mark.parametrize("keep_alive", [True, False])
@pytest.mark.parametrize("case", list(CASES))
async def test_the_fast_path_writes_what_aiohttp_writes(case: str, version: str, keep_alive: bool) -> None:
    expected = await _aiohttp_bytes(case, version, keep_alive)
    response = CASES[case]()
    http_version = HttpVersion11 if version == "1.1" else HttpVersion10
    got = response_bytes(response, "GET", http_version, keep_alive and response.keep_alive is not False)
    assert _undated(got) == _undated(expected)


def test_a_header_aiohttp_will_not_write_is_refused() -> None:
    response = web.Response(text="x")
    response.headers["X-Bad"] = "a\r\nInjected: 1"
    with pytest.raises(ValueError, match="header injection"):
        response_bytes(response, "GET", HttpVersion11, True)


def test_a_streamed_response_is_not_this_paths() -> None:
    response = web.Response(text="x")
    response.enable_chunked_encoding()
    with pytest.raises(TypeError):
        response_bytes(response, "GET", HttpVersion11, True)
