"""The Invoke API refuses before it reveals: credentials first, then the request's own checks.

A forged SigV4 signature gets 403, never 404 for an unknown function or 204 for DryRun (a
function-existence oracle); a request signed with ``UNSIGNED-PAYLOAD`` cannot be replayed with another
body; a bad ``X-Amz-Client-Context`` is refused, not taken silently.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from router.http.invoke_api import CLIENT_CONTEXT_INVALID, CLIENT_CONTEXT_LIMIT, client_context_problem

from .conftest import make_config

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
KEYS = {"AKIDROUTER": SECRET}


def signed(url: str, body: bytes, *, key: str = "AKIDROUTER", secret: str = SECRET,
           headers: dict[str, str] | None = None, auth: type[SigV4Auth] = SigV4Auth) -> dict[str, str]:
    """The headers botocore's SigV4 signer gives a POST of ``body`` to ``url``."""
    req = AWSRequest(method="POST", url=url, data=body, headers=headers or {})
    auth(Credentials(key, secret), "lambda", "us-east-1").add_auth(req)
    return dict(req.headers.items())


def invocations(server: Any, name: str) -> str:
    return f"{server.url}/2015-03-31/functions/{name}/invocations"


async def post(server: Any, url: str, body: bytes,
               headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
    async with server.session.post(url, data=body, headers=headers) as r:
        return r.status, dict(r.headers), await r.json(content_type=None) if await r.read() else None


@pytest.mark.parametrize(("key", "secret", "code"), [
    ("AKIDROUTER", SECRET[:-1] + "X", "InvalidSignatureException"),   # the right key, a forged signature
    ("AKIDSTRANGER", SECRET, "UnrecognizedClientException"),          # a key the router does not know
])
async def test_forged_signature_gets_403_whether_or_not_the_function_exists(
        serve: Any, key: str, secret: str, code: str) -> None:
    server = await serve(make_config(server={"invoke_keys": KEYS}))
    answers = []
    for name, kind in (("nope", "RequestResponse"), ("echo", "RequestResponse"), ("nope", "DryRun"),
                       ("echo", "DryRun"), ("echo:prod", "RequestResponse"), ("bad%20name", "Event")):
        url = invocations(server, name)
        headers = signed(url, b"{}", key=key, secret=secret, headers={"X-Amz-Invocation-Type": kind})
        status, got, body = await post(server, url, b"{}", headers)
        answers.append((status, got.get("x-amzn-ErrorType")))
        assert "nope" not in json.dumps(body)
        assert "echo" not in json.dumps(body)
    assert answers == [(403, code)] * 6
    assert server.dispatcher.invoked == []
    assert server.dispatcher.submitted == []


async def test_genuine_signature_still_gets_404_and_dry_run(serve: Any) -> None:
    server = await serve(make_config(server={"invoke_keys": KEYS}))
    url = invocations(server, "nope")
    status, headers, body = await post(server, url, b"{}", signed(url, b"{}"))
    assert (status, headers["x-amzn-ErrorType"]) == (404, "ResourceNotFoundException")
    assert body["Message"].endswith(":function:nope")
    url = invocations(server, "echo")
    dry = signed(url, b"", headers={"X-Amz-Invocation-Type": "DryRun"})
    async with server.session.post(url, data=b"", headers=dry) as r:
        assert r.status == 204


async def test_token_config_refuses_a_wrong_token_before_the_lookup(serve: Any) -> None:
    server = await serve(make_config(server={"invoke_token": "s3cret-token"}))
    for name, kind in (("nope", "RequestResponse"), ("echo", "DryRun")):
        status, headers, _ = await post(server, invocations(server, name), b"{}",
                                        {"X-Api-Key": "guess", "X-Amz-Invocation-Type": kind})
        assert (status, headers["x-amzn-ErrorType"]) == (403, "AccessDeniedException")


class UnsignedPayloadAuth(SigV4Auth):
    """A signer that leaves the body out of the signature, as S3 clients may over HTTPS."""

    def payload(self, request: Any) -> str:
        return "UNSIGNED-PAYLOAD"

    def _modify_request_before_signing(self, request: Any) -> None:
        super()._modify_request_before_signing(request)
        request.headers["X-Amz-Content-Sha256"] = "UNSIGNED-PAYLOAD"


async def test_unsigned_payload_is_refused_so_a_request_cannot_be_replayed_with_another_body(
        serve: Any) -> None:
    server = await serve(make_config(server={"invoke_keys": KEYS}))
    url = invocations(server, "echo")
    headers = signed(url, b'{"amount": 1}', auth=UnsignedPayloadAuth)
    assert headers["X-Amz-Content-Sha256"] == "UNSIGNED-PAYLOAD"
    for body in (b'{"amount": 1}', b'{"amount": 1000}'):
        status, got, answer = await post(server, url, body, headers)
        assert (status, got["x-amzn-ErrorType"]) == (403, "InvalidSignatureException")
        assert "UNSIGNED-PAYLOAD" in answer["message"]
    assert server.dispatcher.invoked == []


async def test_a_claimed_payload_hash_must_be_the_bodys(serve: Any) -> None:
    import hashlib

    server = await serve(make_config(server={"invoke_keys": KEYS}))
    url = invocations(server, "echo")
    body = b'{"amount": 1}'
    good = signed(url, body, headers={"X-Amz-Content-Sha256": hashlib.sha256(body).hexdigest()})
    status, _, answer = await post(server, url, body, good)
    assert (status, answer) == (200, {"amount": 1})
    status, got, _ = await post(server, url, b'{"amount": 9}', good)  # the same signature, another body
    assert (status, got["x-amzn-ErrorType"]) == (403, "InvalidSignatureException")
    assert [inv.payload for inv in server.dispatcher.invoked] == [body]


def _b64(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(("context", "why"), [
    ("not base64!", "valid Base64-encoded JSON object"),
    (_b64(b"not json"), "valid Base64-encoded JSON object"),
    (_b64([1, 2]), "valid Base64-encoded JSON object"),
    (_b64(b"\xff\xfe"), "valid Base64-encoded JSON object"),
    (_b64(b"[" * 2500), "valid Base64-encoded JSON object"),  # nested past the parser's depth
    (_b64({"custom": {"k": "v" * 2700}}), "at most 3583 bytes"),
])
async def test_bad_client_context_is_invalid_request_content(serve: Any, context: str, why: str) -> None:
    server = await serve()
    for kind in ("RequestResponse", "Event", "DryRun"):
        status, headers, body = await post(server, invocations(server, "echo"), b"{}", {
            "X-Amz-Client-Context": context, "X-Amz-Invocation-Type": kind})
        assert (status, headers["x-amzn-ErrorType"]) == (400, "InvalidRequestContentException")
        assert why in body["message"]
    assert server.dispatcher.invoked == []
    assert server.dispatcher.submitted == []


def test_client_context_limit_is_on_the_base64_text() -> None:
    def sized(n: int) -> str:  # a JSON object whose base64 is n characters (n a multiple of 4)
        pad = n // 4 * 3 - len(json.dumps({"p": ""}))
        text = _b64({"p": "x" * pad})
        assert len(text) == n
        return text

    assert client_context_problem(sized(3580)) is None
    assert CLIENT_CONTEXT_LIMIT == 3583
    assert "at most 3583 bytes" in (client_context_problem(sized(3584)) or "")
    assert client_context_problem(_b64({"custom": {"a": "b"}, "env": {}})) is None
    assert client_context_problem(_b64("text")) is not None
    assert client_context_problem("") is not None  # not a JSON object (the handler takes "" as absent)


async def test_a_client_context_with_bytes_above_0x7f_is_invalid_content_not_a_500(serve: Any) -> None:
    server = await serve()
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /2015-03-31/functions/echo/invocations HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 b"X-Amz-Client-Context: \x80\r\nContent-Length: 2\r\n\r\n{}")
    async with asyncio.timeout(10):
        head, _, body = (await reader.read()).partition(b"\r\n\r\n")
    writer.close()
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"x-amzn-ErrorType: InvalidRequestContentException" in head.split(b"\r\n")
    assert json.loads(body)["message"] == CLIENT_CONTEXT_INVALID
    assert client_context_problem("\udc80") == CLIENT_CONTEXT_INVALID  # as aiohttp decodes the byte 0x80
    assert server.dispatcher.invoked == []


async def test_valid_client_context_reaches_the_function(serve: Any) -> None:
    server = await serve()
    context = _b64({"custom": {"k": "v"}})
    status, _, _ = await post(server, invocations(server, "echo"), b"{}", {"X-Amz-Client-Context": context})
    assert status == 200
    assert server.dispatcher.invoked[0].client_context == context


def test_client_context_check_never_raises_and_passes_only_json_objects() -> None:
    import random

    rng = random.Random(11)
    pieces = ["e30=", "W10=", "eyJhIjoxfQ==", "=", "A", "+/", "\x00", "é", " ", "{}", "bnVsbA==", "WwoK"]
    passed = 0
    for _ in range(3000):
        value = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        if rng.random() < 0.01:
            value = _b64({"k": "v" * rng.randint(2600, 2700)})
        problem = client_context_problem(value)
        if problem is None:
            passed += 1
            assert isinstance(json.loads(base64.b64decode(value, validate=True)), dict)
    assert passed > 0


async def test_payload_nested_past_the_parser_is_invalid_content_not_500(serve: Any) -> None:
    server = await serve()
    status, headers, body = await post(server, invocations(server, "echo"), b"[" * 100_000, {})
    assert (status, headers["x-amzn-ErrorType"]) == (400, "InvalidRequestContentException")
    assert "nested too deeply" in body["message"]
    assert server.dispatcher.invoked == []
