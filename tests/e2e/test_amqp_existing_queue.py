"""An amqp route consumes the queue as it exists (as Lambda's RabbitMQ event source mapping, which never
declares one): an existing quorum queue with a dead-letter exchange works with the default config, a
missing queue is an error naming the route, queue and vhost with the fix (and leaves the router's other
routes consuming), and ``declare: true`` has the router declare it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from router.amqp import host_of, vhost_of
from tests.e2e.test_amqp import Broker
from tests.router_process import RouterFactory, RouterProcess
from tests.waiting import until_sync


@pytest.fixture
def broker(amqp_url: str) -> Iterator[Broker]:
    b = Broker(amqp_url)
    yield b
    b.delete_all()


def _router(router_factory: RouterFactory, tmp_path: Path, routes: str, *,
            wait: bool = True) -> RouterProcess:
    seen = tmp_path / "seen"
    seen.mkdir(exist_ok=True)
    router_factory.write_function("record", f"""
        import base64, os
        def handler(event, context):
            for queue, messages in event["rmqMessagesByQueue"].items():
                for m in messages:
                    body = base64.b64decode(m["data"]).decode()
                    if body == "poison":
                        raise ValueError("poison")
                    open(os.path.join("{seen}", body), "w").close()
    """)
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 5s}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          record:
            runtime: python3.11
            handler: app.handler
            code: {tmp_path / 'functions' / 'record'}
        routes:
{routes}
    """, start=False)
    return rp.start(wait_ready=wait)


def _route(name: str, url: str, queue: str, extra: str = "") -> str:
    return (f"          - name: {name}\n"
            f"            source: {{type: amqp, url: \"{url}\", queue: {queue}, batch_size: 1, "
            f"batch_window: 0s{extra}}}\n"
            f"            function: record\n")


def test_an_existing_quorum_queue_with_a_dead_letter_exchange_is_consumed_by_default(
    router_factory: RouterFactory, tmp_path: Path, broker: Broker, amqp_url: str,
) -> None:
    queue, dlq = broker.name("quorum"), broker.name("quorum-dlq")
    broker.declare(dlq)
    broker.declare(queue, {"x-queue-type": "quorum", "x-dead-letter-exchange": "",
                           "x-dead-letter-routing-key": dlq, "x-delivery-limit": 5})
    _router(router_factory, tmp_path, _route("orders", amqp_url, queue))
    broker.publish(queue, [b"hello", b"poison"])
    until_sync((tmp_path / "seen" / "hello").exists, "the function ran on the existing queue", deadline=30)
    # The queue's own dead-letter exchange takes the failed message (the route's on_error: dead_letter).
    until_sync(lambda: broker.count(dlq) == 1, "the poison message in the queue's dead-letter queue",
               deadline=30)


def test_a_missing_queue_names_the_route_queue_and_vhost_and_the_other_routes_go_on(
    router_factory: RouterFactory, tmp_path: Path, broker: Broker, amqp_url: str,
) -> None:
    missing, there = broker.name("missing"), broker.name("there")
    broker.declare(there)
    rp = _router(router_factory, tmp_path,
                 _route("orders", amqp_url, missing) + _route("invoices", amqp_url, there), wait=False)

    def logged() -> str:
        return next((r["message"] for r in rp.log_records() if f"queue '{missing}' not found" in
                     r.get("message", "")), "")

    message = until_sync(logged, "the missing queue's error", deadline=30)
    assert message == (
        f"route 'orders': broker {host_of(amqp_url)} vhost '{vhost_of(amqp_url)}': queue '{missing}' not "
        "found (NOT_FOUND); the route consumes an existing queue: create it on the broker (with the "
        "arguments it needs: dead-letter exchange, queue type, ...), or set source.declare: true (with "
        "source.queue_type / source.arguments) to have the router declare it")
    broker.publish(there, [b"other-route"])
    until_sync((tmp_path / "seen" / "other-route").exists, "the other route consumed", deadline=30)
    broker.declare(missing)  # created as the message says: the route recovers
    rp.wait_ready(timeout=60)
    broker.publish(missing, [b"late"])
    until_sync((tmp_path / "seen" / "late").exists, "the route consumed once the queue existed", deadline=30)


def test_declare_true_declares_the_queue(
    router_factory: RouterFactory, tmp_path: Path, broker: Broker, amqp_url: str,
) -> None:
    queue = broker.name("declared")
    _router(router_factory, tmp_path,
            _route("orders", amqp_url, queue, ", declare: true, queue_type: quorum"))
    assert broker.count(queue) == 0  # it exists: a passive declare finds it
    broker.publish(queue, [b"declared"])
    until_sync((tmp_path / "seen" / "declared").exists, "the function ran", deadline=30)
