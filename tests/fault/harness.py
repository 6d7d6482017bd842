"""Load for the fault tests: senders that record every send in a :class:`History`, bounded in count and
time, and the small clients (HTTP, AMQP publish) they use."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from tests.fault.checker import History

OK, REFUSED, UNKNOWN = "ok", "refused", "unknown"

Send = Callable[[list[str]], tuple[str, str]]
"""Sends a group of ids; returns (OK | REFUSED | UNKNOWN, why)."""


def http_post(port: int, path: str, body: bytes, headers: dict[str, str] | None = None,
              timeout: float = 10.0) -> tuple[str, str]:
    """POST to the router on 127.0.0.1 and classify the answer for the checker.

    202/200: accepted. A refused connection (the router is down) or a 4xx/503 (an answer that says the
    event was not taken): refused. A reset, a timeout, another 5xx: indeterminate.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        resp.read()
    except ConnectionRefusedError:
        return REFUSED, "connection refused"
    except (OSError, http.client.HTTPException) as exc:
        return UNKNOWN, f"{type(exc).__name__}"
    finally:
        conn.close()
    if resp.status in (200, 202):
        return OK, str(resp.status)
    if 400 <= resp.status < 500 or resp.status == 503:
        return REFUSED, str(resp.status)
    return UNKNOWN, str(resp.status)


class Sender(threading.Thread):
    """Sends ids ``<prefix><n>`` in groups of ``group`` with ``workers`` threads, recording each send.

    Runs until ``stop()``, until ``limit`` ids were sent, or until ``deadline`` (monotonic). With
    ``rate`` (ids per second), paces itself. Owned by the test: ``stop()`` joins it and re-raises what
    it met. ``accepted`` counts the ids acknowledged so far.
    """

    def __init__(self, send: Send, history: History, *, prefix: str = "e", limit: int = 1000,
                 group: int = 1, workers: int = 4, deadline: float | None = None,
                 rate: float | None = None) -> None:
        super().__init__(name=f"sender-{prefix}", daemon=True)
        self.send, self.history, self.prefix, self.limit = send, history, prefix, limit
        self.group, self.workers, self.rate = group, workers, rate
        self.deadline = deadline if deadline is not None else time.monotonic() + 120
        self.accepted = 0
        self.attempted = 0
        self.outcomes: dict[str, int] = {}
        self.error: BaseException | None = None
        self._next = 0
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._in_flight = 0
        self._started_at = 0.0

    def _take(self) -> list[str] | None:
        while True:
            while not self._running.wait(0.05):
                if self._stop_event.is_set():
                    return None
            with self._lock:
                if (self._stop_event.is_set() or self._next >= self.limit
                        or time.monotonic() > self.deadline):
                    return None
                if self.rate is not None:
                    wait = self._started_at + self._next / self.rate - time.monotonic()
                    if wait > 0:
                        self._stop_event.wait(wait)
                if not self._running.is_set():
                    continue  # paused meanwhile
                n = min(self.group, self.limit - self._next)
                ids = [f"{self.prefix}{i}" for i in range(self._next, self._next + n)]
                self._next += n
                self._in_flight += 1
                return ids

    def _work(self) -> None:
        while (ids := self._take()) is not None:
            status, why = self.send(ids)
            with self._lock:
                self._in_flight -= 1
                self.attempted += len(ids)
                self.outcomes[f"{status}:{why}"] = self.outcomes.get(f"{status}:{why}", 0) + len(ids)
                if status == OK:
                    self.accepted += len(ids)
            if status == OK:
                self.history.sent_ok(ids)
            elif status == REFUSED:
                self.history.sent_refused(ids, why)
                self._stop_event.wait(0.05)  # the target is down or full: do not spin
            else:
                self.history.sent_unknown(ids, why)
                self._stop_event.wait(0.05)

    def run(self) -> None:
        self._started_at = time.monotonic()
        threads = [threading.Thread(target=self._guarded, daemon=True) for _ in range(self.workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _guarded(self) -> None:
        try:
            self._work()
        except BaseException as exc:  # re-raised by stop() in the test's thread
            self.error = exc
            self._stop_event.set()

    def pause(self, timeout: float = 30) -> None:
        """Take no new ids until ``resume()``; returns once the sends in progress ended."""
        self._running.clear()
        deadline = time.monotonic() + timeout
        while self._in_flight:
            assert time.monotonic() < deadline, f"sender {self.name}: sends still in progress"
            time.sleep(0.01)

    def resume(self) -> None:
        """Send again, at the set rate from now on (no burst to catch up the pause)."""
        with self._lock:
            if self.rate is not None:
                self._started_at = time.monotonic() - self._next / self.rate
        self._running.set()

    def done(self) -> bool:
        return not self.is_alive()

    def stop(self, timeout: float = 60) -> None:
        self._stop_event.set()
        self.join(timeout)
        assert not self.is_alive(), f"sender {self.name} did not stop"
        if self.error is not None:
            raise self.error

    def wait_accepted(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.accepted < n:
            if self.error is not None:
                raise self.error
            if self.done() or time.monotonic() > deadline:
                raise AssertionError(f"sender {self.name}: {self.accepted} accepted, wanted {n}; "
                                     f"outcomes {self.outcomes}")
            time.sleep(0.05)


# --- RabbitMQ publishing with confirms -------------------------------------------------------------------


class AmqpPublisher:
    """Publishes persistent messages to a queue with publisher confirms, on a thread-owned event loop,
    over one robust connection kept across calls (it reconnects after a broker restart)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="amqp-publisher", daemon=True)
        self._thread.start()
        self._conn: Any = None
        self._channel: Any = None

    def _call(self, coro: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _channel_ready(self) -> Any:
        import aio_pika

        if self._conn is None or self._conn.is_closed:
            self._conn = await aio_pika.connect(self.url, timeout=5)
            self._channel = None
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._conn.channel(publisher_confirms=True)
        return self._channel

    def declare(self, queue: str, arguments: dict[str, Any] | None = None) -> None:
        async def go() -> None:
            channel = await self._channel_ready()
            await channel.declare_queue(queue, durable=True, arguments=arguments)

        self._call(go(), 30)

    def publish(self, queue: str, bodies: list[str]) -> tuple[str, str]:
        async def go() -> None:
            import aio_pika

            channel = await self._channel_ready()
            await asyncio.gather(*(
                channel.default_exchange.publish(
                    aio_pika.Message(b.encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=queue, mandatory=True)
                for b in bodies))

        try:
            self._call(asyncio.wait_for(go(), 10), 15)
        except ConnectionRefusedError:
            self._forget()
            return REFUSED, "connection refused"
        except Exception as exc:  # a lost connection, a nack, a timeout: the publish may have happened
            self._forget()
            return UNKNOWN, type(exc).__name__
        return OK, "confirmed"

    def _forget(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                self._call(conn.close(), 10)

    def depth(self, queue: str) -> int:
        async def go() -> int:
            channel = await self._channel_ready()
            q = await channel.declare_queue(queue, passive=True)
            return int(q.declaration_result.message_count or 0)

        return int(self._call(go(), 30))

    def delete(self, *queues: str) -> None:
        async def go() -> None:
            channel = await self._channel_ready()
            for q in queues:
                await channel.queue_delete(q)

        with contextlib.suppress(Exception):
            self._call(go(), 30)

    def close(self) -> None:
        self._forget()

        async def drain() -> None:  # no task left pending (nor coroutine never awaited) on the closed loop
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._loop.shutdown_asyncgens()

        with contextlib.suppress(Exception):
            self._call(drain(), 30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def metric(port: int, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples on the router's /metrics whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += float(s.value)
    return total


def invoke_body(ids: list[str]) -> bytes:
    [one] = ids
    return json.dumps({"id": one}).encode()
