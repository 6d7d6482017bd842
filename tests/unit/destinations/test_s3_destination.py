"""The s3 destination's object keys (Lambda's naming) and its config: a bucket ARN, on failure only."""

from __future__ import annotations

import calendar
import re

import pytest
from pydantic import ValidationError

from router.config.models import AsyncConfig, AwsConfig
from router.destinations.factory import async_prefix, mapping_prefix
from router.destinations.s3 import S3Destination

BUCKET = "arn:aws:s3:::failures"
AT = calendar.timegm((2024, 3, 5, 14, 7, 9, 0, 0, 0))  # 2024-03-05T14:07:09Z


def test_an_async_record_is_named_under_the_functions_async_folder() -> None:
    dest = S3Destination(BUCKET, prefix=async_prefix("resize"), aws=AwsConfig())
    assert dest.bucket == "failures"
    key = dest.key({"requestContext": {"requestId": "r-1"}}, now=AT)
    assert re.fullmatch(r"aws/lambda/async/resize/2024/03/05/2024-03-05T14\.07\.09-[0-9a-f-]{36}", key), key
    assert key != dest.key({"requestContext": {"requestId": "r-1"}}, now=AT)  # a random UUID each


@pytest.mark.parametrize("info", ["KinesisBatchInfo", "DDBStreamBatchInfo"])
def test_a_stream_record_is_named_under_its_mapping_and_shard(info: str) -> None:
    dest = S3Destination(BUCKET, prefix=mapping_prefix("0f8fad5b-d9cb-469f-a165-70867728950e"),
                         aws=AwsConfig())
    key = dest.key({info: {"shardId": "shardId-000000000003"}}, now=AT)
    assert re.fullmatch(r"aws/lambda/0f8fad5b-d9cb-469f-a165-70867728950e/shardId-000000000003/2024/03/05/"
                        r"2024-03-05T14\.07\.09-[0-9a-f-]{36}", key), key


@pytest.mark.parametrize(("bucket_arn", "ok"), [
    ("arn:aws:s3:::failures", True),
    ("arn:aws:s3:::my.bucket-2", True),
    ("arn:aws:s3:us-east-1:123456789012:failures", False),  # a bucket ARN has no region or account
    ("arn:aws:s3:::Failures", False),
    ("arn:aws:s3:::ab", False),
    ("arn:aws:s3:::a..b", False),
    ("failures", False),
])
def test_the_bucket_arn_is_checked(bucket_arn: str, ok: bool) -> None:
    config = {"on_failure": {"type": "s3", "bucket_arn": bucket_arn}}
    if ok:
        AsyncConfig.model_validate(config)
    else:
        with pytest.raises(ValidationError, match="not an S3 bucket ARN; expected arn:aws:s3:::BUCKET"):
            AsyncConfig.model_validate(config)


def test_s3_is_an_on_failure_destination_only() -> None:
    with pytest.raises(ValidationError, match="an S3 bucket is an on-failure destination only"):
        AsyncConfig.model_validate({"on_success": {"type": "s3", "bucket_arn": BUCKET}})


def test_the_builder_refuses_an_s3_destination_with_nowhere_to_name_its_objects() -> None:
    """Only a function's async on_failure and a stream route's on_failure name an S3 object (Lambda's
    keys carry the function or the mapping): the builder refuses any other use, naming the config path."""
    from router.config.models import S3DestinationConfig
    from router.destinations.factory import DestinationBuilder
    from tests.unit.core.helpers import make_config

    builder = DestinationBuilder(make_config({"f": {}}), session=None, submit=None)  # type: ignore[arg-type]
    cfg = S3DestinationConfig(type="s3", bucket_arn=BUCKET)
    assert builder.build("routes[0].source.on_failure", cfg) is None
    assert builder.problems == ["routes[0].source.on_failure: an s3 destination is an on_failure of a "
                                "function's async events or of a stream route only (as on Lambda); use "
                                "another type"]
    assert builder.build("functions.f.async.on_failure", cfg, s3_prefix=async_prefix("f")) is not None
