"""A TCP proxy on 127.0.0.1 in front of a real server, for faults of the path between them.

``pause()`` / ``resume()``: while paused, bytes are read from both sides and held, so each end sees an
open connection that never answers (a hung network path or server).

``upload_delay``: bytes from the client reach the server that many seconds after the client sent them
(in order), and with ``drop_on_close`` a client that closes its end loses what is still held: the
server's side is reset at once. That is what a TCP reset does to bytes the server had not read yet (a
socket closed with unread data sends one), on a path slow enough to show it every time.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from typing import Any


class TcpProxy:
    def __init__(self, host: str, port: int, *, upload_delay: float = 0.0,
                 drop_on_close: bool = False) -> None:
        self._upstream = (host, port)
        self._upload_delay = upload_delay
        self._drop_on_close = drop_on_close
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._thread.start()
        self.port: int = self._call(self._start())
        self.dropped = 0  # bytes from clients that never reached the server (drop_on_close)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> int:
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        upload = (self._delayed(reader, up_writer) if self._upload_delay > 0
                  else self._pipe(reader, up_writer))
        for coro in (upload, self._pipe(up_reader, writer)):
            task = asyncio.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await self._flowing.wait()
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            dst.close()

    async def _delayed(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Client to server, each chunk ``upload_delay`` after it arrived."""
        held: collections.deque[tuple[float, bytes]] = collections.deque()
        more = asyncio.Event()
        ended = False

        async def send() -> None:
            loop = asyncio.get_running_loop()
            while held or not ended:
                if not held:
                    more.clear()
                    await more.wait()
                    continue
                due, data = held[0]
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                    continue
                held.popleft()
                await self._flowing.wait()
                dst.write(data)
                await dst.drain()

        sender = asyncio.create_task(send())
        try:
            try:
                while data := await src.read(65536):
                    held.append((asyncio.get_running_loop().time() + self._upload_delay, data))
                    more.set()
            except OSError:
                pass
            ended = True
            more.set()
            if self._drop_on_close:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
                self.dropped += sum(len(data) for _, data in held)
                held.clear()
                dst.transport.abort()  # a reset: the server never sees the bytes still held
                return
            await sender
        except OSError:
            pass
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            dst.close()

    def pause(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.set)

    def close(self) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        self._call(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
