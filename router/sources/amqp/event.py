"""Lambda's RabbitMQ event (``eventSource: "aws:rmq"``), built from delivered AMQP messages.

Pure functions, no I/O. The shape follows the Lambda developer guide's example event:
``{"eventSource": "aws:rmq", "eventSourceArn": ..., "rmqMessagesByQueue": {"<queue>::<vhost>":
[{"basicProperties": {...}, "redelivered": bool, "data": "<base64 body>"}]}}``. Every basic property is
present (``null`` when the message has none); string header values are ``{"bytes": [...]}`` as Lambda
writes them, numbers and booleans stay as they are; ``timestamp`` is written as Lambda does
(``"Jan 1, 1970, 12:33:41 AM"``, UTC); ``bodySize`` is the body's length in bytes.

``eventSourceArn``: there is no Amazon MQ broker, so the router writes
``arn:aws:mq:<aws.region>:<aws.account_id>:broker:<host>:<port>`` (broker name = host, id = port).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
from collections.abc import Mapping, Sequence
from typing import Any

from router import compact_json

EVENT_SOURCE = "aws:rmq"
REDELIVERIES_HEADER = "x-router-redeliveries"  # the router's own count of delayed requeues
REASON_HEADER = "x-router-reject-reason"  # why the router dead-lettered a message itself
ENVELOPE_OVERHEAD = 512  # bytes of the event around its records, a generous upper bound

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def broker_arn(host_port: str, *, region: str, account: str) -> str:
    host, _, port = host_port.rpartition(":")
    return f"arn:aws:mq:{region}:{account}:broker:{host or host_port}:{port}"


def queue_key(queue: str, vhost: str) -> str:
    return f"{queue}::{vhost}"


def lambda_timestamp(value: dt.datetime | None) -> str | None:
    """``Jan 1, 1970, 12:33:41 AM`` (Java's medium date-time format, as Lambda writes it), in UTC."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    hour = value.hour % 12 or 12
    half = "AM" if value.hour < 12 else "PM"
    return (f"{_MONTHS[value.month - 1]} {value.day}, {value.year}, "
            f"{hour}:{value.minute:02d}:{value.second:02d} {half}")


def header_value(value: Any) -> Any:
    """An AMQP header value as Lambda writes it: strings and bytes as ``{"bytes": [...]}``."""
    if isinstance(value, str):
        return {"bytes": list(value.encode("utf-8"))}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"bytes": list(bytes(value))}
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime):
        return lambda_timestamp(value)
    if isinstance(value, Mapping):
        return {str(k): header_value(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [header_value(v) for v in value]
    return str(value)


def redelivery_count(headers: Mapping[str, Any] | None) -> int:
    """The router's requeue count of a message (0 when it has none or it is not a number)."""
    raw = (headers or {}).get(REDELIVERIES_HEADER)
    if isinstance(raw, bool):
        return 0
    if isinstance(raw, int):
        return max(0, raw)
    if isinstance(raw, str | bytes) and raw.strip().isdigit():
        return int(raw)
    return 0


def to_record(message: Any) -> dict[str, Any]:
    """One delivered message (an ``aio_pika.IncomingMessage`` or anything with its attributes) as a
    record of Lambda's RabbitMQ event. ``redelivered`` is true when the broker says so or when the router
    requeued the message itself (it then carries ``x-router-redeliveries``)."""
    body: bytes = bytes(message.body)
    headers = dict(message.headers or {})
    timestamp = message.timestamp
    props = {
        "contentType": message.content_type,
        "contentEncoding": message.content_encoding,
        "headers": {str(k): header_value(v) for k, v in headers.items()},
        "deliveryMode": int(message.delivery_mode) if message.delivery_mode is not None else None,
        "priority": message.priority,
        "correlationId": message.correlation_id,
        "replyTo": message.reply_to,
        "expiration": _expiration(message.expiration),
        "messageId": message.message_id,
        "timestamp": lambda_timestamp(timestamp) if isinstance(timestamp, dt.datetime) else None,
        "type": message.type,
        "userId": message.user_id,
        "appId": message.app_id,
        "clusterId": getattr(message, "cluster_id", None) or None,  # aio-pika: "" when absent
        "bodySize": len(body),
    }
    return {
        "basicProperties": props,
        "redelivered": bool(message.redelivered) or redelivery_count(headers) > 0,
        "data": base64.b64encode(body).decode("ascii"),
    }


def _expiration(value: Any) -> str | None:
    """AMQP ``expiration`` is a string of milliseconds; aio-pika hands back seconds as a number."""
    if value is None:
        return None
    if isinstance(value, int | float | decimal.Decimal):
        return str(int(decimal.Decimal(str(value)) * 1000))
    return str(value)


def encode_record(record: dict[str, Any]) -> bytes:
    """The record as it appears in the event's JSON: encoded once, when the message arrives, then both
    measured (payload limit) and joined into the event (``batch_payload_of``)."""
    return compact_json.dumpb(record)


def record_size(record: dict[str, Any]) -> int:
    """Bytes the record adds to the event's JSON (plus a comma)."""
    return len(encode_record(record)) + 1


def batch_payload(records: Sequence[dict[str, Any]], *, arn: str, queue: str, vhost: str) -> bytes:
    return batch_payload_of([encode_record(r) for r in records], arn=arn, queue=queue, vhost=vhost)


def batch_payload_of(encoded: Sequence[bytes], *, arn: str, queue: str, vhost: str) -> bytes:
    """The event around records already encoded by ``encode_record``: the same bytes ``json.dumps`` gives
    for the whole event, without encoding each record a second time."""
    head = json.dumps({"eventSource": EVENT_SOURCE, "eventSourceArn": arn},
                      separators=(",", ":"))[:-1].encode()
    key = json.dumps(queue_key(queue, vhost)).encode()
    return b"".join((head, b',"rmqMessagesByQueue":{', key, b":[", b",".join(encoded), b"]}}"))
