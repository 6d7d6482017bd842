"""``sqs`` destination: SendMessage with the destination record as the JSON body.

For a FIFO queue (URL ending in ``.fifo``) the message group is the function's name (records of one
function stay in order) and the deduplication id is ``requestId:condition``, so a record re-sent after a
crash within SQS's 5-minute deduplication window is stored once.
A client is opened per record: destination records are rare next to invocations, and the destination
then holds no connection that someone must close.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from router import lineage
from router.aws import create_client, describe_error
from router.config.checks import is_fifo
from router.config.models import AwsConfig
from router.errors import DestinationError
from router.redaction import redact


def fifo_ids(record: dict[str, Any]) -> tuple[str, str]:
    """A destination record's message group (its function's name: one function's records stay in order)
    and deduplication id (``requestId:condition``) on a FIFO queue or topic."""
    ctx = record.get("requestContext") or {}
    arn = str(ctx.get("functionArn") or "")
    function = arn.partition(":function:")[2].split(":")[0] or "router"
    return function[:128], f"{ctx.get('requestId', '')}:{ctx.get('condition', '')}"[:128]


class SqsDestination:
    kind = "sqs"

    def __init__(self, queue_url: str, *, aws: AwsConfig) -> None:
        self.queue_url = queue_url
        self._aws = aws
        self._fifo = is_fifo(queue_url)
        self._where = f"sqs destination {redact(queue_url)}"

    def message(self, record: dict[str, Any], trace: str | None = None) -> dict[str, Any]:
        """The SendMessage arguments for ``record``; ``trace`` becomes its ``AWSTraceHeader``, as SQS keeps
        the X-Amzn-Trace-Id of a call from a Lambda function (``router.lineage``)."""
        kw: dict[str, Any] = {"QueueUrl": self.queue_url, "MessageBody": json.dumps(record)}
        if trace:
            kw["MessageSystemAttributes"] = {
                lineage.SQS_ATTRIBUTE: {"DataType": "String", "StringValue": trace}}
        if self._fifo:
            kw["MessageGroupId"], kw["MessageDeduplicationId"] = fifo_ids(record)
        return kw

    async def send(self, record: dict[str, Any], trace: str | None = None) -> None:
        """Raises ``DestinationError`` when SQS does not take the message (the engine retries)."""
        try:
            async with create_client("sqs", self._aws) as client:
                await client.send_message(**self.message(record, trace))
        except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
            message, _ = describe_error(exc, what="queue",
                                        hint_not_found="check its queue_url and aws.region")
            raise DestinationError(f"{self._where}: {message}") from exc
