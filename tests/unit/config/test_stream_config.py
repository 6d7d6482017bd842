"""Config of the stream routes: Lambda's rules for starting positions and limits, in users' words."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from router.config.models import DynamodbStreamSourceConfig, KinesisSourceConfig, RouteConfig

KINESIS = "arn:aws:kinesis:us-east-1:123456789012:stream/clicks"
DDB = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000"


def route(**source: Any) -> RouteConfig:
    source.setdefault("type", "kinesis")
    source.setdefault("stream_arn", KINESIS if source["type"] == "kinesis" else DDB)
    return RouteConfig.model_validate({"name": "r", "function": "f", "source": source})


def test_defaults_are_lambdas() -> None:
    src = route().source
    assert isinstance(src, KinesisSourceConfig)
    assert (src.starting_position, src.batch_size, src.batch_window) == ("LATEST", 100, 0)
    assert src.parallelization == 1
    assert (src.max_retry_attempts, src.max_record_age, src.bisect_on_error) == (-1, -1, False)
    assert src.report_batch_item_failures is False
    assert src.on_failure is None


def test_at_timestamp_needs_a_timestamp() -> None:
    with pytest.raises(ValidationError,
                       match="starting_position AT_TIMESTAMP needs starting_position_timestamp"):
        route(starting_position="AT_TIMESTAMP")
    assert route(starting_position="AT_TIMESTAMP", starting_position_timestamp=1.7e9).source


def test_timestamp_is_refused_without_at_timestamp() -> None:
    with pytest.raises(ValidationError, match="starting_position_timestamp applies to starting_position "
                                              "AT_TIMESTAMP only, got starting_position TRIM_HORIZON"):
        route(starting_position="TRIM_HORIZON", starting_position_timestamp=1.7e9)


def test_dynamodb_streams_have_no_at_timestamp() -> None:
    with pytest.raises(ValidationError, match="DynamoDB Streams has no AT_TIMESTAMP starting position; "
                                              "use TRIM_HORIZON or LATEST"):
        route(type="dynamodb_stream", starting_position="AT_TIMESTAMP", starting_position_timestamp=1.0)
    assert isinstance(route(type="dynamodb_stream", batch_size=10000).source, DynamodbStreamSourceConfig)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("batch_size", 0, "greater than or equal to 1"),
    ("batch_size", 10001, "less than or equal to 10000"),
    ("parallelization", 11, "less than or equal to 10"),
    ("max_retry_attempts", -2, "greater than or equal to -1"),
    ("max_record_age", 0, "max_record_age must be -1 \\(never\\) or more than 0s and at most 7d, got 0"),
    ("max_record_age", "8d", "at most 7d"),
    ("batch_window", "6m", "less than or equal to 300"),
])
def test_limits(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        route(**{field: value})


def test_durations_and_unlimited() -> None:
    src = route(max_record_age="1h", batch_window="500ms", max_retry_attempts=-1).source
    assert isinstance(src, KinesisSourceConfig)
    assert (src.max_record_age, src.batch_window) == (3600.0, 0.5)
    assert route(max_record_age=-1).source.max_record_age == -1  # type: ignore[union-attr]
