"""An HTTP server the tests run in a thread of their own, as the target of ``http`` functions: it records
every delivery (which function, which id, which replica sent it, when) and how many of each replica's
deliveries were in progress at once, so that tests count losses, duplicates and concurrency exactly."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass

from aiohttp import web

from tests.router_process import free_port


@dataclass(frozen=True, slots=True)
class Delivery:
    function: str
    id: str  # what the event carries: the webhook body, or the schedule's nominal time
    replica: str  # the X-Replica header the replica's function config sends
    at: float  # time.monotonic() when the delivery arrived


class RecorderServer:
    """``POST /<function>``: records the delivery, waits ``delays.get(function, 0)`` seconds, answers 200.

    The id is the event's ``body`` (a webhook event) or ``time`` (a Scheduled Event)."""

    def __init__(self, delays: dict[str, float] | None = None) -> None:
        self.port = free_port()
        self.delays = dict(delays or {})
        self._lock = threading.Lock()
        self._deliveries: list[Delivery] = []
        self._in_flight: dict[tuple[str, str], int] = {}
        self.max_in_flight: dict[tuple[str, str], int] = {}  # (function, replica) -> most at once
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="recorder", daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RecorderServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/{function}", self._record)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _record(self, request: web.Request) -> web.Response:
        function = request.match_info["function"]
        event = json.loads(await request.read())
        key = str(event["body"] if "body" in event else event["time"])
        replica = request.headers.get("X-Replica", "?")
        slot = (function, replica)
        with self._lock:
            self._deliveries.append(Delivery(function, key, replica, time.monotonic()))
            n = self._in_flight[slot] = self._in_flight.get(slot, 0) + 1
            self.max_in_flight[slot] = max(self.max_in_flight.get(slot, 0), n)
        try:
            delay = self.delays.get(function, 0.0)
            if delay:
                await asyncio.sleep(delay)
        finally:
            with self._lock:
                self._in_flight[slot] -= 1
        return web.json_response({"ok": True})

    def deliveries(self, function: str | None = None) -> list[Delivery]:
        with self._lock:
            return [d for d in self._deliveries if function is None or d.function == function]

    def ids(self, function: str) -> list[str]:
        """One id per delivery of ``function`` (an id may repeat)."""
        return [d.id for d in self.deliveries(function)]

    def close(self) -> None:
        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        try:
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
