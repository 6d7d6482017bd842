"""Property-based tests (hypothesis) of the webhook event builder and the response mapping
(router/http/apigw.py): random requests give a JSON-serialisable payload 2.0 event that keeps the body;
random Lambda results never raise and give a response an HTTP/1.1 client can read.

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

from router.http import apigw
from router.invocation import Outcome, Result

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 field-name / method
# RFC 9110 field-value: visible characters, obs-text, and space / tab inside; never CR, LF, NUL or controls.
BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# --- the event builder --------------------------------------------------------------------------------

token = st.text(
    st.sampled_from("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    min_size=1,
    max_size=20,
)
header_value = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40
).map(str.strip)
path_segment = st.text(
    st.characters(whitelist_categories=("L", "N"), whitelist_characters="-._~!$&'()*+,;=:@"), max_size=12
)
query_part = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#"), max_size=30
)
content_types = st.sampled_from(
    [
        "",
        "application/json",
        "text/plain; charset=utf-8",
        "application/xml",
        "application/octet-stream",
        "application/x-www-form-urlencoded",
        "image/png",
        "application/vnd.api+json",
        "TEXT/HTML",
    ]
)


@FUZZ
@given(
    method=st.one_of(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]), token),
    segments=st.lists(path_segment, max_size=5),
    query=query_part,
    headers=st.lists(
        st.tuples(token, header_value).filter(
            lambda h: h[0].lower() not in ("cookie", "content-type", "host")
        ),
        max_size=8,
    ),
    cookies=st.lists(
        st.text(
            st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=";"),
            min_size=1,
            max_size=12,
        ),
        max_size=3,
    ),
    content_type=content_types,
    body=st.one_of(st.binary(max_size=300), st.text(max_size=200).map(str.encode)),
)
def test_fuzz_build_event_is_valid_json_and_keeps_the_body(
    method: str,
    segments: list[str],
    query: str,
    headers: list[tuple[str, str]],
    cookies: list[str],
    content_type: str,
    body: bytes,
) -> None:
    path = "/" + "/".join(segments) + (f"?{query}" if query else "")
    h: CIMultiDict[str] = CIMultiDict(headers)
    if content_type:
        h["Content-Type"] = content_type
    if cookies:
        h["Cookie"] = "; ".join(cookies)
    request = make_mocked_request(method, path, headers=h)
    event = apigw.build_event(
        request,
        body,
        route_key=f"{method} /x",
        request_id="rid",
        account_id="1",
        api_id="api",
        now=1_700_000_000.5,
    )
    text = json.dumps(event)  # no bytes, sets or other non-JSON values anywhere
    assert json.loads(text) == event
    assert event["version"] == "2.0"
    assert event["requestContext"]["http"]["method"] == request.method
    assert event["rawPath"] == request.rel_url.raw_path
    assert all(k == k.lower() for k in event["headers"])
    assert "cookie" not in event["headers"]
    if cookies:
        assert event["cookies"] == [c.strip() for c in "; ".join(cookies).split(";") if c.strip()]
    if body:
        got = base64.b64decode(event["body"]) if event["isBase64Encoded"] else event["body"].encode()
        assert got == body
    else:
        assert "body" not in event
        assert event["isBase64Encoded"] is False


# --- the response mapping -------------------------------------------------------------------------------

json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)

# What a well-behaved function puts in headers: token names, values without control characters; and values
# of the wrong type (scalars, lists) where a mapping or a list belongs. Hostile names and values are the
# hostile-headers test's below.
benign_header_value = st.one_of(header_value, st.integers(), st.booleans())
safe_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), header_value
)
not_a_mapping = st.one_of(safe_scalar, st.lists(safe_scalar, max_size=3))
status_code = st.one_of(
    st.integers(200, 599),
    st.integers(-1000, 99),
    st.integers(600, 2000),
    st.booleans(),
    st.text(max_size=4),
    st.none(),
    st.floats(allow_nan=False),
)


def _response(status: Any, headers: Any, multi: Any, cookies: Any, body: Any, b64: Any) -> dict[str, Any]:
    value: dict[str, Any] = {"statusCode": status}
    for key, v in (
        ("headers", headers),
        ("multiValueHeaders", multi),
        ("cookies", cookies),
        ("body", body),
        ("isBase64Encoded", b64),
    ):
        if v is not _ABSENT:
            value[key] = v
    return value


_ABSENT = object()


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(_ABSENT), strategy)


def _check_wire(response: web.Response) -> None:
    """What aiohttp will write: a valid status line and header fields a client can parse."""
    assert isinstance(response, web.Response)
    # A 1xx is never a final response: a client reads it as interim and waits (curl times out).
    assert 200 <= response.status <= 599, f"status {response.status}"
    for name, value in response.headers.items():
        assert TOKEN.match(name), f"header name {name!r} is not a token"
        assert not BAD_VALUE.search(value), f"header {name}: value {value!r} has control characters"
        value.encode("utf-8")
    if response.status in (204, 304):
        assert not response.body


@FUZZ
@given(payload=st.one_of(json_value.map(json.dumps), st.binary(max_size=60)))
def test_fuzz_map_result_of_any_payload(payload: str | bytes) -> None:
    data = payload.encode() if isinstance(payload, str) else payload
    _check_wire(apigw.map_result(Result(payload=data)))


@FUZZ
@given(
    status=status_code,
    headers=_maybe(st.one_of(st.dictionaries(token, benign_header_value, max_size=5), not_a_mapping)),
    multi=_maybe(
        st.one_of(
            st.dictionaries(
                token, st.one_of(st.lists(benign_header_value, max_size=3), benign_header_value), max_size=3
            ),
            not_a_mapping,
        )
    ),
    cookies=_maybe(
        st.one_of(
            st.lists(st.one_of(header_value, st.integers()), max_size=3),
            safe_scalar,
            st.dictionaries(token, header_value, max_size=2),
        )
    ),
    body=_maybe(json_value),
    b64=_maybe(st.one_of(st.booleans(), json_scalar)),
    outcome=st.sampled_from(list(Outcome)),
    function_error=st.sampled_from([None, None, "Unhandled"]),
)
def test_fuzz_map_result_structured_responses(
    status: Any,
    headers: Any,
    multi: Any,
    cookies: Any,
    body: Any,
    b64: Any,
    outcome: Outcome,
    function_error: str | None,
) -> None:
    value = _response(status, headers, multi, cookies, body, b64)
    result = Result(payload=json.dumps(value).encode(), outcome=outcome, function_error=function_error)
    response = apigw.map_result(result)
    _check_wire(response)
    if outcome is Outcome.SUCCESS and function_error is None and response.status < 500:
        assert response.status == status


hostile_text = st.lists(
    st.sampled_from(["a", " ", "\r", "\n", "\r\n", "\x00", "\x7f", ":", "é", "\u2028"]), max_size=8
).map("".join)


@FUZZ
@given(
    headers=st.dictionaries(
        st.one_of(token, hostile_text), st.one_of(header_value, hostile_text), max_size=3
    ),
    cookies=st.lists(st.one_of(st.just("a=b"), hostile_text), max_size=2),
)
def test_fuzz_map_result_hostile_headers_give_an_error_not_a_broken_reply(
    headers: dict[str, str],
    cookies: list[str],
) -> None:
    value = {"statusCode": 200, "headers": headers, "cookies": cookies, "body": "ok"}
    _check_wire(apigw.map_result(Result(payload=json.dumps(value).encode())))


@FUZZ
@given(status=st.integers(100, 199))
def test_fuzz_map_result_informational_status_is_not_a_final_reply(status: int) -> None:
    _check_wire(apigw.map_result(Result(payload=json.dumps({"statusCode": status, "body": "x"}).encode())))
