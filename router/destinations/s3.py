"""``s3`` destination: PutObject of the destination record as a JSON object, as Lambda's S3 destination
(on failure only) writes it. The object key is Lambda's: a function's failed async event under
``aws/lambda/async/FUNCTION/``, a stream mapping's discarded batch under ``aws/lambda/MAPPING-UUID/SHARD/``
(the shard from the record's batch info), then ``YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-UUID`` (UTC, a random
UUID). A stream's record carries the batch's records as ``payload`` (added by the stream engine: Lambda
sends them to S3 only). A client is opened per record: destination records are rare next to invocations.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from router.aws import create_client, describe_error
from router.config.checks import s3_bucket_of
from router.config.models import AwsConfig
from router.errors import DestinationError

_BATCH_INFO = ("KinesisBatchInfo", "DDBStreamBatchInfo")


class S3Destination:
    kind = "s3"

    def __init__(self, bucket_arn: str, *, prefix: str, aws: AwsConfig) -> None:
        """``prefix``: ``factory.async_prefix`` or ``factory.mapping_prefix``."""
        bucket = s3_bucket_of(bucket_arn)
        assert bucket is not None, bucket_arn  # the config model checked it
        self.bucket_arn = bucket_arn
        self.bucket = bucket
        self.prefix = prefix
        self._aws = aws
        self._where = f"s3 destination {bucket_arn}"

    def key(self, record: dict[str, Any], now: float | None = None) -> str:
        """The object key of ``record`` written at ``now`` (epoch seconds)."""
        folder = self.prefix
        for info in _BATCH_INFO:
            shard = (record.get(info) or {}).get("shardId")
            if shard:
                folder = f"{folder}/{shard}"
                break
        t = time.gmtime(time.time() if now is None else now)
        return (f"{folder}/{time.strftime('%Y/%m/%d', t)}/{time.strftime('%Y-%m-%dT%H.%M.%S', t)}-"
                f"{uuid.uuid4()}")

    async def send(self, record: dict[str, Any], trace: str | None = None) -> None:
        """Raises ``DestinationError`` when S3 does not take the object (the caller retries). ``trace`` is
        not passed on: nothing is invoked by the object itself."""
        try:
            async with create_client("s3", self._aws) as client:
                await client.put_object(Bucket=self.bucket, Key=self.key(record),
                                        Body=json.dumps(record).encode(), ContentType="application/json")
        except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
            message, _ = describe_error(exc, what="bucket",
                                        hint_not_found="check its bucket_arn and aws.endpoint_url")
            raise DestinationError(f"{self._where}: {message}") from exc
