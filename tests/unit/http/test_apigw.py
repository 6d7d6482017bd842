"""API Gateway payload 2.0 helpers without a server: paths, route keys, response mapping edge cases."""

from __future__ import annotations

import json

from aiohttp.test_utils import make_mocked_request

from router.config.checks import aiohttp_path
from router.http import apigw
from router.invocation import Outcome, Result


def test_aiohttp_path_and_route_key() -> None:
    assert aiohttp_path("/users/{id}") == "/users/{id}"
    assert aiohttp_path("/files/{proxy+}") == "/files/{proxy:.+}"
    assert apigw.route_key(["POST", "PUT"], "PUT", "/u/{id}") == "PUT /u/{id}"
    assert apigw.route_key(["ANY"], "GET", "/u") == "ANY /u"


def test_form_bodies_are_base64_like_api_gateway() -> None:
    req = make_mocked_request("POST", "/f", headers={"Content-Type": "application/x-www-form-urlencoded"})
    event = apigw.build_event(req, b"a=1&b=2", route_key="POST /f", request_id="r", account_id="1",
                              api_id="f", now=1_583_348_638.39)
    assert event["isBase64Encoded"] is True
    assert event["requestContext"]["time"] == "04/Mar/2020:19:03:58 +0000"
    assert event["requestContext"]["timeEpoch"] == 1_583_348_638_390


def test_request_time_follows_the_clock_second_by_second() -> None:
    # The text of the last second is kept (every request of a busy second asks for it): a new second,
    # or an earlier one, gets its own.
    first = "04/Mar/2020:19:03:58 +0000"
    assert apigw.clf_time(1_583_348_638.0) == apigw.clf_time(1_583_348_638.999) == first
    assert apigw.clf_time(1_583_348_639.001) == "04/Mar/2020:19:03:59 +0000"
    assert apigw.clf_time(1_583_348_638.5) == "04/Mar/2020:19:03:58 +0000"
    assert apigw.clf_time(0) == "01/Jan/1970:00:00:00 +0000"


def test_text_type_with_bad_utf8_is_base64() -> None:
    req = make_mocked_request("POST", "/f", headers={"Content-Type": "text/plain"})
    event = apigw.build_event(req, b"\xff", route_key="POST /f", request_id="r", account_id="1", api_id="f")
    assert event["isBase64Encoded"] is True
    assert event["body"] == "/w=="


def test_mapping_edge_cases() -> None:
    ok = apigw.map_result(Result(payload=json.dumps({"statusCode": 204, "body": "dropped"}).encode()))
    assert ok.status == 204
    assert ok.body == b""
    obj_body = apigw.map_result(Result(payload=json.dumps({"statusCode": 200, "body": {"a": 1}}).encode()))
    assert json.loads(obj_body.body) == {"a": 1}  # type: ignore[arg-type]
    no_headers = apigw.map_result(Result(payload=b'{"statusCode": 418}'))
    assert no_headers.status == 418
    assert no_headers.headers["Content-Type"] == "application/json"
    hop = apigw.map_result(Result(payload=b'{"statusCode": 200, "headers": {"Content-Length": "99"}}'))
    assert "Content-Length" not in hop.headers or hop.headers["Content-Length"] != "99"
    bad_b64 = apigw.map_result(Result(payload=b'{"statusCode": 200, "body": "***", "isBase64Encoded": true}'))
    assert bad_b64.status == 500
    assert apigw.map_result(Result(payload=b'{"statusCode": true}')).status == 500
    assert apigw.map_result(Result(payload=b'{"statusCode": 700}')).status == 500
    throttled = Result.error("TooManyRequestsException", "Rate Exceeded.", outcome=Outcome.THROTTLED)
    assert apigw.map_result(throttled).status == 429
