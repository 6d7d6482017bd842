"""A worker's stdout and stderr: a pipe the router creates, read as lines by an event-loop reader callback.

The router makes the pipe itself (``OutputPipe.open``) and hands the write end to the worker as its
fds 1 and 2, so the same reader works for every way a worker is started (spawned or forked from a
template) and on every event loop (asyncio's or uvloop's). Reads are non-blocking ``os.read`` calls:

- as bytes arrive, a reader callback splits them into lines (a line over ``MAX_LINE`` is cut, as
  CloudWatch cuts log events at 256 KB) and hands each to ``on_line``;
- ``drain()`` reads whatever is in the pipe right now, synchronously, and flushes unterminated lines.
  A runtime flushes its output before it posts the result, so when the result arrives every byte of
  the invocation's output is already in the pipe: one ``drain()`` attributes all of it to the
  invocation before END/REPORT are written, without waiting for another turn of the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

MAX_LINE = 256 * 1024
_READ = 256 * 1024


class _Pipe:
    __slots__ = ("_loop", "_on_line", "_partial", "fd")

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop, on_line: Callable[[bytes], None]) -> None:
        self.fd = fd
        self._loop = loop
        self._on_line = on_line
        self._partial = b""
        os.set_blocking(fd, False)
        loop.add_reader(fd, self.read)

    def read(self) -> None:
        """Read what the pipe holds now; at end of file stop reading and close it."""
        while self.fd >= 0:
            try:
                data = os.read(self.fd, _READ)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self.close()
                return
            self._feed(data)
            if len(data) < _READ:
                return  # a short read emptied the pipe

    def _feed(self, data: bytes) -> None:
        buf = self._partial + data if self._partial else data
        *lines, rest = buf.split(b"\n")
        for line in lines:
            self._on_line(line)
        if len(rest) > MAX_LINE:
            self._on_line(rest)
            rest = b""
        self._partial = rest

    def flush(self) -> None:
        if self._partial:
            line, self._partial = self._partial, b""
            self._on_line(line)

    def close(self) -> None:
        if self.fd >= 0:
            self._loop.remove_reader(self.fd)
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        self.flush()


class OutputPipe:
    """The read end of the one pipe a worker's stdout and stderr both write to, split into lines.

    One pipe for both keeps the order in which the worker wrote its lines (Lambda sends both streams
    to the one log stream too) and costs one read per drain."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_line: Callable[[bytes], None], read_fd: int
    ) -> None:
        self._pipe = _Pipe(read_fd, loop, on_line)

    @classmethod
    def open(cls, on_line: Callable[[bytes], None]) -> tuple[OutputPipe, int]:
        """A new pipe; returns it and the write end, for the worker's fds 1 and 2.

        The caller closes the write end once the worker has it (after spawn or fork)."""
        read_fd, write_fd = os.pipe()
        return cls(asyncio.get_running_loop(), on_line, read_fd), write_fd

    def drain(self) -> None:
        """Hand over every complete line written so far, then any unterminated rest."""
        self._pipe.read()
        self._pipe.flush()

    def close(self) -> None:
        """Read what is left, stop reading and close the read end."""
        if self._pipe.fd >= 0:
            self._pipe.read()
        self._pipe.close()
