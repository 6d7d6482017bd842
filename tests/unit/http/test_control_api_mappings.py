"""The EventSourceMappingConfiguration the control API answers for each polling route, with the keys
Lambda's answers have (as captured from AWS in LocalStack's validated snapshots)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from router.config.models import RouterConfig
from router.http.control_api import ControlApi
from router.mappings import mapping_uuid


def _api(routes: list[dict[str, Any]]) -> ControlApi:
    config = RouterConfig.model_validate({
        "version": 1, "aws": {"region": "eu-west-1", "account_id": "123456789012"},
        "functions": {"fn": {"runtime": "python3.11", "handler": "app.handler", "code": "."}},
        "routes": routes,
    })
    controls = SimpleNamespace(route_enabled=lambda name: True, route_updated=lambda name: None)
    return ControlApi(SimpleNamespace(config=config), controls, started=1_700_000_000.0)  # type: ignore[arg-type]


def _mapping(source: dict[str, Any], **route: Any) -> dict[str, Any]:
    api = _api([{"name": "r", "function": "fn", "source": source, **route}])
    return api.mapping(api.config.routes[0])


def test_sqs_mapping() -> None:
    m = _mapping({"type": "sqs", "queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs"},
                 filters=[{"body": {"kind": ["a"]}}])
    assert m["EventSourceMappingArn"] == (
        f"arn:aws:lambda:eu-west-1:123456789012:event-source-mapping:{mapping_uuid('r')}")
    assert m["EventSourceArn"] == "arn:aws:sqs:eu-west-1:123456789012:jobs"
    assert m["FunctionResponseTypes"] == []
    assert m["FilterCriteria"] == {"Filters": [{"Pattern": json.dumps({"body": {"kind": ["a"]}})}]}
    assert m["StateTransitionReason"] == "USER_INITIATED"
    assert "ScalingConfig" not in m  # not set: Lambda's answer has none
    assert "LastProcessingResult" not in m
    scaled = _mapping({"type": "sqs", "queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs",
                       "max_concurrency": 5, "report_batch_item_failures": True})
    assert scaled["ScalingConfig"] == {"MaximumConcurrency": 5}
    assert scaled["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert "FilterCriteria" not in scaled


def test_stream_mapping() -> None:
    m = _mapping({"type": "kinesis", "stream_arn": "arn:aws:kinesis:eu-west-1:123456789012:stream/clicks"})
    assert m["DestinationConfig"] == {"OnFailure": {}}  # Lambda's answer without a destination
    assert (m["TumblingWindowInSeconds"], m["FunctionResponseTypes"]) == (0, [])
    assert m["StateTransitionReason"] == "User action"
    assert m["LastProcessingResult"] == "No records processed"
    with_failure = _mapping({
        "type": "kinesis", "stream_arn": "arn:aws:kinesis:eu-west-1:123456789012:stream/c",
        "on_failure": {"type": "sns", "topic_arn": "arn:aws:sns:eu-west-1:123456789012:t"}})
    assert with_failure["DestinationConfig"] == {
        "OnFailure": {"Destination": "arn:aws:sns:eu-west-1:123456789012:t"}}
    to_s3 = _mapping({
        "type": "kinesis", "stream_arn": "arn:aws:kinesis:eu-west-1:123456789012:stream/c",
        "on_failure": {"type": "s3", "bucket_arn": "arn:aws:s3:::failures"}})
    assert to_s3["DestinationConfig"] == {"OnFailure": {"Destination": "arn:aws:s3:::failures"}}
    windowed = _mapping({"type": "dynamodb_stream", "tumbling_window": "2m",
                         "stream_arn": "arn:aws:dynamodb:eu-west-1:123456789012:table/t/stream/2024"})
    assert windowed["TumblingWindowInSeconds"] == 120
