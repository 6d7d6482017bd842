"""Property-based tests (hypothesis) of the REST API (payload v1) and ALB event builders and response
mappings (router/http/apigw_v1.py, router/http/alb.py): random requests give a JSON-serialisable event
that keeps the body and every header and query value; random Lambda results never raise and give a
response an HTTP/1.1 client can read, and a well-formed one keeps its status.

Deterministic (``derandomize``) so CI runs the same examples every time.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from router.http import alb, apigw_v1
from router.invocation import Outcome, Result

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

_TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
token = st.text(st.sampled_from(_TCHARS), min_size=1, max_size=16)
header_value = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)
path_segment = st.text(st.characters(whitelist_categories=("L", "N"), whitelist_characters="-._~"),
                       max_size=10)
query_part = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#"),
                     max_size=30)
content_types = st.sampled_from(["", "application/json", "text/plain; charset=utf-8", "image/png",
                                 "application/octet-stream", "application/vnd.api+json"])
hostile_text = st.lists(st.sampled_from(["a", " ", "\r", "\n", "\x00", "\x7f", ":", "é"]),
                        max_size=6).map("".join)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=8)
status_code = st.one_of(st.integers(200, 599), st.integers(-5, 199), st.integers(600, 1000), st.booleans(),
                        st.text(max_size=4), st.none())


def _request(method: str, segments: list[str], query: str, headers: list[tuple[str, str]],
             content_type: str) -> Any:
    h: CIMultiDict[str] = CIMultiDict(headers)
    if content_type:
        h["Content-Type"] = content_type
    return make_mocked_request(method, "/" + "/".join(segments) + (f"?{query}" if query else ""), headers=h)


def _body_of(event: dict[str, Any]) -> bytes:
    body = event["body"] or ""
    return base64.b64decode(body) if event["isBase64Encoded"] else body.encode()


request_args = {
    "method": st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
    "segments": st.lists(path_segment, max_size=4),
    "query": query_part,
    "headers": st.lists(st.tuples(token, header_value).filter(
        lambda h: h[0].lower() not in ("content-type", "host") and not h[0].lower().startswith("x-")),
        max_size=6),
    "content_type": content_types,
    "body": st.one_of(st.binary(max_size=200), st.text(max_size=100).map(str.encode)),
}


@FUZZ
@given(**request_args)
def test_fuzz_v1_event(method: str, segments: list[str], query: str, headers: list[tuple[str, str]],
                       content_type: str, body: bytes) -> None:
    request = _request(method, segments, query, headers, content_type)
    event = apigw_v1.build_event(request, body, resource="/{proxy+}", request_id="rid", account_id="1",
                                 api_id="api", now=1_700_000_000.0, path_parameters={})
    assert json.loads(json.dumps(event)) == event
    assert _body_of(event) == body
    multi = event["multiValueHeaders"] or {}
    for name, value in request.headers.items():
        assert value in multi[name]
    for name, values in multi.items():
        assert event["headers"][name] == values[-1]
    for name, values in (event["multiValueQueryStringParameters"] or {}).items():
        assert event["queryStringParameters"][name] == values[-1]


@FUZZ
@given(multi_value=st.booleans(), **request_args)
def test_fuzz_alb_event(multi_value: bool, method: str, segments: list[str], query: str,
                        headers: list[tuple[str, str]], content_type: str, body: bytes) -> None:
    request = _request(method, segments, query, headers, content_type)
    event = alb.build_event(request, body, target_group="arn:tg", multi_value=multi_value)
    assert json.loads(json.dumps(event)) == event
    assert _body_of(event) == body
    field = "multiValueHeaders" if multi_value else "headers"
    assert all(name == name.lower() for name in event[field])
    qfield = "multiValueQueryStringParameters" if multi_value else "queryStringParameters"
    raw = [p.partition("=") for p in request.rel_url.raw_query_string.split("&") if p]  # as sent
    if multi_value:
        for name, value in request.headers.items():
            assert value in event[field][name.lower()]
        for name, _, value in raw:
            assert value in event[qfield][name]
    else:
        assert event[qfield] == {n: v for n, _, v in raw}  # the last value, not decoded


def _check_wire(response: web.Response) -> None:
    assert 200 <= response.status <= 599
    for name, value in response.headers.items():
        assert TOKEN.match(name), name
        assert not BAD_VALUE.search(value), value
    if response.reason is not None:
        assert not BAD_VALUE.search(response.reason)


_ABSENT = object()


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(_ABSENT), strategy)


response_args = {
    "status": status_code,
    "description": _maybe(st.one_of(st.text(max_size=12), hostile_text, json_scalar)),
    "headers": _maybe(st.one_of(
        st.dictionaries(st.one_of(token, hostile_text), st.one_of(header_value, hostile_text, json_scalar),
                        max_size=3),
        json_scalar)),
    "multi": _maybe(st.one_of(
        st.dictionaries(token, st.one_of(st.lists(st.one_of(header_value, hostile_text), max_size=3),
                                         json_scalar), max_size=3),
        json_scalar)),
    "body": _maybe(st.one_of(json_value,
                             st.binary(max_size=20).map(lambda b: base64.b64encode(b).decode()))),
    "b64": _maybe(st.one_of(st.booleans(), json_scalar)),
    "outcome": st.sampled_from(list(Outcome)),
    "function_error": st.sampled_from([None, None, "Unhandled"]),
}


def _value(status: Any, description: Any, headers: Any, multi: Any, body: Any, b64: Any) -> dict[str, Any]:
    value: dict[str, Any] = {"statusCode": status}
    for key, v in (("statusDescription", description), ("headers", headers), ("multiValueHeaders", multi),
                   ("body", body), ("isBase64Encoded", b64)):
        if v is not _ABSENT:
            value[key] = v
    return value


@FUZZ
@given(multi_value=st.booleans(), **response_args)
def test_fuzz_v1_and_alb_responses(multi_value: bool, status: Any, description: Any, headers: Any,
                                   multi: Any, body: Any, b64: Any, outcome: Outcome,
                                   function_error: str | None) -> None:
    value = _value(status, description, headers, multi, body, b64)
    result = Result(payload=json.dumps(value).encode(), outcome=outcome, function_error=function_error)
    for response in (apigw_v1.map_result(result), alb.map_result(result, multi_value=multi_value)):
        _check_wire(response)
        if outcome is Outcome.SUCCESS and function_error is None and response.status < 500:
            assert response.status == int(status)


@FUZZ
@given(payload=st.one_of(json_value.map(json.dumps), st.binary(max_size=40)))
def test_fuzz_any_payload(payload: str | bytes) -> None:
    data = payload.encode() if isinstance(payload, str) else payload
    _check_wire(apigw_v1.map_result(Result(payload=data)))
    _check_wire(alb.map_result(Result(payload=data), multi_value=False))
