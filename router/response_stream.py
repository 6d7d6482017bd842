"""A function's streamed response on its way from the Runtime API to the caller (Lambda's response
streaming): its chunks in order, then its end.

The producer is the Runtime API connection the function posts its response on (``push`` and ``end``
from loop callbacks); the consumer is whoever answers the caller (a function URL, InvokeWithResponseStream),
iterating with ``async for``. At most ``HIGH_WATER`` bytes are held: above it the producer is told to
stop reading the function's socket (``push`` returns True) until the consumer has taken the held bytes
down to ``LOW_WATER`` (the ``resume`` callback), so a slow caller slows the function's writes (back
pressure), never the router's memory. A consumer that goes away calls ``discard``: what comes next is
dropped, so the function can still finish.

Whether the invocation succeeded is the invocation's ``Result``, not the stream's business: a stream
ends ``ok`` or not (``failed``: an error in the trailers, the function's connection lost, the
invocation ended otherwise), and the caller takes the error itself from the result.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

HIGH_WATER = 256 * 1024
"""Bytes held for the caller before the function's socket stops being read."""
LOW_WATER = 64 * 1024
"""Held bytes under which reading the function's socket resumes."""


def _noop() -> None:
    pass


class ResponseStream:
    """One invocation's streamed response (see the module doc)."""

    __slots__ = ("_chunks", "_discarding", "_ended", "_held", "_paused", "_resume", "_waiter",
                 "content_type", "failed", "opened")

    def __init__(self) -> None:
        self.content_type = "application/octet-stream"
        self.opened = False  # the function began a streamed response (set by the Runtime API)
        self.failed = False  # ended otherwise than by a clean end of the function's body
        self._chunks: collections.deque[bytes] = collections.deque()
        self._held = 0
        self._ended = False
        self._paused = False
        self._discarding = False
        self._resume: Callable[[], None] = _noop
        self._waiter: asyncio.Future[None] | None = None

    # --- the producer (the Runtime API) -------------------------------------------------------------------

    def open(self, content_type: str, resume: Callable[[], None]) -> None:
        """The function starts its streamed response; ``resume`` restarts reading its socket after
        ``push`` asked to stop."""
        self.opened = True
        self.content_type = content_type
        self._resume = resume

    def push(self, data: bytes) -> bool:
        """Take the next bytes of the body; True asks the producer to stop reading until ``resume``."""
        if self._ended or not data:
            return False
        if self._discarding:
            return False
        self._chunks.append(data)
        self._held += len(data)
        self._wake()
        if self._held >= HIGH_WATER:
            self._paused = True
            return True
        return False

    def end(self, *, failed: bool = False) -> None:
        """The body is complete (``failed``: it ended with an error or was cut short). Once only."""
        if self._ended:
            return
        self._ended = True
        self.failed = failed
        self._wake()

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def has_data(self) -> bool:
        """Bytes are held for the consumer."""
        return bool(self._chunks)

    # --- the consumer (whoever answers the caller) --------------------------------------------------------

    async def started(self) -> None:
        """Wait until there is a first chunk or the stream ended (a response that begins streaming
        but fails before any byte is answered as the error it is)."""
        while not self._chunks and not self._ended:
            await self._wait()

    def __aiter__(self) -> ResponseStream:
        return self

    async def __anext__(self) -> bytes:
        while not self._chunks:
            if self._ended:
                raise StopAsyncIteration
            await self._wait()
        chunk = self._chunks.popleft()
        self._held -= len(chunk)
        if self._paused and self._held <= LOW_WATER:
            self._paused = False
            self._resume()
        return chunk

    def discard(self) -> None:
        """The caller is gone: drop what is held and whatever comes, and let the function go on."""
        self._discarding = True
        self._chunks.clear()
        self._held = 0
        if self._paused:
            self._paused = False
            self._resume()

    # --- internals ----------------------------------------------------------------------------------------

    async def _wait(self) -> None:
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
