"""An async event the router cannot persist in time is refused with 503 and Retry-After, and never
persisted behind the caller's back (issue 9 defect 6 and the async_queue login item of 11).

The stalled database is real: PostgreSQL behind a TCP proxy in this test that stops forwarding bytes
(the connection stays open, nothing is refused), as a hung network path or database does.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from yarl import URL

from tests.router_process import RouterFactory, http
from tests.waiting import until_sync

RECORDER = """
import json, os, pathlib

def handler(event, context):
    body = json.loads(event.get("body") or "{}")
    pathlib.Path(os.environ["SEEN_DIR"], body["id"]).write_text(context.aws_request_id)
    return "ok"
"""


class StallingProxy:
    """A TCP proxy on 127.0.0.1 to ``upstream`` whose forwarding can be paused: while paused, bytes are
    read from both sides and held, so each end sees an open connection that never answers."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="stalling-proxy", daemon=True)
        self._thread.start()
        self.port = self._call(self._start())

    def _call(self, coro):  # type: ignore[no-untyped-def]
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
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
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


@pytest.fixture
def database(postgres_dsn: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one router (dropped afterwards); its DSN."""
    name = f"router_stall_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_dsn).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _rows(dsn: str, request_id: str) -> int:
    async def go() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval(
                "SELECT count(*) FROM router_async_events WHERE request_id = $1", request_id))
        finally:
            await conn.close()

    return asyncio.run(go())


@pytest.mark.postgres
def test_stalled_postgres_answers_503_and_never_persists_the_event_later(
    router_factory: RouterFactory, tmp_path: Path, database: str,
) -> None:
    url = make_url(database)
    proxy = StallingProxy(url.host or "127.0.0.1", url.port or 5432)
    try:
        seen = tmp_path / "seen"
        seen.mkdir()
        code = router_factory.write_function("rec", RECORDER)
        through_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        rp = router_factory(f"""
            version: 1
            server: {{host: 127.0.0.1, port: @PORT@}}
            state: {{url: "{through_proxy}", write_timeout: 1s}}
            functions:
              rec: {{runtime: python3.11, handler: app.handler, code: {code},
                     environment: {{SEEN_DIR: "{seen}"}}, async: {{retries: 0}}}}
            routes:
              - {{name: in, source: {{type: webhook, path: /in}}, function: rec, invocation: async}}
        """)
        assert http("POST", rp.url + "/in", b'{"id": "before"}')[0] == 202
        until_sync(lambda: (seen / "before").exists(), what="the event accepted before the stall",
                   deadline=20)

        proxy.pause()
        status, headers, body = http("POST", rp.url + "/in", b'{"id": "stalled"}', timeout=15)
        assert status == 503, body
        assert headers["retry-after"] == "1"
        assert json.loads(body) == {"message": "Service Unavailable"}
        stalled_id = headers["apigw-requestid"]
        # The Invoke API's Event invocations get the same answer, as an AWS error the SDKs retry.
        status, headers, body = http(
            "POST", rp.url + "/2015-03-31/functions/rec/invocations", b'{"body": "{\\"id\\": \\"event\\"}"}',
            {"X-Amz-Invocation-Type": "Event"}, timeout=15)
        assert status == 503, body
        assert headers["retry-after"] == "1"
        assert headers["x-amzn-errortype"] == "ServiceException"
        event_id = headers["x-amzn-requestid"]
        proxy.resume()

        def accepted() -> bool:  # the first writes after the stall may meet a connection it broke
            return http("POST", rp.url + "/in", b'{"id": "after"}', timeout=15)[0] == 202

        until_sync(accepted, deadline=30, interval=0.5, what="an event accepted after the stall")
        until_sync(lambda: (seen / "after").exists(), what="the event accepted after the stall", deadline=20)
        assert not (seen / "stalled").exists()
        assert not (seen / "event").exists()
        assert _rows(database, stalled_id) == 0
        assert _rows(database, event_id) == 0
        assert rp.stop() == 0
        assert "never retrieved" not in rp.logs()  # every outcome of a given-up write is accounted for
        records = rp.log_records()
        assert any(r.get("request_id") == stalled_id and r.get("level") == "warning"
                   and "not accepted" in r["message"] for r in records), rp.logs()
    finally:
        proxy.close()


def test_async_queue_refusing_the_login_answers_503_at_once(
    router_factory: RouterFactory, tmp_path: Path, amqp_url: str,
) -> None:
    wrong = str(URL(amqp_url).with_user("guest").with_password(f"wrong-{uuid.uuid4().hex[:8]}"))
    code = router_factory.write_function("rec", RECORDER)
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: {{url: "sqlite:///{tmp_path / 'state.db'}", write_timeout: 30s}}
        async_queue: "{wrong}"
        functions:
          rec: {{runtime: python3.11, handler: app.handler, code: {code}}}
        routes:
          - {{name: in, source: {{type: webhook, path: /in}}, function: rec, invocation: async}}
    """, start=False)
    rp.start(wait_ready=False)  # never ready: /readyz reports the async queue
    until_sync(lambda: "login refused" in rp.logs(), what="the refused login in the log", deadline=20)
    # A caller is not held for write_timeout (30 s here, past this client's 10 s): it gets 503 at once.
    status, headers, body = http("POST", rp.url + "/in", b'{"id": "x"}', timeout=10)
    assert status == 503, body
    assert headers["retry-after"] == "30"
    assert "check the user name and password in async_queue" in rp.logs()
    assert rp.stop() == 0
    assert "wrong-" not in rp.logs()  # the password is never logged
