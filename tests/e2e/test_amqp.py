"""`router run` with an amqp route against the machine's RabbitMQ (the ``amqp_url`` fixture).

Each test uses its own queue names (deleted afterwards). The function's side effects are files, so the
tests see exactly what the handler saw, across router restarts. The two reliability tests move BULK
messages (env ROUTER_TEST_AMQP_MESSAGES, default 5,000); the broker fault is a real
``rabbitmqctl stop_app`` / ``start_app`` under CI=true or with ROUTER_TEST_RABBITMQ_RESTART=1 (it
disturbs every other client of the broker meanwhile), else a broker-side close of the router's own
connections.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.router_process import RouterFactory, RouterProcess, http
from tests.waiting import until_sync

BULK = int(os.environ.get("ROUTER_TEST_AMQP_MESSAGES", "5000"))


# --- a small synchronous broker client for the tests --------------------------------------------------


class Broker:
    """Declare, publish, read and delete on the test broker; each call is one short aio-pika session."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.queues: list[str] = []

    def _run(self, fn: Any) -> Any:
        async def session() -> Any:
            import aio_pika

            conn = await aio_pika.connect(self.url, timeout=10)
            try:
                channel = await conn.channel(publisher_confirms=True)
                return await fn(aio_pika, channel)
            finally:
                await conn.close()

        return asyncio.run(session())

    def name(self, prefix: str) -> str:
        name = f"test-{prefix}-{uuid.uuid4().hex[:8]}"
        self.queues += [name, name + ".router-delay"]
        return name

    def declare(self, name: str, arguments: dict[str, Any] | None = None) -> None:
        async def fn(_: Any, channel: Any) -> None:
            await channel.declare_queue(name, durable=True, arguments=arguments)

        self._run(fn)

    def publish(self, queue: str, bodies: list[bytes], **props: Any) -> None:
        async def fn(aio_pika: Any, channel: Any) -> None:
            for i in range(0, len(bodies), 500):  # confirms awaited in chunks: fast and bounded
                await asyncio.gather(*(
                    channel.default_exchange.publish(
                        aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **props),
                        routing_key=queue)
                    for body in bodies[i:i + 500]))

        self._run(fn)

    def _declared(self, queue: str) -> Any:
        """The broker's answer to a passive declare of ``queue`` (its message and consumer counts)."""
        async def fn(_: Any, channel: Any) -> Any:
            return (await channel.declare_queue(queue, passive=True)).declaration_result

        return self._run(fn)

    def count(self, queue: str) -> int:
        return int(self._declared(queue).message_count)

    def consumers(self, queue: str) -> int:
        return int(self._declared(queue).consumer_count)

    def get_all(self, queue: str) -> list[Any]:
        """Every message now ready in ``queue`` (acked: they are taken)."""

        async def fn(_: Any, channel: Any) -> list[Any]:
            q = await channel.declare_queue(queue, passive=True)
            out = []
            while (m := await q.get(no_ack=True, fail=False)) is not None:
                out.append(m)
            return out

        return list(self._run(fn))

    def delete_all(self) -> None:
        async def fn(_: Any, channel: Any) -> None:
            for name in self.queues:
                await channel.queue_delete(name)

        self._run(fn)


@pytest.fixture
def broker(amqp_url: str) -> Iterator[Broker]:
    b = Broker(amqp_url)
    yield b
    b.delete_all()


def _config(tmp_path: Path, url: str, source: str, *, concurrency: int = 4, max_body: str = "6MB",
            filters: str = "", route: str = "orders") -> str:
    if "declare:" not in source:  # these tests' queues are the router's to declare, unless they say
        source = "declare: true, " + source
    return f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 5s, max_body: {max_body}}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          record:
            runtime: python3.11
            handler: app.handler
            code: {tmp_path / 'functions' / 'record'}
            timeout: 60s
            concurrency: {concurrency}
        routes:
          - name: {route}
            source: {{type: amqp, url: "{url}", {source}}}
            function: record
            {filters}
    """


def _metric(rp: RouterProcess, name: str) -> float:
    status, _, body = http("GET", rp.url + "/metrics")
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _readyz(rp: RouterProcess) -> tuple[int, dict[str, Any]]:
    """Status and body of /readyz; (0, {}) while the router does not listen yet."""
    try:
        status, _, body = http("GET", rp.url + "/readyz", timeout=5)
    except OSError:
        return 0, {}
    return status, json.loads(body or b"{}")


# --- event shape, filters, ack --------------------------------------------------------------------------


def test_batch_event_shape_and_ack(router_factory: RouterFactory, tmp_path: Path, broker: Broker,
                                   amqp_url: str) -> None:
    out = tmp_path / "events"
    out.mkdir()
    router_factory.write_function("record", f"""
        import json, os, uuid
        def handler(event, context):
            part = os.path.join("{out}", "..", uuid.uuid4().hex)  # written whole, then moved in
            with open(part, "w") as f:
                json.dump(event, f)
            os.replace(part, os.path.join("{out}", os.path.basename(part)))
    """)
    queue = broker.name("shape")
    rp = router_factory(_config(tmp_path, amqp_url,
                                f"queue: {queue}, prefetch: 10, batch_size: 3, batch_window: 5s"))
    ts = dt.datetime(2024, 3, 5, 14, 7, 9, tzinfo=dt.UTC)
    broker.publish(queue, [b'{"n": 1}'], content_type="application/json", headers={"h": "v", "n": 7},
                   message_id="m-1", correlation_id="c-1", timestamp=ts, type="order.created", app_id="shop",
                   priority=3, reply_to="replies", expiration=60)
    broker.publish(queue, [b"\xff\xfe not utf-8", b"plain text"])
    until_sync(lambda: list(out.iterdir()), deadline=30, what="the function ran")
    [path] = list(out.iterdir())
    event = json.loads(path.read_text())
    assert event["eventSource"] == "aws:rmq"
    assert event["eventSourceArn"] == "arn:aws:mq:us-east-1:000000000000:broker:127.0.0.1:5672"
    assert list(event["rmqMessagesByQueue"]) == [f"{queue}::/"]
    first, second, third = event["rmqMessagesByQueue"][f"{queue}::/"]
    assert first == {
        "basicProperties": {
            "contentType": "application/json", "contentEncoding": None,
            "headers": {"h": {"bytes": [118]}, "n": 7},
            "deliveryMode": 2, "priority": 3, "correlationId": "c-1", "replyTo": "replies",
            "expiration": "60000", "messageId": "m-1", "timestamp": "Mar 5, 2024, 2:07:09 PM",
            "type": "order.created", "userId": None, "appId": "shop", "clusterId": None, "bodySize": 8,
        },
        "redelivered": False,
        "data": base64.b64encode(b'{"n": 1}').decode(),
    }
    assert base64.b64decode(second["data"]) == b"\xff\xfe not utf-8"  # delivered anyway
    assert second["basicProperties"]["bodySize"] == len(b"\xff\xfe not utf-8")
    assert base64.b64decode(third["data"]) == b"plain text"
    until_sync(lambda: _metric(rp, 'router_amqp_messages_total{outcome="acked"') == 3, deadline=10,
               what="3 acks")
    assert rp.stop() == 0
    assert broker.count(queue) == 0  # acked after success: nothing comes back


def test_filters_ack_without_invoking(router_factory: RouterFactory, tmp_path: Path, broker: Broker,
                                      amqp_url: str) -> None:
    out = tmp_path / "seen.txt"
    router_factory.write_function("record", f"""
        import base64
        def handler(event, context):
            with open("{out}", "a") as f:
                for msgs in event["rmqMessagesByQueue"].values():
                    for m in msgs:
                        f.write(base64.b64decode(m["data"]).decode() + "\\n")
    """)
    queue = broker.name("filters")
    rp = router_factory(_config(tmp_path, amqp_url, f"queue: {queue}, batch_size: 1",
                                filters='filters: [{data: {kind: ["keep"]}}]'))
    broker.publish(queue, [b'{"kind": "drop"}', b"not json", b'{"kind": "keep"}'])
    until_sync(lambda: out.exists() and out.read_text(), deadline=30, what="the kept message")
    until_sync(lambda: _metric(rp, "router_source_events_filtered_total") == 2, deadline=10,
               what="2 filtered")
    assert out.read_text() == '{"kind": "keep"}\n'
    assert rp.stop() == 0
    assert broker.count(queue) == 0


# --- failures: requeue with delay, dead-letter, oversize ------------------------------------------------


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_requeue_with_delay_then_dead_letter_with_body_and_headers(
    router_factory: RouterFactory, tmp_path: Path, broker: Broker, amqp_url: str, queue_type: str,
) -> None:
    calls = tmp_path / "calls.jsonl"
    router_factory.write_function("record", f"""
        import json, time
        def handler(event, context):
            for msgs in event["rmqMessagesByQueue"].values():
                with open("{calls}", "a") as f:
                    f.write(json.dumps({{"t": time.monotonic(), "redelivered": msgs[0]["redelivered"]}})
                            + "\\n")
            raise RuntimeError("always fails")
    """)
    queue, dlq = broker.name("retry"), broker.name("retry-dlq")
    broker.declare(dlq)
    args = f'{{x-dead-letter-exchange: "", x-dead-letter-routing-key: "{dlq}"}}'
    rp = router_factory(_config(
        tmp_path, amqp_url, f"queue: {queue}, batch_size: 1, on_error: requeue, requeue_delay: 1s, "
        f"max_redeliveries: 2, queue_type: {queue_type}, arguments: {args}"))
    broker.publish(queue, [b'{"order": 42}'], headers={"trace": "abc", "n": 1}, message_id="m-42")
    [dead] = until_sync(lambda: broker.get_all(dlq), deadline=30, what="the message in the DLQ")
    assert dead.body == b'{"order": 42}'
    assert dead.message_id == "m-42"
    assert dead.headers["trace"] == "abc"
    assert dead.headers["n"] == 1
    assert dead.headers["x-router-redeliveries"] == 2
    attempts = [json.loads(line) for line in calls.read_text().splitlines()]
    assert [a["redelivered"] for a in attempts] == [False, True, True]
    # Each requeue waited in the delay queue until its TTL expired (the broker's own record of it):
    deaths = {(d["queue"], d["reason"]): d["count"] for d in dead.headers["x-death"]}
    assert deaths[(f"{queue}.router-delay", "expired")] == 2
    assert deaths[(queue, "rejected")] == 1
    assert _metric(rp, 'router_amqp_messages_total{outcome="requeued"') == 2
    assert _metric(rp, 'router_amqp_messages_total{outcome="rejected"') == 1
    assert rp.stop() == 0
    assert broker.count(queue) == 0


def test_dead_letter_on_error_rejects_at_once(router_factory: RouterFactory, tmp_path: Path,
                                              broker: Broker, amqp_url: str) -> None:
    router_factory.write_function("record", """
        def handler(event, context):
            raise ValueError("bad order")
    """)
    queue, dlq = broker.name("dl"), broker.name("dl-dlq")
    broker.declare(dlq)
    broker.declare(queue, {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    rp = router_factory(_config(tmp_path, amqp_url, f"queue: {queue}, declare: false, batch_size: 1"))
    broker.publish(queue, [b"one"], headers={"k": "v"})
    [dead] = until_sync(lambda: broker.get_all(dlq), deadline=30, what="the message in the DLQ")
    assert dead.body == b"one"
    assert dead.headers["k"] == "v"
    assert dead.headers["x-death"][0]["reason"] == "rejected"
    assert rp.stop() == 0


def test_oversize_message_dead_lettered_with_reason(router_factory: RouterFactory, tmp_path: Path,
                                                    broker: Broker, amqp_url: str) -> None:
    out = tmp_path / "seen.txt"
    router_factory.write_function("record", f"""
        import base64
        def handler(event, context):
            with open("{out}", "a") as f:
                for msgs in event["rmqMessagesByQueue"].values():
                    for m in msgs:
                        f.write(base64.b64decode(m["data"]).decode() + "\\n")
    """)
    queue, dlq = broker.name("big"), broker.name("big-dlq")
    broker.declare(dlq)
    args = f'{{x-dead-letter-exchange: "", x-dead-letter-routing-key: "{dlq}"}}'
    rp = router_factory(_config(tmp_path, amqp_url, f"queue: {queue}, batch_size: 1, arguments: {args}",
                                max_body="4KB"))
    big = b"x" * 5000
    broker.publish(queue, [big, b"small"], headers={"k": "v"})
    until_sync(lambda: out.exists() and out.read_text(), deadline=30, what="the small message")
    [dead] = until_sync(lambda: broker.get_all(dlq), deadline=10, what="the big message in the DLQ")
    assert dead.body == big
    assert dead.headers["k"] == "v"
    assert "too large" in dead.headers["x-router-reject-reason"]
    assert out.read_text() == "small\n"
    assert any("too large" in r.get("message", "") for r in rp.log_records())
    assert rp.stop() == 0
    assert broker.count(queue) == 0


# --- faults: missing queue, wrong password --------------------------------------------------------------


def test_declare_false_missing_queue_not_ready_then_recovers(
    router_factory: RouterFactory, tmp_path: Path, broker: Broker, amqp_url: str,
) -> None:
    out = tmp_path / "ran"
    router_factory.write_function("record", f"""
        def handler(event, context):
            open("{out}", "w").close()
    """)
    queue = broker.name("missing")
    rp = router_factory(_config(tmp_path, amqp_url, f"queue: {queue}, declare: false, batch_size: 1"),
                        start=False).start(wait_ready=False)

    def not_found() -> str:
        status, body = _readyz(rp)
        text = " ".join(body.get("reasons", []))
        return text if status == 503 and "not found" in text else ""

    reason = until_sync(not_found, deadline=30, what="/readyz naming the missing queue")
    assert f"queue '{queue}' not found" in reason
    assert "declare: true" in reason
    broker.declare(queue)
    rp.wait_ready(timeout=60)
    broker.publish(queue, [b"hello"])
    until_sync(out.exists, deadline=30, what="the function ran")
    assert _metric(rp, 'router_source_errors_total{route="orders",type="amqp"}') >= 1
    assert rp.stop() == 0


def test_wrong_password_clear_error_without_the_password(
    router_factory: RouterFactory, tmp_path: Path, broker: Broker, amqp_url: str,
) -> None:
    from yarl import URL

    router_factory.write_function("record", "def handler(event, context):\n    return None\n")
    secret = "s3cr3t-" + uuid.uuid4().hex[:6]
    bad = str(URL(amqp_url).with_password(secret))
    queue = broker.name("auth")
    rp = router_factory(_config(tmp_path, bad, f"queue: {queue}"), start=False).start(wait_ready=False)

    def refused() -> str:
        return next((r["message"] for r in rp.log_records() if "login refused" in r.get("message", "")), "")

    message = until_sync(refused, deadline=30, what="the login error")
    host = URL(amqp_url).host
    assert f"broker {host}:" in message
    assert "check the user name and password" in message
    status, body = _readyz(rp)
    assert status == 503
    assert any("login refused" in r for r in body["reasons"])
    assert rp.stop() == 0
    assert secret not in rp.logs()


# --- at least once through router crashes and broker restarts -------------------------------------------


def _recorder(router_factory: RouterFactory, seen: Path, *, slow_first: bool = False) -> None:
    """The function appends each message's id to a file of its own per invocation."""
    router_factory.write_function("record", f"""
        import base64, os, time, uuid
        def handler(event, context):
            lines = []
            for msgs in event["rmqMessagesByQueue"].values():
                for m in msgs:
                    lines.append(base64.b64decode(m["data"]).decode() + " " + str(m["redelivered"]))
            part = os.path.join("{seen}", "..", uuid.uuid4().hex)  # written whole, then moved in
            with open(part, "w") as f:
                f.write("\\n".join(lines) + "\\n")
            os.replace(part, os.path.join("{seen}", os.path.basename(part)))
            if {slow_first!r} and not any(l.endswith("True") for l in lines):
                open(os.path.join("{seen}", "..", "started"), "w").close()
                time.sleep(60)  # killed meanwhile
    """)


def _observed(seen: Path) -> list[tuple[str, bool]]:
    out = []
    for p in seen.iterdir():
        for line in p.read_text().splitlines():
            if line:
                body, redelivered = line.rsplit(" ", 1)
                out.append((body, redelivered == "True"))
    return out


def test_ack_after_success_router_killed_mid_batch(router_factory: RouterFactory, tmp_path: Path,
                                                   broker: Broker, amqp_url: str) -> None:
    seen = tmp_path / "seen"
    seen.mkdir()
    _recorder(router_factory, seen, slow_first=True)
    queue = broker.name("ack")
    config = _config(tmp_path, amqp_url, f"queue: {queue}, batch_size: 1")
    rp = router_factory(config)
    broker.publish(queue, [b"only"])
    until_sync((tmp_path / "started").exists, deadline=30, what="the function started")
    rp.kill()  # the function has not returned: nothing was acked
    rp2 = router_factory(config, port=rp.port)
    got = until_sync(lambda: [o for o in _observed(seen) if o[1]], deadline=30, what="the redelivery")
    assert got == [("only", True)]
    assert rp2.stop() == 0
    assert broker.count(queue) == 0


def _bulk_config(tmp_path: Path, amqp_url: str, queue: str, route: str = "orders") -> str:
    return _config(tmp_path, amqp_url, f"queue: {queue}, prefetch: 200, batch_size: 50, batch_window: 100ms",
                   concurrency=4, route=route)


def _bulk_recorder(router_factory: RouterFactory, seen: Path, pause: float = 0.0,
                   gate: Path | None = None, gate_after: int = 0) -> None:
    """Each invocation writes its message ids to a file of its own, then pauses ``pause`` seconds.
    With ``gate``: once ``gate_after`` invocations are recorded, invocations wait (up to 50 s) while
    the gate file exists, so a fault injected meanwhile surely hits batches in flight."""
    router_factory.write_function("record", f"""
        import base64, os, time, uuid
        def handler(event, context):
            ids = [base64.b64decode(m["data"]).decode()
                   for msgs in event["rmqMessagesByQueue"].values() for m in msgs]
            part = os.path.join("{seen}", "..", uuid.uuid4().hex)  # written whole, then moved in
            with open(part, "w") as f:
                f.write("\\n".join(ids) + "\\n")
            os.replace(part, os.path.join("{seen}", os.path.basename(part)))
            time.sleep({pause})
            gate = {str(gate) if gate else ""!r}
            deadline = time.monotonic() + 50
            while (gate and os.path.exists(gate) and len(os.listdir("{seen}")) >= {gate_after}
                   and time.monotonic() < deadline):
                time.sleep(0.02)
    """)


def _ids(seen: Path) -> list[str]:
    return [line for p in seen.iterdir() for line in p.read_text().splitlines() if line]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigkill_router_during_bulk_loses_none(router_factory: RouterFactory, tmp_path: Path,
                                               broker: Broker, amqp_url: str) -> None:
    seen = tmp_path / "seen"
    seen.mkdir()
    _bulk_recorder(router_factory, seen)
    queue = broker.name("kill")
    broker.declare(queue)
    bodies = [f"m{i}" for i in range(BULK)]
    broker.publish(queue, [b.encode() for b in bodies])
    config = _bulk_config(tmp_path, amqp_url, queue)
    started = time.monotonic()
    rp = router_factory(config)
    until_sync(lambda: len(set(_ids(seen))) >= BULK // 10, deadline=60, what="a tenth of the messages")
    rp.kill()
    before = len(set(_ids(seen)))
    assert before < BULK, "every message was processed before the kill; the test proves nothing"
    rp2 = router_factory(config, port=rp.port)
    until_sync(lambda: len(set(_ids(seen))) == BULK, deadline=60, what=f"{BULK} messages observed")
    assert set(_ids(seen)) == set(bodies)  # 0 lost
    assert rp2.stop() == 0
    assert broker.count(queue) == 0
    print(f"{BULK} messages in {time.monotonic() - started:.1f}s; before the kill: {before}; "
          f"duplicates: {len(_ids(seen)) - BULK}")


def _rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True,
                          timeout=60).stdout


def _router_connection_pids(route: str) -> list[str]:
    """Erlang pids of the broker's connections named ``router:<route>`` (only this test's router)."""
    listing = _rabbitmqctl("list_connections", "pid", "client_properties")
    return [line.split("\t", 1)[0] for line in listing.splitlines()
            if f'{{"connection_name","router:{route}"}}' in line]


def _close_connections(pids: list[str]) -> int:
    """Close connections from the broker's side (``close_connection`` takes the pid); how many closed."""
    closed = 0
    for pid in pids:
        done = subprocess.run(["rabbitmqctl", "-q", "close_connection", pid, "test: broker-side close"],
                              capture_output=True, timeout=60)
        closed += done.returncode == 0
    return closed


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_broker_connection_loss_during_bulk_loses_none(router_factory: RouterFactory, tmp_path: Path,
                                                       broker: Broker, amqp_url: str) -> None:
    """Connections closed by the broker (or, under CI or with ROUTER_TEST_RABBITMQ_RESTART=1, a full
    stop_app/start_app restart, which disturbs other tests using the broker) while 5,000 are consumed."""
    if subprocess.run(["which", "rabbitmqctl"], capture_output=True).returncode != 0:
        pytest.skip("rabbitmqctl not found: cannot close connections from the broker side")
    # A real broker restart under CI (tests run one at a time there), else a broker-side close of the
    # router's own connections; ROUTER_TEST_RABBITMQ_RESTART=1/0 chooses explicitly.
    default = "1" if os.environ.get("CI", "").lower() == "true" else "0"
    restart = os.environ.get("ROUTER_TEST_RABBITMQ_RESTART", default) == "1"
    seen = tmp_path / "seen"
    seen.mkdir()
    gate = tmp_path / "gate"
    gate.touch()  # batches in flight wait at the gate until the fault is injected
    _bulk_recorder(router_factory, seen, gate=gate, gate_after=10)
    queue = broker.name("restart")
    route = queue.removeprefix("test-")  # unique: only this router's connections are closed
    broker.declare(queue)
    rp = router_factory(_bulk_config(tmp_path, amqp_url, queue, route=route))
    pids = [] if restart else _router_connection_pids(route)  # looked up early: rabbitmqctl is slow
    bodies = [f"m{i}" for i in range(BULK)]
    broker.publish(queue, [b.encode() for b in bodies])
    try:
        until_sync(lambda: len(list(seen.iterdir())) >= 10, deadline=60, what="10 invocations")
        before = len(set(_ids(seen)))
        assert before < BULK, "every message was processed before the fault; the test proves nothing"
        if restart:
            _rabbitmqctl("stop_app")
            try:
                until_sync(lambda: _readyz(rp)[0] == 503, deadline=20,
                           what="not ready while the broker is down")
            finally:
                _rabbitmqctl("start_app")
        else:
            assert _close_connections(pids) >= 1, f"no connection named router:{route} found"
            until_sync(lambda: _readyz(rp)[0] == 503 or _metric(rp, "router_amqp_reconnects_total") >= 1,
                       deadline=10, what="the route to notice the lost connection")
    finally:
        gate.unlink()
    until_sync(lambda: _metric(rp, "router_amqp_reconnects_total") >= 1, deadline=30, what="a reconnect")
    until_sync(lambda: len(set(_ids(seen))) == BULK, deadline=90, what=f"{BULK} messages observed")
    assert set(_ids(seen)) == set(bodies)  # 0 lost
    assert _readyz(rp)[0] == 200
    assert _metric(rp, f'router_source_errors_total{{route="{route}",type="amqp"}}') >= 1
    assert rp.stop() == 0
    assert broker.count(queue) == 0
    print(f"{BULK} messages; before the fault: {before}; duplicates: {len(_ids(seen)) - BULK}")


def test_sigterm_finishes_the_running_batch_and_hands_back_the_rest(
    router_factory: RouterFactory, tmp_path: Path, broker: Broker, amqp_url: str,
) -> None:
    seen = tmp_path / "seen"
    seen.mkdir()
    _bulk_recorder(router_factory, seen, pause=0.3)
    queue = broker.name("term")
    config = _config(tmp_path, amqp_url, f"queue: {queue}, prefetch: 10, batch_size: 1, batch_window: 0s",
                     concurrency=1)
    rp = router_factory(config)
    bodies = [f"m{i}" for i in range(10)]
    broker.publish(queue, [b.encode() for b in bodies])
    until_sync(lambda: _ids(seen), deadline=30, what="the first invocation")
    assert rp.stop() == 0  # SIGTERM while one batch runs and nine wait in the prefetch buffer
    done = _ids(seen)
    assert 1 <= len(done) < 10
    logs = rp.logs()
    assert "handed back" in logs
    # The finished one was acked, the rest are ready again. (CI saw 10 once: the ack lost to the
    # connection's close; the next test makes that loss certain without the channel's closing handshake.)
    assert broker.count(queue) == 10 - len(done), logs[-6000:]
    rp2 = router_factory(config, port=rp.port)
    until_sync(lambda: len(_ids(seen)) >= 10, deadline=60, what="the rest")
    assert rp2.stop() == 0
    assert sorted(_ids(seen)) == sorted(bodies)  # each exactly once: nothing started was handed back


def test_sigterm_acks_reach_the_broker_before_the_connection_closes(
    router_factory: RouterFactory, tmp_path: Path, broker: Broker, amqp_url: str,
) -> None:
    """The router's bytes reach the broker 0.3 s late through a proxy that loses what it still holds
    when the router closes its end (as a TCP reset loses bytes the broker has not read yet). The ack of
    the batch that finished during the stop, and the hand-backs, are settled all the same: the router
    closes its channel with the broker's handshake (which answers once it has handled what came before)
    before the connection. CI saw the plain case lose that ack once (2026-12-06); this one lost it 3 of 3
    without the handshake."""
    from yarl import URL

    from tests.tcp_proxy import TcpProxy

    seen = tmp_path / "seen"
    seen.mkdir()
    _bulk_recorder(router_factory, seen, pause=0.3)
    url = URL(amqp_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5672, upload_delay=0.3, drop_on_close=True)
    try:
        queue = broker.name("slow-link")
        through = str(url.with_host("127.0.0.1").with_port(proxy.port))
        config = _config(tmp_path, through,
                         f"queue: {queue}, prefetch: 10, batch_size: 1, batch_window: 0s", concurrency=1)
        rp = router_factory(config)
        bodies = [f"m{i}" for i in range(10)]
        broker.publish(queue, [b.encode() for b in bodies])
        until_sync(lambda: _ids(seen), deadline=30, what="the first invocation")
        assert rp.stop() == 0
        done = _ids(seen)
        assert 1 <= len(done) < 10
        until_sync(lambda: broker.consumers(queue) == 0, deadline=30, what="the router's consumer gone")
        assert broker.count(queue) == 10 - len(done), rp.logs()[-6000:]
    finally:
        proxy.close()


def test_unreachable_broker_starts_anyway_not_ready(router_factory: RouterFactory, tmp_path: Path) -> None:
    from tests.router_process import free_port

    router_factory.write_function("record", "def handler(event, context):\n    return None\n")
    port = free_port()  # nothing listens there
    rp = router_factory(_config(tmp_path, f"amqp://guest:guest@127.0.0.1:{port}/", "queue: q"),
                        start=False).start(wait_ready=False)

    def reason() -> str:
        status, body = _readyz(rp)
        text = " ".join(body.get("reasons", []))
        return text if status == 503 and "cannot connect" in text else ""

    text = until_sync(reason, deadline=30, what="/readyz saying the broker is unreachable")
    assert f"broker 127.0.0.1:{port}" in text
    assert http("GET", rp.url + "/livez")[0] == 200  # the process runs on, retrying
    until_sync(lambda: _metric(rp, "router_source_errors_total") >= 2, deadline=30, what="a retry")
    assert rp.stop() == 0


def test_queue_deleted_while_consuming_not_ready_then_recovers(
    router_factory: RouterFactory, tmp_path: Path, broker: Broker, amqp_url: str,
) -> None:
    seen = tmp_path / "seen"
    seen.mkdir()
    _bulk_recorder(router_factory, seen)
    queue = broker.name("deleted")
    broker.declare(queue)
    rp = router_factory(_config(tmp_path, amqp_url, f"queue: {queue}, declare: false, batch_size: 1"))
    broker.delete_all()  # the broker cancels the router's consumer

    def reason() -> str:
        status, body = _readyz(rp)
        text = " ".join(body.get("reasons", []))
        return text if status == 503 and "not found" in text else ""

    assert queue in until_sync(reason, deadline=30, what="/readyz: the queue is gone")
    broker.declare(queue)
    rp.wait_ready(timeout=60)
    broker.publish(queue, [b"again"])
    until_sync(lambda: _ids(seen) == ["again"], deadline=30, what="consumption resumed")
    assert rp.stop() == 0


def test_quorum_delivery_limit_dead_letters_a_message_that_crashes_the_router(
    router_factory: RouterFactory, tmp_path: Path, broker: Broker, amqp_url: str,
) -> None:
    """A poison message that never lets its invocation end (here: the router is SIGKILLed each time)
    is dead-lettered by the broker after x-delivery-limit returns, body and headers intact."""
    starts = tmp_path / "starts"
    router_factory.write_function("record", f"""
        import time
        def handler(event, context):
            with open("{starts}", "a") as f:
                f.write("start\\n")
            time.sleep(60)
    """)
    queue, dlq = broker.name("poison"), broker.name("poison-dlq")
    broker.declare(dlq)
    args = f'{{x-delivery-limit: 1, x-dead-letter-exchange: "", x-dead-letter-routing-key: "{dlq}"}}'
    config = _config(tmp_path, amqp_url,
                     f"queue: {queue}, batch_size: 1, queue_type: quorum, arguments: {args}")
    rp = router_factory(config)
    broker.publish(queue, [b"poison"], headers={"k": "v"}, message_id="p-1")

    def started() -> int:
        return len(starts.read_text().splitlines()) if starts.exists() else 0

    for n in (1, 2):
        until_sync(lambda n=n: started() >= n, deadline=30, what=f"delivery {n}")
        rp.kill()
        rp = router_factory(config, port=rp.port)
    [dead] = until_sync(lambda: broker.get_all(dlq), deadline=30, what="the message in the DLQ")
    assert dead.body == b"poison"
    assert dead.message_id == "p-1"
    assert dead.headers["k"] == "v"
    assert dead.headers["x-death"][0]["reason"] == "delivery_limit"
    assert started() == 2
    assert rp.stop() == 0


def test_unreachable_function_keeps_messages_then_delivers(
    router_factory: RouterFactory, tmp_path: Path, broker: Broker, amqp_url: str,
) -> None:
    """An http function that does not answer (connection refused) is an infrastructure error, not the
    message's fault: nothing is dead-lettered; the message waits on the queue and is delivered later."""
    import http.server
    import threading

    from tests.router_process import free_port

    port = free_port()
    queue, dlq = broker.name("unreach"), broker.name("unreach-dlq")
    broker.declare(dlq)
    args = f'{{x-dead-letter-exchange: "", x-dead-letter-routing-key: "{dlq}"}}'
    local = ("runtime: python3.11\n            handler: app.handler\n"
             f"            code: {tmp_path / 'functions' / 'record'}")
    config = _config(tmp_path, amqp_url, f"queue: {queue}, batch_size: 1, arguments: {args}")
    config = config.replace(local, f"http: {{url: 'http://127.0.0.1:{port}/invoke'}}")
    assert "http:" in config
    rp = router_factory(config)
    broker.publish(queue, [b"wait for me"])
    until_sync(lambda: any("throttled or unreachable" in r.get("message", "") for r in rp.log_records()),
               deadline=30, what="the unreachable function logged")
    assert broker.get_all(dlq) == []

    bodies: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        until_sync(lambda: bodies, deadline=60, what="the delivery once the function answers")
        event = json.loads(bodies[0])
        [record] = event["rmqMessagesByQueue"][f"{queue}::/"]
        assert base64.b64decode(record["data"]) == b"wait for me"
        assert record["redelivered"] is True  # it was handed back meanwhile
        assert rp.stop() == 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert broker.count(queue) == 0
    assert broker.get_all(dlq) == []


# --- bisect_on_error (issue 9): one poison message does not take its batch with it -------------------


@pytest.mark.parametrize("on_error", ["dead_letter", "requeue"])
def test_one_poison_message_does_not_take_its_batch_to_the_dead_letter_queue(
    router_factory: RouterFactory, tmp_path: Path, broker: Broker, amqp_url: str, on_error: str,
) -> None:
    """A quorum queue with a dead-letter exchange; a batch of 10 with one poison message. Bisected (the
    default): the 9 good messages are processed once and acked, never dead-lettered; the poison one is
    dead-lettered after its configured attempts (dead_letter: 1; requeue: 1 + max_redeliveries) with its
    original body and headers."""
    seen, calls = tmp_path / "seen", tmp_path / "calls"
    seen.mkdir()
    calls.mkdir()
    router_factory.write_function("record", f"""
        import base64, os, uuid
        def handler(event, context):
            bodies = [base64.b64decode(m["data"]).decode()
                      for msgs in event["rmqMessagesByQueue"].values() for m in msgs]
            part = os.path.join("{calls}", "..", uuid.uuid4().hex)  # written whole, then moved in
            with open(part, "w") as f:
                f.write(" ".join(bodies))
            os.replace(part, os.path.join("{calls}", os.path.basename(part)))
            if "poison" in bodies:
                raise ValueError("poison message")
            for body in bodies:  # the side effect, only when the batch succeeded
                with open(os.path.join("{seen}", body + "." + uuid.uuid4().hex), "w"):
                    pass
    """)
    queue, dlq = broker.name("bisect"), broker.name("bisect-dlq")
    broker.declare(dlq)
    args = f'{{x-delivery-limit: 5, x-dead-letter-exchange: "", x-dead-letter-routing-key: "{dlq}"}}'
    rp = router_factory(_config(
        tmp_path, amqp_url, f"queue: {queue}, prefetch: 10, batch_size: 10, batch_window: 2s, "
        f"queue_type: quorum, on_error: {on_error}, requeue_delay: 500ms, max_redeliveries: 2, "
        f"arguments: {args}"))
    bodies = [f"good-{i}" for i in range(9)]
    bodies.insert(4, "poison")
    broker.publish(queue, [b.encode() for b in bodies], headers={"k": "v"})
    [dead] = until_sync(lambda: broker.get_all(dlq), deadline=30, what="the poison message in the DLQ")
    assert dead.body == b"poison"
    assert dead.headers["k"] == "v"
    assert (queue, "rejected") in {(d["queue"], d["reason"]) for d in dead.headers["x-death"]}
    good = sorted(b for b in bodies if b != "poison")
    assert sorted(p.name.split(".")[0] for p in seen.iterdir()) == good  # each processed exactly once
    invocations = [p.read_text().split() for p in calls.iterdir()]
    assert bodies in invocations  # they came as one batch of 10
    alone = sum(i == ["poison"] for i in invocations)
    assert alone == (1 if on_error == "dead_letter" else 3)
    assert _metric(rp, "router_batch_bisections_total") >= 1
    assert _metric(rp, 'router_amqp_messages_total{outcome="acked"') == 9
    assert broker.count(queue) == 0
    assert broker.get_all(dlq) == []  # nothing else was dead-lettered
    assert rp.stop() == 0


def test_bisect_off_dead_letters_the_whole_batch(router_factory: RouterFactory, tmp_path: Path,
                                                 broker: Broker, amqp_url: str) -> None:
    """bisect_on_error: false keeps the old behaviour (Lambda's): the failed batch is rejected whole."""
    router_factory.write_function("record", """
        import base64
        def handler(event, context):
            for msgs in event["rmqMessagesByQueue"].values():
                if any(base64.b64decode(m["data"]) == b"poison" for m in msgs):
                    raise ValueError("poison message")
    """)
    queue, dlq = broker.name("nobisect"), broker.name("nobisect-dlq")
    broker.declare(dlq)
    args = f'{{x-dead-letter-exchange: "", x-dead-letter-routing-key: "{dlq}"}}'
    rp = router_factory(_config(
        tmp_path, amqp_url, f"queue: {queue}, prefetch: 10, batch_size: 10, batch_window: 2s, "
        f"queue_type: quorum, bisect_on_error: false, arguments: {args}"))
    bodies = [b"poison"] + [f"good-{i}".encode() for i in range(9)]
    broker.publish(queue, bodies)
    dead: list[Any] = []
    until_sync(lambda: dead.extend(broker.get_all(dlq)) or len(dead) >= 10, deadline=30,
               what="the whole batch in the DLQ")
    assert sorted(m.body for m in dead) == sorted(bodies)
    assert _metric(rp, "router_batch_bisections_total") == 0
    assert rp.stop() == 0
