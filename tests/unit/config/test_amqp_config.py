"""The amqp source's config: defaults, combinations and the helpers in router.amqp."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from router.amqp import check_url, describe_error, host_of, redact, vhost_of
from router.config.models import AmqpSourceConfig
from router.invocation import ErrorType


def make(**kw: Any) -> AmqpSourceConfig:
    return AmqpSourceConfig.model_validate({"type": "amqp", "url": "amqp://u:p@h/", "queue": "q", **kw})


def test_defaults() -> None:
    cfg = make()
    assert (cfg.prefetch, cfg.batch_size, cfg.batch_window) == (10, 10, 0.5)  # batch: min(100, prefetch)
    assert cfg.on_error == "dead_letter"
    assert not cfg.declare  # as Lambda: an existing queue is consumed as it is
    assert cfg.durable
    assert cfg.queue_type == "classic"
    assert cfg.bisect_on_error  # one poison message does not take its batch with it (issue 9)
    assert make(prefetch=500).batch_size == 100  # Lambda's default


@pytest.mark.parametrize(("kw", "message"), [
    ({"prefetch": 10, "batch_size": 20}, r"batch_size \(20\) cannot exceed prefetch \(10\)"),
    ({"declare": True, "arguments": {"x-queue-type": "quorum"}}, "set queue_type instead"),
    ({"declare": True, "queue_type": "quorum", "durable": False}, "quorum queue is always durable"),
    ({"declare": True, "arguments": {"x-delivery-limit": 3}}, "x-delivery-limit works on quorum queues only"),
    ({"queue_type": "quorum"}, "queue_type describes the queue the router declares, and it declares none "
                               r"unless declare: true \(an existing queue is consumed as it is\); add "
                               "declare: true, or remove queue_type"),
    ({"durable": False, "arguments": {"x-max-length": 5}}, "arguments, durable describe the queue"),
    ({"url": "http://h/"}, "must be an amqp:// or amqps:// URL"),
    ({"requeue_delay": 0}, "greater than 0"),
    ({"on_error": "drop"}, "dead_letter"),
])
def test_invalid(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make(**kw)


def test_quorum_with_delivery_limit() -> None:
    cfg = make(declare=True, queue_type="quorum",
               arguments={"x-delivery-limit": 5, "x-dead-letter-exchange": "dlx"})
    assert cfg.arguments["x-delivery-limit"] == 5


def test_urls_never_show_the_password() -> None:
    url = "amqp://user:hunter2@rabbit:5673/prod?heartbeat=30"
    assert redact(url) == "amqp://user:***@rabbit:5673/prod"
    assert "hunter2" not in (check_url("amqp://user:hunter2@/x") or "")
    assert host_of(url) == "rabbit:5673"
    assert host_of("amqps://h/") == "h:5671"


@pytest.mark.parametrize(("url", "vhost"), [
    ("amqp://h/", "/"), ("amqp://h", "/"), ("amqp://h/prod", "prod"), ("amqp://h/%2F", "/"),
    ("amqp://h/a%2Fb", "a/b"),
])
def test_vhost(url: str, vhost: str) -> None:
    assert vhost_of(url) == vhost


def test_describe_errors() -> None:
    import aiormq.exceptions as e

    url = "amqp://bob:hunter2@rabbit:5672/prod"
    text, kind = describe_error(e.ProbableAuthenticationError("ACCESS_REFUSED"), url)
    assert text == ("broker rabbit:5672 vhost 'prod': login refused for user 'bob' (ACCESS_REFUSED); "
                    "check the user name and password in source.url")
    assert kind is ErrorType.CONFIG
    text, _ = describe_error(e.ChannelNotFoundEntity("NOT_FOUND"), url, queue="orders",
                             hint_not_found="create the queue, or set declare: true")
    assert text.endswith("queue 'orders' not found (NOT_FOUND); create the queue, or set declare: true")
    text, kind = describe_error(ConnectionRefusedError(111, "Connect call failed"), url)
    assert "cannot connect" in text
    assert kind is ErrorType.CONNECTION
    assert "hunter2" not in text
