"""`router run` with RabbitMQ: the amqp destination (Lambda's record, kept and retried while the broker is
away) and ``async_queue`` (Invoke API Event, retries with delay, SIGKILL, two replicas sharing the work)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from yarl import URL

from tests.router_process import RouterFactory, RouterProcess, http
from tests.waiting import until_sync

RETRY_LEVELS_MS = [10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100]


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


class Broker:
    """Synchronous helpers over the test's own connections to RabbitMQ; deletes what it made."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.queues: list[tuple[str, str]] = []  # (url, queue)
        self.exchanges: list[tuple[str, str]] = []
        self.vhosts: list[str] = []

    def bound_queue(self, exchange: str, routing_key: str, url: str | None = None) -> str:
        url = url or self.url
        queue = f"test.records.{uuid.uuid4().hex[:10]}"

        async def go() -> None:
            conn = await aio_pika.connect(url)
            async with conn:
                ch = await conn.channel()
                ex = await ch.declare_exchange(exchange, aio_pika.ExchangeType.DIRECT, durable=True)
                q = await ch.declare_queue(queue, durable=True)
                await q.bind(ex, routing_key)

        _run(go())
        self.queues.append((url, queue))
        self.exchanges.append((url, exchange))
        return queue

    def take(self, queue: str, url: str | None = None) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """Every message now in ``queue`` (acked)."""
        url = url or self.url

        async def go() -> list[Any]:
            out = []
            conn = await aio_pika.connect(url)
            async with conn:
                ch = await conn.channel()
                q = await ch.declare_queue(queue, passive=True)
                while (m := await q.get(fail=False)) is not None:
                    await m.ack()
                    out.append(m)
            return out

        return list(_run(go()))

    def _declared(self, queue: str) -> Any:
        """The broker's answer to a passive declare of ``queue`` (its message and consumer counts)."""
        async def go() -> Any:
            conn = await aio_pika.connect(self.url)
            async with conn:
                ch = await conn.channel()
                return (await ch.declare_queue(queue, passive=True)).declaration_result

        return _run(go())

    def depth(self, queue: str) -> int:
        return int(self._declared(queue).message_count or 0)

    def consumers(self, queue: str) -> int:
        return int(self._declared(queue).consumer_count or 0)

    def forget_function(self, function: str) -> None:
        self.queues.append((self.url, f"router.async.{function}"))
        self.queues.extend((self.url, f"router.async.{function}.retry.{ms}ms") for ms in RETRY_LEVELS_MS)

    def add_vhost(self, vhost: str) -> str:
        subprocess.run(["rabbitmqctl", "add_vhost", vhost], capture_output=True, timeout=60, check=True)
        subprocess.run(["rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                       capture_output=True, timeout=60, check=True)
        self.vhosts.append(vhost)
        return str(URL(self.url).with_path("/" + vhost))

    def cleanup(self) -> None:
        async def go() -> None:
            for url, queue in self.queues:
                if any(url.endswith("/" + v) for v in self.vhosts):
                    continue
                conn = await aio_pika.connect(url)
                async with conn:
                    ch = await conn.channel()
                    await ch.queue_delete(queue)
            for url, exchange in self.exchanges:
                if any(url.endswith("/" + v) for v in self.vhosts):
                    continue
                conn = await aio_pika.connect(url)
                async with conn:
                    ch = await conn.channel()
                    await ch.exchange_delete(exchange)

        _run(go())
        for vhost in self.vhosts:
            subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, timeout=60,
                           check=False)


@pytest.fixture
def broker(amqp_url: str) -> Iterator[Broker]:
    b = Broker(amqp_url)
    yield b
    b.cleanup()


def invoke_event(rp: RouterProcess, function: str, payload: dict[str, Any]) -> str:
    status, headers, body = http("POST", f"{rp.url}/2015-03-31/functions/{function}/invocations",
                                 json.dumps(payload).encode(), {"X-Amz-Invocation-Type": "Event"})
    assert status == 202, body
    return headers["x-amzn-requestid"]


def metric(rp: RouterProcess, name: str, **labels: str) -> float:
    """The value of one sample on ``/metrics`` (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    status, _, body = http("GET", rp.url + "/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


def deliveries(rp: RouterProcess, function: str, outcome: str) -> float:
    return metric(rp, "router_destination_deliveries_total", function=function, kind="amqp", outcome=outcome)


def invocations(rp: RouterProcess, function: str, outcome: str) -> float:
    return metric(rp, "router_invocations_total", function=function, source="invoke_api", outcome=outcome)


FAILING = """
    def handler(event, context):
        raise ValueError("no good: " + str(event["n"]))
"""


def test_on_failure_amqp_destination_receives_lambdas_record(
    router_factory: RouterFactory, tmp_path: Path, amqp_url: str, broker: Broker,
) -> None:
    exchange = f"test.dlx.{uuid.uuid4().hex[:8]}"
    queue = broker.bound_queue(exchange, "resize")
    router_factory.write_function("resize", FAILING)
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: sqlite:///{tmp_path / 'state.db'}
        aws: {{region: eu-west-1, account_id: "123456789012"}}
        functions:
          resize:
            runtime: python3.11
            handler: app.handler
            code: {tmp_path / 'functions' / 'resize'}
            async:
              retries: 1
              backoff: {{initial: 10ms, max: 50ms}}
              on_failure: {{type: amqp, url: "{amqp_url}", exchange: {exchange}, routing_key: resize}}
    """)
    request_id = invoke_event(rp, "resize", {"n": 1})
    [message] = until_sync(lambda: broker.take(queue), deadline=30, what="the on_failure record")
    assert message.content_type == "application/json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    record = json.loads(message.body)
    assert record["version"] == "1.0"
    assert record["requestContext"] == {
        "requestId": request_id,
        "functionArn": "arn:aws:lambda:eu-west-1:123456789012:function:resize:$LATEST",
        "condition": "RetriesExhausted",
        "approximateInvokeCount": 2,
    }
    assert record["requestPayload"] == {"n": 1}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST",
                                         "functionError": "Unhandled"}
    assert record["responsePayload"]["errorType"] == "ValueError"
    assert record["responsePayload"]["errorMessage"] == "no good: 1"
    assert deliveries(rp, "resize", "success") == 1
    assert rp.stop() == 0


def test_broker_away_record_is_kept_and_delivered_when_it_is_back(
    router_factory: RouterFactory, tmp_path: Path, amqp_url: str, broker: Broker,
) -> None:
    # The destination's broker is away: its vhost does not exist (the broker refuses the connection),
    # until the test creates it with the exchange and a bound queue.
    vhost = f"test-away-{uuid.uuid4().hex[:8]}"
    away_url = str(URL(amqp_url).with_path("/" + vhost))
    router_factory.write_function("resize", FAILING)
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          resize:
            runtime: python3.11
            handler: app.handler
            code: {tmp_path / 'functions' / 'resize'}
            async:
              retries: 0
              backoff: {{initial: 100ms, max: 500ms}}
              on_failure: {{type: amqp, url: "{away_url}", exchange: dlx, routing_key: resize, timeout: 2s}}
    """)
    request_id = invoke_event(rp, "resize", {"n": 2})
    until_sync(lambda: deliveries(rp, "resize", "error") >= 2, deadline=30, what="failed deliveries")
    assert invocations(rp, "resize", "error") == 1

    url = broker.add_vhost(vhost)
    queue = broker.bound_queue("dlx", "resize", url=url)
    [message] = until_sync(lambda: broker.take(queue, url=url), deadline=30,
                           what="the record, delivered late")
    record = json.loads(message.body)
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestPayload"] == {"n": 2}
    assert deliveries(rp, "resize", "success") == 1
    assert invocations(rp, "resize", "error") == 1  # the function ran once: only the record was retried
    assert rp.stop() == 0
    logs = rp.logs()
    assert "kept and retried" in logs
    assert "guest:guest" not in logs


# --- async_queue ----------------------------------------------------------------------------------------


RECORDER = """
    import os, time
    def handler(event, context):
        time.sleep(float(os.environ.get("SLEEP", "0")))
        n = str(event["n"])
        if n.startswith("fail"):
            raise RuntimeError("failing on purpose: " + n)
        path = os.path.join("{seen}", n + "." + os.environ.get("REPLICA", "a") + "." + context.aws_request_id)
        with open(path, "a") as f:
            f.write("x")
"""


def async_config(tmp_path: Path, amqp_url: str, function: str, *, replica: str = "a", sleep: float = 0.0,
                 concurrency: int = 4, extra_async: str = "") -> str:
    return f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 5s}}
        state: sqlite:///{tmp_path / f'state-{replica}.db'}
        async_queue: "{amqp_url}"
        functions:
          {function}:
            runtime: python3.11
            handler: app.handler
            code: {tmp_path / 'functions' / 'recorder'}
            concurrency: {concurrency}
            environment: {{REPLICA: {replica}, SLEEP: "{sleep}"}}
            async: {{retries: 2, backoff: {{initial: 20ms, max: 100ms}}{extra_async}}}
    """


def seen_dir(tmp_path: Path, router_factory: RouterFactory) -> Path:
    seen = tmp_path / "seen"
    seen.mkdir()
    router_factory.write_function("recorder", RECORDER.replace("{seen}", str(seen)))
    return seen


def test_async_queue_invoke_event_runs_and_failures_are_retried_then_recorded(
    router_factory: RouterFactory, tmp_path: Path, amqp_url: str, broker: Broker,
) -> None:
    function = f"rec{uuid.uuid4().hex[:8]}"
    broker.forget_function(function)
    exchange = f"test.dlx.{uuid.uuid4().hex[:8]}"
    queue = broker.bound_queue(exchange, "failed")
    seen = seen_dir(tmp_path, router_factory)
    rp = router_factory(async_config(
        tmp_path, amqp_url, function,
        extra_async=f', on_failure: {{type: amqp, url: "{amqp_url}", exchange: {exchange}, '
                    'routing_key: failed}'))
    status, _, body = http("GET", rp.url + "/readyz")
    assert status == 200, body

    ok_id = invoke_event(rp, function, {"n": "ok1"})
    until_sync(lambda: [p.name for p in seen.iterdir()], deadline=30, what="the event run")
    assert [p.name for p in seen.iterdir()] == [f"ok1.a.{ok_id}"]

    fail_id = invoke_event(rp, function, {"n": "fail1"})
    [message] = until_sync(lambda: broker.take(queue), deadline=30, what="the on_failure record")
    record = json.loads(message.body)
    assert record["requestContext"]["requestId"] == fail_id
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["responsePayload"]["errorMessage"] == "failing on purpose: fail1"
    assert metric(rp, "router_retries_total", function=function) == 2
    assert metric(rp, "router_async_events_received_total", function=function) == 2
    assert invocations(rp, function, "error") == 3
    assert broker.depth(f"router.async.{function}") == 0
    assert rp.stop() == 0
    # nothing went through the state store
    assert not [r for r in rp.log_records() if "re-queued" in str(r.get("message", ""))]


def close_broker_connections(name: str) -> int:
    """Close, from the broker side, the connections whose client-provided name is ``name``."""
    command = ["rabbitmqctl", "list_connections", "--no-table-headers", "pid", "client_properties"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    pids = [line.split("\t")[0] for line in out.splitlines() if f'"{name}"' in line]
    for pid in pids:
        subprocess.run(["rabbitmqctl", "close_connection", pid, "test: connection lost"],
                       capture_output=True, timeout=60, check=True)
    return len(pids)


def test_async_queue_keeps_working_after_the_broker_closes_its_connection(
    router_factory: RouterFactory, tmp_path: Path, amqp_url: str, broker: Broker,
) -> None:
    function = f"rec{uuid.uuid4().hex[:8]}"
    broker.forget_function(function)
    seen = seen_dir(tmp_path, router_factory)
    rp = router_factory(async_config(tmp_path, amqp_url, function))
    invoke_event(rp, function, {"n": "before"})
    until_sync(lambda: len(list(seen.iterdir())) == 1, deadline=30, what="the first event run")

    assert rp.proc is not None
    assert close_broker_connections(f"router-async pid={rp.proc.pid}") == 1

    def accepted() -> bool:  # while the robust connection reconnects, the Invoke API may answer 500
        status, _, _ = http("POST", f"{rp.url}/2015-03-31/functions/{function}/invocations",
                            json.dumps({"n": "after"}).encode(), {"X-Amz-Invocation-Type": "Event"})
        return status == 202

    until_sync(accepted, deadline=30, interval=0.2, what="an event accepted after the reconnection")
    # the consumer came back with the connection: the event runs
    until_sync(lambda: any(p.name.startswith("after.") for p in seen.iterdir()), deadline=30,
               what="the event accepted after the reconnection run")
    until_sync(lambda: http("GET", rp.url + "/readyz")[0] == 200, deadline=30, what="ready")
    assert rp.stop() == 0


EVENTS = int(os.environ.get("ROUTER_TEST_AMQP_ASYNC_EVENTS", "400"))  # ~10 s; DESIGN §9 runs 10,000


@pytest.mark.timeout(240)
def test_async_queue_sigkill_with_events_queued_loses_none(
    router_factory: RouterFactory, tmp_path: Path, amqp_url: str, broker: Broker,
) -> None:
    function = f"rec{uuid.uuid4().hex[:8]}"
    broker.forget_function(function)
    seen = seen_dir(tmp_path, router_factory)
    config = async_config(tmp_path, amqp_url, function, sleep=0.02, concurrency=4)
    rp = router_factory(config)

    def post(i: int) -> str:
        return invoke_event(rp, function, {"n": i})

    with ThreadPoolExecutor(8) as pool:
        accepted = list(pool.map(post, range(EVENTS)))
    assert len(set(accepted)) == EVENTS

    def observed() -> set[str]:
        return {p.name.split(".")[0] for p in seen.iterdir()}

    rp.kill()  # SIGKILL: events in flight and queued; the broker requeues what was not acked
    before = len(observed())
    assert before < EVENTS, "every event ran before the kill; the test proves nothing"

    rp2 = router_factory(config, port=rp.port, start=False)
    rp2.start()
    got = until_sync(lambda: len(observed()) == EVENTS and observed(), deadline=180,
                     what=f"{EVENTS} events observed")
    assert got == {str(i) for i in range(EVENTS)}  # 0 lost
    duplicates = len(list(seen.iterdir())) - EVENTS
    print(f"observed before the kill: {before}; duplicates after the restart: {duplicates}")
    assert rp2.stop() == 0
    assert broker.depth(f"router.async.{function}") == 0


def test_sigterm_acks_of_async_events_reach_the_broker_before_the_connection_closes(
    router_factory: RouterFactory, tmp_path: Path, amqp_url: str, broker: Broker,
) -> None:
    """An event that finishes during the stop is acked for good, even on a link that delivers the router's
    bytes 0.3 s late and loses what it still holds when the router closes its end (as a TCP reset loses
    bytes the broker has not read yet): the consumers' channels are closed with the broker's handshake
    before the connection. Without it the ack was lost 3 of 3 and the event ran again after a restart."""
    from tests.tcp_proxy import TcpProxy

    function = f"rec{uuid.uuid4().hex[:8]}"
    broker.forget_function(function)
    started = tmp_path / "started"
    router_factory.write_function("recorder", f"""
        import time
        def handler(event, context):
            with open({str(started)!r}, "a") as f:
                f.write(context.aws_request_id + "\\n")
            time.sleep(0.5)
    """)
    url = URL(amqp_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5672, upload_delay=0.3, drop_on_close=True)
    try:
        through = str(url.with_host("127.0.0.1").with_port(proxy.port))
        rp = router_factory(async_config(tmp_path, through, function))
        request_id = invoke_event(rp, function, {"n": 1})
        until_sync(lambda: started.exists() and started.read_text(), deadline=30, what="the event running")
        assert rp.stop() == 0  # SIGTERM while it runs: it finishes, is acked, then the router closes
        assert started.read_text().split() == [request_id]
        queue = f"router.async.{function}"
        until_sync(lambda: broker.consumers(queue) == 0, deadline=30, what="the router's consumer gone")
        assert broker.depth(queue) == 0, rp.logs()[-6000:]
    finally:
        proxy.close()


def test_two_routers_sharing_one_async_queue_both_process_events(
    router_factory: RouterFactory, tmp_path: Path, amqp_url: str, broker: Broker,
) -> None:
    function = f"rec{uuid.uuid4().hex[:8]}"
    broker.forget_function(function)
    seen = seen_dir(tmp_path, router_factory)
    a = router_factory(async_config(tmp_path, amqp_url, function, replica="a", sleep=0.2, concurrency=2),
                       name="a.yaml")
    b = router_factory(async_config(tmp_path, amqp_url, function, replica="b", sleep=0.2, concurrency=2),
                       name="b.yaml")
    n = 20
    for i in range(n):  # all accepted by router a only
        invoke_event(a, function, {"n": i})

    def by_replica() -> dict[str, set[str]]:
        out: dict[str, set[str]] = {"a": set(), "b": set()}
        for p in seen.iterdir():
            event_n, replica, _ = p.name.split(".", 2)
            out[replica].add(event_n)
        return out

    until_sync(lambda: len(by_replica()["a"] | by_replica()["b"]) == n, deadline=60, what="all events")
    done = by_replica()
    assert done["a"], f"router a did nothing: {done}"
    assert done["b"], f"router b did nothing: {done}"
    assert done["a"] | done["b"] == {str(i) for i in range(n)}
    assert a.stop() == 0
    assert b.stop() == 0
