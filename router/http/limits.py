"""Reading request bodies under a size limit, so oversize bodies become 413s and never 500s."""

from __future__ import annotations

from aiohttp import web


class BodyTooLarge(Exception):
    """Raised by ``read_body`` when a request body is over its limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"request body: over the limit of {limit} bytes")


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, or ``BodyTooLarge`` as soon as Content-Length or the bytes read pass ``limit``.

    The app's ``client_max_size`` is set a little above the largest limit, so aiohttp's own
    ``HTTPRequestEntityTooLarge`` is turned into ``BodyTooLarge`` here too.
    """
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge(limit)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(limit) from None
    if len(body) > limit:
        raise BodyTooLarge(limit)
    return body
