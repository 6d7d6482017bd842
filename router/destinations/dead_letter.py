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


def dead_letter_attributes(request_id: str, result: Result | None) -> dict[str, Any]:
    """The message attributes of a failed event; ``result`` is its last invocation's (None when none ran:
    then only ``RequestID`` is known). SQS and SNS take them in the same form."""
    attributes: dict[str, Any] = {"RequestID": {"DataType": "String", "StringValue": request_id}}
    if result is not None:
        attributes["ErrorCode"] = {"DataType": "Number", "StringValue": str(result.status_code)}
        message = result.error_message(MESSAGE_LIMIT).encode("utf-8")[:MESSAGE_LIMIT]
        attributes["ErrorMessage"] = {"DataType": "String", "StringValue": message.decode("utf-8", "ignore")}
    return attributes


class DeadLetterQueue:
    """Sends failed async events of one function to its dead-letter queue or topic."""

    def __init__(self, cfg: DeadLetterConfig, *, aws: AwsConfig) -> None:
        self._aws = aws
        if cfg.queue_url is not None:
            self.service, self.target = "sqs", cfg.queue_url
            self._where, self._field = f"dead-letter queue {redact(cfg.queue_url)}", "queue_url"
        else:
            assert cfg.topic_arn is not None  # DeadLetterConfig holds exactly one
            self.service, self.target = "sns", cfg.topic_arn
            self._where, self._field = f"dead-letter topic {cfg.topic_arn}", "topic_arn"

    def call(self, *, request_id: str, payload: bytes, result: Result | None,
             trace: str | None = None) -> dict[str, Any]:
        """The SendMessage (SQS) or Publish (SNS) arguments: the event's payload as it came, the
        attributes, and on SQS the trace header as ``AWSTraceHeader`` (SNS has no system attribute)."""
        body, attributes = payload.decode("utf-8", "replace"), dead_letter_attributes(request_id, result)
        if self.service == "sns":
            return {"TopicArn": self.target, "Message": body, "MessageAttributes": attributes}
        kw: dict[str, Any] = {"QueueUrl": self.target, "MessageBody": body, "MessageAttributes": attributes}
        if trace:
            kw["MessageSystemAttributes"] = {
                lineage.SQS_ATTRIBUTE: {"DataType": "String", "StringValue": trace}}
        return kw

    async def send(self, *, request_id: str, payload: bytes, result: Result | None,
                   trace: str | None = None) -> None:
        """Raises ``DestinationError`` when SQS or SNS refused the message ``ATTEMPTS`` times."""
        kw = self.call(request_id=request_id, payload=payload, result=result, trace=trace)
        delay = RETRY_DELAY
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with create_client(self.service, self._aws) as client:
                    await (client.send_message(**kw) if self.service == "sqs" else client.publish(**kw))
                return
            except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
                if attempt == ATTEMPTS:
                    message, _ = describe_error(
                        exc, what="queue" if self.service == "sqs" else "topic",
                        hint_not_found=f"check async.dead_letter.{self._field} and aws.region")
                    raise DestinationError(f"{self._where}: {message}") from exc
            await asyncio.sleep(delay)
            delay *= 2
