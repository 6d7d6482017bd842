"""Malformed function responses map to API Gateway's 500, never to a reply aiohttp cannot write.

The HTTP API answers ``500 {"message":"Internal Server Error"}`` when a Lambda integration's response
is malformed; the mapping does the same and says why (without the header's value).
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from router.http import apigw
from router.invocation import Result


def mapped(value: Any) -> tuple[int, Any, list[str]]:
    reasons: list[str] = []
    response = apigw.map_result(Result(payload=json.dumps(value).encode()), reasons.append)
    return response.status, response, reasons


@pytest.mark.parametrize(("value", "why"), [
    ({"statusCode": 200, "headers": {"X-A": "a\r\nX-Injected: 1"}}, "headers['X-A']: the value has a CR"),
    ({"statusCode": 200, "headers": {"X-A": "a\nb"}}, "CR, LF"),
    ({"statusCode": 200, "headers": {"X-A": "a\x00b"}}, "control character"),
    ({"statusCode": 200, "headers": {"": "v"}}, "header name '' is not a valid HTTP header name"),
    ({"statusCode": 200, "headers": {"Bad Name": "v"}}, "not a valid HTTP header name"),
    ({"statusCode": 200, "headers": {"X-A:": "v"}}, "not a valid HTTP header name"),
    ({"statusCode": 200, "headers": {"X-\r\nB": "v"}}, "not a valid HTTP header name"),
    ({"statusCode": 200, "headers": {"X-É": "v"}}, "not a valid HTTP header name"),
    ({"statusCode": 200, "headers": {"X-A": {"nested": 1}}}, "must be a string, number or boolean"),
    ({"statusCode": 200, "headers": {"X-A": None}}, "must be a string, number or boolean"),
    ({"statusCode": 200, "headers": ["X-A", "v"]}, "headers must be an object"),
    ({"statusCode": 200, "multiValueHeaders": {"X-M": ["ok", "b\r\nad"]}}, "multiValueHeaders['X-M']"),
    ({"statusCode": 200, "multiValueHeaders": {"": ["v"]}}, "not a valid HTTP header name"),
    ({"statusCode": 200, "multiValueHeaders": "X-M"}, "multiValueHeaders must be an object"),
    ({"statusCode": 200, "cookies": ["a=1\r\nSet-Cookie: evil=1"]}, "cookies[0]: the cookie has a CR"),
    ({"statusCode": 200, "cookies": ["ok=1", 5]}, "cookies[1] must be a string"),
    ({"statusCode": 200, "cookies": "a=1"}, "cookies must be a list"),
    ({"statusCode": 101}, "statusCode must be an integer from 200 to 599, got 101"),
    ({"statusCode": 100, "body": "x"}, "from 200 to 599"),
    ({"statusCode": "200"}, "got str"),
    ({"statusCode": 200, "body": "***", "isBase64Encoded": True}, "not valid base64"),
])
def test_malformed_structured_responses_are_500_with_a_reason(value: Any, why: str) -> None:
    status, response, reasons = mapped(value)
    assert status == 500
    assert json.loads(response.body) == {"message": "Internal Server Error"}
    assert len(reasons) == 1
    assert why in reasons[0]
    # The reason never carries what the function put in a header value or cookie.
    for secret_ish in ("Injected", "evil", "b\r\nad", "a\nb", "a\x00b"):
        assert secret_ish not in reasons[0]


def test_payload_nested_past_the_parser_is_500_not_a_crash() -> None:
    reasons: list[str] = []
    response = apigw.map_result(Result(payload=b"[" * 100_000), reasons.append)
    assert response.status == 500
    assert reasons == ["the response is not valid JSON"]


def test_well_formed_responses_keep_their_headers() -> None:
    status, response, reasons = mapped({
        "statusCode": 200, "headers": {"X-Num": 3, "X-Flag": True, "X-Tab": "a\tb", "X-Utf8": "café"},
        "multiValueHeaders": {"X-M": ["1", 2]}, "cookies": ["a=1; Path=/; HttpOnly"]})
    assert (status, reasons) == (200, [])
    assert response.headers["X-Num"] == "3"
    assert response.headers["X-Flag"] == "true"
    assert response.headers["X-Tab"] == "a\tb"
    assert response.headers["X-Utf8"] == "café"
    assert response.headers.getall("X-M") == ["1", "2"]
    assert response.headers.getall("Set-Cookie") == ["a=1; Path=/; HttpOnly"]


# A property check with a seeded generator, bounded to a few thousand cases: whatever a function
# returns, the mapping gives either a 500 with one reason, or a response whose every header is a token
# name and a value without CR, LF or NUL (what aiohttp checks before it writes).
_ALPHABET = "aZ09-_ :;\r\n\t\x00\x7fé\u2028\"'{}" + "".join(chr(c) for c in range(0x20))


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 6)))


def _scalar(rng: random.Random) -> Any:
    return rng.choice([_text(rng), rng.randint(-5, 700), True, None, 1.5, [_text(rng)], {"k": 1}])


def _response(rng: random.Random) -> dict[str, Any]:
    value: dict[str, Any] = {"statusCode": rng.choice([200, 201, 204, 302, 404, 500, 99, 100, 600, "200"])}
    if rng.random() < 0.7:
        value["headers"] = {_text(rng): _scalar(rng) for _ in range(rng.randint(0, 3))}
    if rng.random() < 0.3:
        value["multiValueHeaders"] = {_text(rng): [_scalar(rng) for _ in range(2)] for _ in range(2)}
    if rng.random() < 0.4:
        value["cookies"] = [rng.choice([_text(rng), 7]) for _ in range(rng.randint(0, 2))]
    if rng.random() < 0.5:
        value["body"] = rng.choice([_text(rng), {"a": 1}, "aGk=", "***"])
        value["isBase64Encoded"] = rng.random() < 0.3
    return value


def test_any_response_maps_to_a_writable_reply_or_a_500() -> None:
    rng = random.Random(9)
    fives = 0
    for _ in range(3000):
        value = _response(rng)
        status, response, reasons = mapped(value)
        if reasons:
            assert status == 500, value
            assert len(reasons) == 1, value
            fives += 1
            continue
        assert 200 <= status <= 599, value
        for name, text in response.headers.items():
            assert name
            assert all(c.isascii() and c.isprintable() and c not in ' :"(),/;<=>?@[\\]{}' for c in name)
            assert not any(c in text for c in "\r\n\x00"), (value, name)
    assert 0 < fives < 3000  # both kinds were generated
