"""The request the webhook fast path (``router.http.fast_webhook``) hands to a webhook route: what the
route's code and the event shapes read of aiohttp's ``web.Request``, made from httptools' parse."""

from __future__ import annotations

import asyncio
from types import MappingProxyType

from aiohttp.http import HttpVersion
from multidict import CIMultiDictProxy
from yarl import URL

_NO_PARAMS: MappingProxyType[str, str] = MappingProxyType({})


class FastRequest:
    """What the webhook path reads of a request (the part of ``web.Request`` the event shapes use)."""

    __slots__ = ("headers", "host", "keep_alive", "method", "raw_path", "rel_url", "remote", "transport",
                 "version")
    scheme = "http"
    match_info = _NO_PARAMS

    def __init__(self, method: str, target: str, headers: CIMultiDictProxy[str], host: str,
                 remote: str | None, version: HttpVersion, transport: asyncio.Transport,
                 keep_alive: bool) -> None:
        self.method = method
        self.raw_path = target
        path, _, query = target.partition("?")
        self.rel_url = URL.build(path=path, query_string=query, encoded=True)
        self.headers = headers
        self.host = host
        self.remote = remote
        self.version = version
        self.transport = transport
        self.keep_alive = keep_alive

    @property
    def path(self) -> str:
        return self.rel_url.path
