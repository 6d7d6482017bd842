"""Lambda's RabbitMQ event from AMQP messages: pure functions, no broker."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from router.sources.amqp.event import (
    REDELIVERIES_HEADER,
    batch_payload,
    batch_payload_of,
    broker_arn,
    encode_record,
    header_value,
    lambda_timestamp,
    record_size,
    redelivery_count,
    to_record,
)


@dataclass
class Delivered:
    """The attributes of an aio_pika IncomingMessage the event reads."""

    body: bytes = b""
    headers: dict[str, Any] = field(default_factory=dict)
    content_type: str | None = None
    content_encoding: str | None = None
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: float | None = None
    message_id: str | None = None
    timestamp: dt.datetime | None = None
    type: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    cluster_id: str | None = ""
    redelivered: bool = False


@pytest.mark.parametrize(("value", "text"), [
    (dt.datetime(1970, 1, 1, 0, 33, 41, tzinfo=dt.UTC), "Jan 1, 1970, 12:33:41 AM"),  # Lambda's example
    (dt.datetime(2024, 12, 31, 12, 0, 5, tzinfo=dt.UTC), "Dec 31, 2024, 12:00:05 PM"),
    (dt.datetime(2024, 3, 5, 23, 59, 59), "Mar 5, 2024, 11:59:59 PM"),
    (None, None),
])
def test_lambda_timestamp(value: dt.datetime | None, text: str | None) -> None:
    assert lambda_timestamp(value) == text


def test_lambda_timestamp_converts_to_utc() -> None:
    berlin = dt.timezone(dt.timedelta(hours=1))
    assert lambda_timestamp(dt.datetime(2024, 1, 1, 1, 0, 0, tzinfo=berlin)) == "Jan 1, 2024, 12:00:00 AM"


def test_header_values_as_lambda_writes_them() -> None:
    assert header_value("value1") == {"bytes": list(b"value1")}  # Lambda's example: {"bytes": [118, ...]}
    assert header_value(b"\x00\xff") == {"bytes": [0, 255]}
    assert header_value(10) == 10
    assert header_value(True) is True
    assert header_value(None) is None
    assert header_value(decimal.Decimal("1.5")) == 1.5
    assert header_value({"a": "b", "n": [1, "x"]}) == {"a": {"bytes": [98]}, "n": [1, {"bytes": [120]}]}


def test_record_has_every_basic_property() -> None:
    msg = Delivered(body=b'{"a":1}', headers={"h": "v"}, content_type="application/json",
                    delivery_mode=2, priority=4, message_id="id-1", expiration=60.0,
                    timestamp=dt.datetime(2020, 2, 2, 2, 2, 2, tzinfo=dt.UTC), redelivered=True)
    record = to_record(msg)
    assert record == {
        "basicProperties": {
            "contentType": "application/json", "contentEncoding": None, "headers": {"h": {"bytes": [118]}},
            "deliveryMode": 2, "priority": 4, "correlationId": None, "replyTo": None, "expiration": "60000",
            "messageId": "id-1", "timestamp": "Feb 2, 2020, 2:02:02 AM", "type": None, "userId": None,
            "appId": None, "clusterId": None, "bodySize": 7,
        },
        "redelivered": True,
        "data": base64.b64encode(b'{"a":1}').decode(),
    }
    assert record_size(record) == len(json.dumps(record, separators=(",", ":"))) + 1


def test_binary_body_is_base64() -> None:
    record = to_record(Delivered(body=b"\xff\xfe\x00"))
    assert base64.b64decode(record["data"]) == b"\xff\xfe\x00"
    assert record["basicProperties"]["bodySize"] == 3
    assert record["redelivered"] is False


def test_router_requeue_counts_as_redelivered() -> None:
    assert to_record(Delivered(headers={REDELIVERIES_HEADER: 1}))["redelivered"] is True


@pytest.mark.parametrize(("headers", "count"), [
    ({}, 0), (None, 0), ({REDELIVERIES_HEADER: 3}, 3), ({REDELIVERIES_HEADER: "2"}, 2),
    ({REDELIVERIES_HEADER: -1}, 0), ({REDELIVERIES_HEADER: True}, 0), ({REDELIVERIES_HEADER: "x"}, 0),
])
def test_redelivery_count(headers: dict[str, Any] | None, count: int) -> None:
    assert redelivery_count(headers) == count


def test_batch_payload_shape() -> None:
    arn = broker_arn("rabbit.local:5672", region="eu-west-1", account="123456789012")
    assert arn == "arn:aws:mq:eu-west-1:123456789012:broker:rabbit.local:5672"
    event = json.loads(batch_payload([{"data": ""}], arn=arn, queue="orders", vhost="/"))
    assert event == {"eventSource": "aws:rmq", "eventSourceArn": arn,
                     "rmqMessagesByQueue": {"orders::/": [{"data": ""}]}}


@pytest.mark.parametrize(("queue", "vhost"), [("orders", "/"), ('q"\u00e9\u2028', "v\\h")])
def test_batch_payload_of_encoded_records_is_the_whole_event_encoded(queue: str, vhost: str) -> None:
    """The router encodes each record once (its size counts against the payload limit) and joins them:
    the bytes are exactly what encoding the whole event gives, escapes included."""
    arn = broker_arn('h"\u00e9:5672', region="eu-west-1", account="123456789012")
    records = [to_record(Delivered(body=b'{"a":"\xc3\xa9"}', headers={"h": "v\u2028"})),
               {"data": "", "x": [1, None, True, 1.5, "\u00e9\"\\"]}]
    whole = {"eventSource": "aws:rmq", "eventSourceArn": arn,
             "rmqMessagesByQueue": {f"{queue}::{vhost}": records}}
    expected = json.dumps(whole, separators=(",", ":")).encode()
    encoded = [encode_record(r) for r in records]
    assert batch_payload_of(encoded, arn=arn, queue=queue, vhost=vhost) == expected
    assert batch_payload(records, arn=arn, queue=queue, vhost=vhost) == expected
    assert json.loads(batch_payload_of([], arn=arn, queue=queue, vhost=vhost))["rmqMessagesByQueue"] == {
        f"{queue}::{vhost}": []}
    assert [record_size(r) for r in records] == [len(encode_record(r)) + 1 for r in records]
