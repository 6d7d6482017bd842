"""An async event the router cannot persist in time is refused with 503 and Retry-After, and never
persisted behind the caller's back (issue 9 defect 6 and the async_queue login item of 11).

The stalled database is real: PostgreSQL behind a TCP proxy (tests/tcp_proxy.py) that stops forwarding bytes
(the connection stays open, nothing is refused), as a hung network path or database does.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from yarl import URL

from tests.router_process import RouterFactory, http
from tests.tcp_proxy import TcpProxy
from tests.waiting import until_sync

RECORDER = """
import json, os, pathlib

def handler(event, context):
    body = json.loads(event.get("body") or "{}")
    pathlib.Path(os.environ["SEEN_DIR"], body["id"]).write_text(context.aws_request_id)
    return "ok"
"""


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
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
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
