"""``sns`` destination: Publish with the destination record as the JSON message (Lambda's SNS destination).

For a FIFO topic (ARN ending in ``.fifo``) the message group is the function's name and the deduplication
id ``requestId:condition``, as for a FIFO queue (``router.destinations.sqs``). A client is opened per
record: destination records are rare next to invocations.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from router.aws import create_client, describe_error
from router.config.checks import is_fifo
from router.config.models import AwsConfig
from router.destinations.sqs import fifo_ids
from router.errors import DestinationError


class SnsDestination:
    kind = "sns"

    def __init__(self, topic_arn: str, *, aws: AwsConfig) -> None:
        self.topic_arn = topic_arn
        self._aws = aws
        self._fifo = is_fifo(topic_arn)
        self._where = f"sns destination {topic_arn}"

    def message(self, record: dict[str, Any]) -> dict[str, Any]:
        """The Publish arguments for ``record``."""
        kw: dict[str, Any] = {"TopicArn": self.topic_arn, "Message": json.dumps(record)}
        if self._fifo:
            kw["MessageGroupId"], kw["MessageDeduplicationId"] = fifo_ids(record)
        return kw

    async def send(self, record: dict[str, Any], trace: str | None = None) -> None:
        """Raises ``DestinationError`` when SNS does not take the message (the engine retries). ``trace``
        is not passed on: SNS has no system attribute for it (a loop through SNS is not counted)."""
        try:
            async with create_client("sns", self._aws) as client:
                await client.publish(**self.message(record))
        except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
            message, _ = describe_error(exc, what="topic",
                                        hint_not_found="check its topic_arn and aws.region")
            raise DestinationError(f"{self._where}: {message}") from exc
