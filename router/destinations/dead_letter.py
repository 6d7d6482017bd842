"""A function's dead-letter queue (``async.dead_letter``, Lambda's ``DeadLetterConfig``): a failed async
event sent to an SQS standard queue or an SNS standard topic as it came, why it failed in message
attributes.

As Lambda writes it (developer guide, "Dead-letter queues"): the body is the event's payload with no
change; ``RequestID`` (String) is its request id, ``ErrorCode`` (Number) the 3-digit HTTP status of its
last invocation (200 for a function error, as the Invoke API answers one), ``ErrorMessage`` (String) its
error message cut to 1 KB. A message SQS refuses is tried ``ATTEMPTS`` times, then given up: Lambda then
counts ``DeadLetterErrors`` and deletes the event; here ``router_dead_letter_errors_total{function}``
counts it and the event stays among the failed events (``router failures``), where it can be redriven.
"""

from __future__ import annotations

import asyncio
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from router import lineage
from router.aws import create_client, describe_error
from router.config.models import AwsConfig, DeadLetterConfig
from router.errors import DestinationError
from router.invocation import Result
from router.redaction import redact

ATTEMPTS = 3
"""SendMessage calls for one event before it is given up (with ``RETRY_DELAY`` doubling between)."""
RETRY_DELAY = 0.5
MESSAGE_LIMIT = 1024
"""Bytes of the error message kept (Lambda: truncated to 1 KB)."""


def dead_letter_message(queue_url: str, *, request_id: str, payload: bytes, result: Result | None,
                        trace: str | None = None) -> dict[str, Any]:
    """The SendMessage arguments for a failed event; ``result`` is its last invocation's (None when
    none ran: then only ``RequestID`` is known). ``dead_letter_publish`` makes SNS's from them."""
    attributes: dict[str, Any] = {"RequestID": {"DataType": "String", "StringValue": request_id}}
    if result is not None:
        attributes["ErrorCode"] = {"DataType": "Number", "StringValue": str(result.status_code)}
        message = result.error_message(MESSAGE_LIMIT).encode("utf-8")[:MESSAGE_LIMIT]
        attributes["ErrorMessage"] = {"DataType": "String", "StringValue": message.decode("utf-8", "ignore")}
    kw: dict[str, Any] = {"QueueUrl": queue_url, "MessageBody": payload.decode("utf-8", "replace"),
                          "MessageAttributes": attributes}
    if trace:
        kw["MessageSystemAttributes"] = {lineage.SQS_ATTRIBUTE: {"DataType": "String", "StringValue": trace}}
    return kw


def dead_letter_publish(topic_arn: str, sqs_message: dict[str, Any]) -> dict[str, Any]:
    """The Publish arguments of the same message for an SNS topic (its attributes as SNS takes them; SNS
    has no system attribute for the trace header)."""
    return {"TopicArn": topic_arn, "Message": sqs_message["MessageBody"],
            "MessageAttributes": sqs_message["MessageAttributes"]}


class DeadLetterQueue:
    """Sends failed async events of one function to its dead-letter queue or topic."""

    def __init__(self, cfg: DeadLetterConfig, *, aws: AwsConfig) -> None:
        self._cfg = cfg
        self._aws = aws
        if cfg.queue_url is not None:
            self._where = f"dead-letter queue {redact(cfg.queue_url)}"
        else:
            self._where = f"dead-letter topic {cfg.topic_arn}"

    async def send(self, *, request_id: str, payload: bytes, result: Result | None,
                   trace: str | None = None) -> None:
        """Raises ``DestinationError`` when SQS or SNS refused the message ``ATTEMPTS`` times."""
        cfg = self._cfg
        kw = dead_letter_message(cfg.queue_url or "", request_id=request_id, payload=payload, result=result,
                                 trace=trace)
        service, what = ("sqs", "queue") if cfg.queue_url is not None else ("sns", "topic")
        if cfg.topic_arn is not None:
            kw = dead_letter_publish(cfg.topic_arn, kw)
        delay = RETRY_DELAY
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with create_client(service, self._aws) as client:
                    if service == "sqs":
                        await client.send_message(**kw)
                    else:
                        await client.publish(**kw)
                return
            except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
                if attempt == ATTEMPTS:
                    field = "queue_url" if service == "sqs" else "topic_arn"
                    message, _ = describe_error(exc, what=what, hint_not_found=f"check async.dead_letter."
                                                                               f"{field} and aws.region")
                    raise DestinationError(f"{self._where}: {message}") from exc
            await asyncio.sleep(delay)
            delay *= 2
