"""The REST API (payload v1) and ALB event shapes and their response mappings (router/http/apigw_v1.py,
router/http/alb.py), against what the API Gateway and ELB guides document."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from router.http import alb, apigw_v1
from router.invocation import Outcome, Result


def _request(method: str, path: str, headers: list[tuple[str, str]]) -> Any:
    return make_mocked_request(method, path, headers=CIMultiDict(headers))


def _ok(value: object) -> Result:
    return Result(outcome=Outcome.SUCCESS, payload=json.dumps(value).encode())


# --- REST API (v1) event --------------------------------------------------------------------------------


def test_v1_event_has_single_and_multi_value_headers_and_query() -> None:
    req = _request("POST", "/users/42?tag=a&tag=b%20c&one=1", [
        ("Content-Type", "application/json"), ("X-Dup", "first"), ("X-Dup", "second"),
        ("Cookie", "a=1; b=2"), ("User-Agent", "ua/1")])
    event = apigw_v1.build_event(req, b'{"k":1}', resource="/users/{id}", request_id="rid",
                                 account_id="123456789012", api_id="api", now=1_700_000_000.25,
                                 path_parameters={"id": "42"})
    assert event["resource"] == "/users/{id}"
    assert event["path"] == "/users/42"
    assert event["httpMethod"] == "POST"
    assert event["headers"]["X-Dup"] == "second"  # the last value, the name as sent
    assert event["multiValueHeaders"]["X-Dup"] == ["first", "second"]
    assert event["headers"]["Cookie"] == "a=1; b=2"  # no cookies field in 1.0
    assert event["queryStringParameters"] == {"tag": "b c", "one": "1"}  # decoded, the last value
    assert event["multiValueQueryStringParameters"] == {"tag": ["a", "b c"], "one": ["1"]}
    assert event["pathParameters"] == {"id": "42"}
    assert event["stageVariables"] is None
    assert (event["body"], event["isBase64Encoded"]) == ('{"k":1}', False)
    ctx = event["requestContext"]
    assert ctx["resourcePath"] == "/users/{id}"
    assert ctx["httpMethod"] == "POST"
    assert ctx["requestId"] == "rid"
    assert ctx["accountId"] == "123456789012"
    assert ctx["requestTimeEpoch"] == 1_700_000_000_250
    assert ctx["requestTime"] == "14/Nov/2023:22:13:20 +0000"
    assert ctx["identity"]["userAgent"] == "ua/1"
    assert ctx["identity"]["user"] is None
    assert "version" not in event


def test_v1_event_empty_parts_are_null_and_binary_is_base64() -> None:
    req = _request("GET", "/x", [("Content-Type", "image/png")])
    event = apigw_v1.build_event(req, b"", resource="/x", request_id="r", account_id="1", api_id="a",
                                 path_parameters={})
    for key in ("queryStringParameters", "multiValueQueryStringParameters", "pathParameters", "body"):
        assert event[key] is None, key
    assert event["isBase64Encoded"] is False
    event = apigw_v1.build_event(req, b"\x89PNG\x00", resource="/x", request_id="r", account_id="1",
                                 api_id="a", path_parameters={})
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\x89PNG\x00"


# --- REST API (v1) response -----------------------------------------------------------------------------


def test_v1_response_merges_headers_and_multi_value_headers() -> None:
    response = apigw_v1.map_result(_ok({
        "statusCode": 201, "headers": {"X-A": "1", "X-B": "b"},
        "multiValueHeaders": {"X-A": ["1", "2"], "Set-Cookie": ["a=1", "b=2"]},
        "body": "created", "isBase64Encoded": False}))
    assert response.status == 201
    assert response.headers.getall("X-A") == ["1", "2"]  # the pair given in both appears once
    assert response.headers.getall("Set-Cookie") == ["a=1", "b=2"]
    assert response.headers["X-B"] == "b"
    assert response.body == b"created"
    assert response.headers["Content-Type"] == "application/json"


def test_v1_response_base64_body() -> None:
    response = apigw_v1.map_result(_ok({"statusCode": 200, "body": base64.b64encode(b"\x00\xff").decode(),
                                        "isBase64Encoded": True, "headers": {"Content-Type": "image/png"}}))
    assert (response.status, response.body, response.headers["Content-Type"]) == (200, b"\x00\xff",
                                                                                  "image/png")


@pytest.mark.parametrize(("value", "reason"), [
    ("hello", "a bare string"),  # v2 would answer 200 with it; a REST API does not infer
    ({"message": "no status"}, "statusCode is missing"),
    ([1, 2], "list"),
    ({"statusCode": 200, "body": {"a": 1}}, "body must be a string"),
    ({"statusCode": 200, "headers": ["x"]}, "headers must be an object"),
    ({"statusCode": 200, "multiValueHeaders": {"X": "not a list"}}, "must be a list"),
    ({"statusCode": 99}, "statusCode must be an integer"),
    ({"statusCode": 200, "body": "!!", "isBase64Encoded": True}, "not valid base64"),
    ({"statusCode": 200, "headers": {"X": "a\r\nY: b"}}, "control character"),
])
def test_v1_malformed_response_is_502(value: object, reason: str) -> None:
    reasons: list[str] = []
    response = apigw_v1.map_result(_ok(value), reasons.append)
    assert response.status == 502
    assert json.loads(response.body) == {"message": "Internal server error"}  # type: ignore[arg-type]
    assert len(reasons) == 1
    assert reason in reasons[0]


def test_v1_function_error_timeout_and_throttle() -> None:
    error = Result(outcome=Outcome.SUCCESS, payload=b'{"errorMessage":"x"}', function_error="Unhandled")
    assert apigw_v1.map_result(error).status == 502
    assert apigw_v1.map_result(Result(outcome=Outcome.TIMEOUT, payload=b"")).status == 502
    throttled = apigw_v1.map_result(Result(outcome=Outcome.THROTTLED, payload=b""))
    assert throttled.status == 500  # "If the Lambda API rejects the invocation request ... 500"


def test_v1_string_status_code_is_taken() -> None:
    assert apigw_v1.map_result(_ok({"statusCode": "404", "body": "nope"})).status == 404


# --- ALB event ------------------------------------------------------------------------------------------


def _alb_request() -> Any:
    return _request("GET", "/lambda/x?query=1234ABCD&a=%20x&a=y+z", [
        ("Host", "lb.example"), ("Accept", "text/html"), ("X-Multi", "1"), ("X-Multi", "2"),
        ("X-Forwarded-For", "10.0.0.9")])


def test_alb_event_single_value() -> None:
    event = alb.build_event(_alb_request(), b"", target_group="arn:tg", multi_value=False)
    assert event["requestContext"] == {"elb": {"targetGroupArn": "arn:tg"}}
    assert (event["httpMethod"], event["path"]) == ("GET", "/lambda/x")
    assert event["queryStringParameters"] == {"query": "1234ABCD", "a": "y+z"}  # not decoded, the last
    headers = event["headers"]
    assert all(name == name.lower() for name in headers)
    assert headers["x-multi"] == "2"
    assert headers["host"] == "lb.example"
    assert headers["x-forwarded-for"].startswith("10.0.0.9, ")
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-amzn-trace-id"].startswith("Root=1-")
    assert (event["body"], event["isBase64Encoded"]) == ("", False)
    assert "multiValueHeaders" not in event
    assert "multiValueQueryStringParameters" not in event


def test_alb_event_multi_value() -> None:
    event = alb.build_event(_alb_request(), b"\xff\x00", target_group="arn:tg", multi_value=True)
    assert event["multiValueQueryStringParameters"] == {"query": ["1234ABCD"], "a": ["%20x", "y+z"]}
    assert event["multiValueHeaders"]["x-multi"] == ["1", "2"]
    assert "headers" not in event
    assert "queryStringParameters" not in event
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\x00"


def test_alb_target_group_arn_is_stable() -> None:
    arn = alb.target_group_arn("eu-west-1", "123456789012", "orders")
    assert arn == alb.target_group_arn("eu-west-1", "123456789012", "orders")
    assert arn.startswith("arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/orders/")
    assert len(arn.rsplit("/", 1)[1]) == 16


# --- ALB response ---------------------------------------------------------------------------------------


def test_alb_response_status_description_and_headers_by_mode() -> None:
    value = {"statusCode": 200, "statusDescription": "200 Fine", "headers": {"X-S": "s"},
             "multiValueHeaders": {"X-M": ["1", "2"]}, "body": "<h1>hi</h1>", "isBase64Encoded": False}
    single = alb.map_result(_ok(value), multi_value=False)
    assert (single.status, single.reason, single.body) == (200, "Fine", b"<h1>hi</h1>")
    assert single.headers["X-S"] == "s"
    assert "X-M" not in single.headers  # multiValueHeaders are ignored without multi-value mode
    multi = alb.map_result(_ok(value), multi_value=True)
    assert multi.headers.getall("X-M") == ["1", "2"]
    assert "X-S" not in multi.headers


@pytest.mark.parametrize("value", [
    "bare", None, {"body": "no status"}, {"statusCode": 200, "body": 5},
    {"statusCode": 200, "statusDescription": 7}, {"statusCode": 1000},
])
def test_alb_malformed_response_is_502_bad_gateway_page(value: object) -> None:
    reasons: list[str] = []
    response = alb.map_result(_ok(value), multi_value=False, on_malformed=reasons.append)
    assert response.status == 502
    assert response.content_type == "text/html"
    assert b"502 Bad Gateway" in response.body  # type: ignore[operator]
    assert len(reasons) == 1


def test_alb_function_error_is_502_and_throttle_503() -> None:
    error = Result(outcome=Outcome.SUCCESS, payload=b'{"errorMessage":"x"}', function_error="Unhandled")
    assert alb.map_result(error, multi_value=False).status == 502
    assert alb.map_result(Result(outcome=Outcome.THROTTLED, payload=b""), multi_value=False).status == 503



# --- function URL hosts ---------------------------------------------------------------------------------


def test_function_url_host_names_only_a_function_with_a_url() -> None:
    from router.config.models import RouterConfig
    from router.http.function_url import domain_name, function_of_host, url_id

    config = RouterConfig.model_validate({
        "aws": {"region": "eu-west-1", "account_id": "123456789012"},
        "functions": {"api": {"runtime": "python3.11", "handler": "app.h", "code": ".",
                              "url": {"auth": "NONE"}},
                      "plain": {"runtime": "python3.11", "handler": "app.h", "code": "."}},
        "routes": []})
    host = domain_name(config, "api")
    assert host == f"{url_id(config, 'api')}.lambda-url.eu-west-1.on.aws"
    assert function_of_host(config, host) == "api"
    assert function_of_host(config, host.upper() + ":8080") == "api"
    assert function_of_host(config, domain_name(config, "plain")) is None  # no url
    assert function_of_host(config, host.replace("eu-west-1", "us-east-1")) is None
    assert function_of_host(config, "[::1]:8080") is None
    assert function_of_host(config, "127.0.0.1:8080") is None
