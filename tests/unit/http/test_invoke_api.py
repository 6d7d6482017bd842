"""The Lambda Invoke API against a real boto3 ``lambda`` client over a real socket."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.client
import botocore.exceptions
import pytest
from botocore.config import Config

from router.errors import QualifierNotFound
from router.http.invoke_api import parse_function_name
from router.invocation import Invocation, Outcome, Result

from .conftest import make_config


class Lambda:
    """A boto3 lambda client for a test server; every call runs in a thread (boto3 is sync)."""

    def __init__(self, url: str, token: str | None = None,
                 keys: tuple[str, str] = ("testing", "testing")) -> None:
        self.client: botocore.client.BaseClient = boto3.client(
            "lambda", endpoint_url=url, region_name="us-east-1",
            aws_access_key_id=keys[0], aws_secret_access_key=keys[1],
            config=Config(retries={"max_attempts": 1, "mode": "standard"}),
        )
        if token is not None:
            def add_key(request: Any, **_: Any) -> None:
                request.headers["X-Api-Key"] = token
            self.client.meta.events.register("before-sign.lambda.Invoke", add_key)

    async def invoke(self, **kw: Any) -> dict[str, Any]:
        resp: dict[str, Any] = await asyncio.to_thread(self.client.invoke, **kw)
        if "Payload" in resp:
            resp["Body"] = await asyncio.to_thread(resp["Payload"].read)
            resp["Payload"].close()
        return resp

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def clients() -> Iterator[list[Lambda]]:
    made: list[Lambda] = []
    yield made
    for c in made:
        c.close()


async def lam(serve: Any, clients: list[Lambda], config: Any = None, token: str | None = None) -> Any:
    server = await serve(config)
    client = Lambda(server.url, token)
    clients.append(client)
    return server, client


def test_parse_function_name_forms() -> None:
    assert parse_function_name("echo").name == "echo"  # type: ignore[union-attr]
    ref = parse_function_name("123456789012:function:echo:$LATEST")
    assert ref is not None
    assert (ref.name, ref.account, ref.qualifier) == ("echo", "123456789012", "$LATEST")
    ref = parse_function_name("arn:aws:lambda:eu-west-1:123456789012:function:echo:prod")
    assert ref is not None
    assert (ref.region, ref.qualifier) == ("eu-west-1", "prod")
    assert parse_function_name("not a name") is None
    assert parse_function_name("arn:aws:s3:::bucket") is None


async def test_request_response_returns_the_result(serve: Any, clients: list[Lambda]) -> None:
    server, client = await lam(serve, clients)
    resp = await client.invoke(FunctionName="echo", Payload=b'{"a": 1}')
    assert resp["StatusCode"] == 200
    assert json.loads(resp["Body"]) == {"a": 1}
    assert resp["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in resp
    (inv,) = server.dispatcher.invoked
    assert (inv.function, inv.source, inv.invocation_type) == ("echo", "invoke_api", "sync")
    assert resp["ResponseMetadata"]["RequestId"] == inv.request_id


@pytest.mark.parametrize(
    "name",
    ["arn:aws:lambda:us-east-1:000000000000:function:echo", "000000000000:function:echo", "echo:$LATEST"],
)
async def test_arns_and_latest_qualifier_are_accepted(serve: Any, clients: list[Lambda], name: str) -> None:
    _, client = await lam(serve, clients)
    resp = await client.invoke(FunctionName=name, Payload=b"[1]", Qualifier="$LATEST")
    assert resp["StatusCode"] == 200
    assert resp["Body"] == b"[1]"


async def test_a_qualifier_the_function_lacks_is_not_found(serve: Any, clients: list[Lambda]) -> None:
    """The qualifier reaches the dispatcher, which resolves it; its QualifierNotFound names the qualified
    ARN, as Lambda's answer does."""
    server, client = await lam(serve, clients)
    server.dispatcher.invoke_error = QualifierNotFound("echo", "prod")
    arn = "arn:aws:lambda:us-east-1:000000000000:function:echo:prod"
    missing = client.client.exceptions.ResourceNotFoundException
    with pytest.raises(missing, match=f"Function not found: {arn}$"):
        await client.invoke(FunctionName="echo", Qualifier="prod")
    server.dispatcher.invoke_error = None
    await client.invoke(FunctionName="echo:7")
    assert server.dispatcher.invoked[-1].qualifier == "7"
    await client.invoke(FunctionName="echo", Qualifier="$LATEST")
    assert server.dispatcher.invoked[-1].qualifier is None


async def test_empty_payload_reaches_the_function_as_empty_object(serve: Any, clients: list[Lambda]) -> None:
    server, client = await lam(serve, clients)
    resp = await client.invoke(FunctionName="echo")
    assert resp["Body"] == b"{}"
    assert server.dispatcher.invoked[0].payload == b"{}"


async def test_client_context_is_passed(serve: Any, clients: list[Lambda]) -> None:
    server, client = await lam(serve, clients)
    cc = base64.b64encode(b'{"custom": {"k": "v"}}').decode()
    await client.invoke(FunctionName="echo", ClientContext=cc)
    assert server.dispatcher.invoked[0].client_context == cc


async def test_event_is_accepted_after_submit(serve: Any, clients: list[Lambda]) -> None:
    server, client = await lam(serve, clients)
    resp = await client.invoke(FunctionName="echo", InvocationType="Event", Payload=b'{"x": 1}')
    assert resp["StatusCode"] == 202
    assert resp["Body"] == b""
    (inv,) = server.dispatcher.submitted
    assert inv.invocation_type == "async"
    assert inv.payload == b'{"x": 1}'
    assert resp["ResponseMetadata"]["RequestId"] == inv.request_id
    assert server.dispatcher.invoked == []


async def test_dry_run(serve: Any, clients: list[Lambda]) -> None:
    server, client = await lam(serve, clients)
    resp = await client.invoke(FunctionName="echo", InvocationType="DryRun")
    assert resp["StatusCode"] == 204
    assert server.dispatcher.invoked == []
    assert server.dispatcher.submitted == []
    with pytest.raises(client.client.exceptions.ResourceNotFoundException):
        await client.invoke(FunctionName="nope", InvocationType="DryRun")


async def test_log_tail_is_the_last_4kb_base64(serve: Any, clients: list[Lambda]) -> None:
    server, client = await lam(serve, clients)
    logs = "".join(f"line {i}\n" for i in range(1000))
    server.dispatcher.scripts["echo"] = lambda inv: Result(payload=b"null", log_text=logs)
    resp = await client.invoke(FunctionName="echo", LogType="Tail")
    assert base64.b64decode(resp["LogResult"]) == logs.encode()[-4096:]
    assert server.dispatcher.invoked[0].log_tail is True
    resp = await client.invoke(FunctionName="echo")
    assert "LogResult" not in resp


async def test_unknown_function(serve: Any, clients: list[Lambda]) -> None:
    _, client = await lam(serve, clients)
    with pytest.raises(
        client.client.exceptions.ResourceNotFoundException,
        match=r"Function not found: arn:aws:lambda:us-east-1:000000000000:function:nope",
    ) as info:
        await client.invoke(FunctionName="nope")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert info.value.response["Type"] == "User"


async def test_wrong_account_in_arn_is_not_found(serve: Any, clients: list[Lambda]) -> None:
    _, client = await lam(serve, clients)
    with pytest.raises(client.client.exceptions.ResourceNotFoundException):
        await client.invoke(FunctionName="arn:aws:lambda:us-east-1:111111111111:function:echo")


async def test_function_error_is_unhandled(serve: Any, clients: list[Lambda]) -> None:
    server, client = await lam(serve, clients)
    server.dispatcher.scripts["fails"] = lambda inv: Result.error("ValueError", "boom", stack=[])
    resp = await client.invoke(FunctionName="fails")
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    assert json.loads(resp["Body"]) == {"errorMessage": "boom", "errorType": "ValueError", "stackTrace": []}


async def test_throttled(serve: Any, clients: list[Lambda]) -> None:
    server, client = await lam(serve, clients)
    server.dispatcher.throttled.add("busy")
    with pytest.raises(client.client.exceptions.TooManyRequestsException, match="Rate Exceeded") as info:
        await client.invoke(FunctionName="busy")
    assert info.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429


async def test_throttled_by_the_account_limit(serve: Any, clients: list[Lambda]) -> None:
    server, client = await lam(serve, clients)
    server.dispatcher.account_throttled.add("busy")
    with pytest.raises(client.client.exceptions.TooManyRequestsException, match="Rate Exceeded") as info:
        await client.invoke(FunctionName="busy")
    assert info.value.response["Reason"] == "ConcurrentInvocationLimitExceeded"


async def test_throttled_result_is_429(serve: Any, clients: list[Lambda]) -> None:
    server, client = await lam(serve, clients)
    server.dispatcher.scripts["busy"] = lambda inv: Result.error(
        "TooManyRequestsException", "Rate Exceeded.", outcome=Outcome.THROTTLED)
    with pytest.raises(client.client.exceptions.TooManyRequestsException) as info:
        await client.invoke(FunctionName="busy")
    assert info.value.response["Reason"] == "ConcurrentInvocationLimitExceeded"


async def test_invoke_async_is_an_event(serve: Any, clients: list[Lambda]) -> None:
    """InvokeAsync (deprecated, still in boto3 and the CLI): the payload persisted as an Event invocation,
    answered 202; an unknown function and a payload over the async limit as for Invoke."""
    server, client = await lam(serve, clients)
    resp = await asyncio.to_thread(client.client.invoke_async, FunctionName="echo", InvokeArgs=b'{"x": 1}')
    assert resp["Status"] == 202
    (inv,) = server.dispatcher.submitted
    assert (inv.function, inv.payload, inv.invocation_type) == ("echo", b'{"x": 1}', "async")
    assert resp["ResponseMetadata"]["RequestId"] == inv.request_id
    with pytest.raises(client.client.exceptions.ResourceNotFoundException):
        await asyncio.to_thread(client.client.invoke_async, FunctionName="nope", InvokeArgs=b"{}")
    server.dispatcher.max_async = 10
    with pytest.raises(client.client.exceptions.ClientError, match="too large for the Event invocation"):
        await asyncio.to_thread(client.client.invoke_async, FunctionName="echo", InvokeArgs=b'{"x": "long"}')
    assert len(server.dispatcher.submitted) == 1


async def test_too_large(serve: Any, clients: list[Lambda]) -> None:
    server, client = await lam(serve, clients, make_config(server={"max_body": 1024}))
    """Lambda's code (not the model's RequestTooLargeException: boto3 raises a ClientError) and text."""
    with pytest.raises(client.client.exceptions.ClientError) as info:
        await client.invoke(FunctionName="echo", Payload=json.dumps({"x": "a" * 5000}).encode())
    assert info.value.response["Error"] == {
        "Code": "RequestEntityTooLargeException",
        "Message": "Request must be smaller than 1024 bytes for the InvokeFunction operation"}
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert server.dispatcher.invoked == []


async def test_async_event_over_async_limit(serve: Any, clients: list[Lambda]) -> None:
    server, client = await lam(serve, clients)
    server.dispatcher.max_async = 10
    with pytest.raises(client.client.exceptions.ClientError) as info:
        await client.invoke(FunctionName="echo", InvocationType="Event", Payload=b'{"x": "0123456789"}')
    assert info.value.response["Error"] == {
        "Code": "RequestEntityTooLargeException",
        "Message": "19 byte payload is too large for the Event invocation type (limit 10 bytes)"}
    assert server.dispatcher.submitted == []


@pytest.mark.parametrize("payload", [b"{not json", b"\xff\xfe", b'{"a": 1'])
async def test_bad_json(serve: Any, clients: list[Lambda], payload: bytes) -> None:
    server, client = await lam(serve, clients)
    with pytest.raises(client.client.exceptions.InvalidRequestContentException,
                       match="Could not parse request body into json"):
        await client.invoke(FunctionName="echo", Payload=payload)
    assert server.dispatcher.invoked == []


async def test_token_required_when_configured(serve: Any, clients: list[Lambda]) -> None:
    config = make_config(server={"invoke_token": "s3cret-token"})
    server, anonymous = await lam(serve, clients, config)
    with pytest.raises(anonymous.client.exceptions.ClientError, match="AccessDenied") as info:
        await anonymous.invoke(FunctionName="echo")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "s3cret" not in str(info.value)

    keyed = Lambda(server.url, token="s3cret-token")
    clients.append(keyed)
    assert (await keyed.invoke(FunctionName="echo", Payload=b"1"))["Body"] == b"1"

    wrong = Lambda(server.url, token="s3cret-tokem")
    clients.append(wrong)
    with pytest.raises(wrong.client.exceptions.ClientError, match="AccessDenied"):
        await wrong.invoke(FunctionName="echo")

    url = f"{server.url}/2015-03-31/functions/echo/invocations"
    async with server.session.post(url, data=b"2", headers={"Authorization": "Bearer s3cret-token"}) as r:
        assert r.status == 200
        assert await r.read() == b"2"
    async with server.session.post(url, data=b"2", headers={"Authorization": "Bearer nope"}) as r:
        assert r.status == 403
        assert r.headers["x-amzn-ErrorType"] == "AccessDeniedException"


async def test_sigv4_signatures_verified_with_invoke_keys(serve: Any, clients: list[Lambda]) -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    config = make_config(server={"invoke_keys": {"AKIDROUTER": secret}})
    server = await serve(config)
    good = Lambda(server.url, keys=("AKIDROUTER", secret))
    clients.append(good)
    assert (await good.invoke(FunctionName="echo", Payload=b'{"a": 1}'))["Body"] == b'{"a": 1}'
    arn = "arn:aws:lambda:us-east-1:000000000000:function:echo"  # the path is encoded, then signed
    assert (await good.invoke(FunctionName=arn, Payload=b"[2]", Qualifier="$LATEST"))["Body"] == b"[2]"

    wrong_secret = Lambda(server.url, keys=("AKIDROUTER", secret[:-1] + "X"))
    unknown_key = Lambda(server.url, keys=("AKIDOTHER", secret))
    clients.extend([wrong_secret, unknown_key])
    with pytest.raises(botocore.exceptions.ClientError) as info:
        await wrong_secret.invoke(FunctionName="echo", Payload=b"{}")
    assert info.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(botocore.exceptions.ClientError) as info:
        await unknown_key.invoke(FunctionName="echo", Payload=b"{}")
    assert info.value.response["Error"]["Code"] == "UnrecognizedClientException"

    url = f"{server.url}/2015-03-31/functions/echo/invocations"
    async with server.session.post(url, data=b"{}") as r:  # unsigned
        assert r.status == 403
        assert r.headers["x-amzn-ErrorType"] == "AccessDeniedException"
        assert "SigV4" in (await r.json())["message"]
    # A signed request whose body was changed after signing is refused.
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(method="POST", url=url, data=b'{"amount": 1}')
    SigV4Auth(Credentials("AKIDROUTER", secret), "lambda", "us-east-1").add_auth(req)
    headers = {k: v for k, v in req.headers.items() if k.lower() != "x-amz-content-sha256"}
    async with server.session.post(url, data=b'{"amount": 1}', headers=headers) as r:
        assert r.status == 200
    async with server.session.post(url, data=b'{"amount": 9}', headers=headers) as r:
        assert r.status == 403
        assert r.headers["x-amzn-ErrorType"] == "InvalidSignatureException"
    amounts = [inv.payload for inv in server.dispatcher.invoked if b"amount" in inv.payload]
    assert amounts == [b'{"amount": 1}']


async def test_sigv4_expired_date_refused() -> None:
    import hashlib
    import time

    from multidict import CIMultiDict, CIMultiDictProxy

    from router.http import sigv4

    when = time.time()
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
    req = sigv4.SignedRequest("POST", "/x", CIMultiDictProxy(CIMultiDict({
        "Host": "h", "X-Amz-Date": amz_date,
        "Authorization": f"AWS4-HMAC-SHA256 Credential=K/{amz_date[:8]}/us-east-1/lambda/aws4_request, "
                         f"SignedHeaders=host;x-amz-date, Signature={'0' * 64}",
    })), b"")
    with pytest.raises(sigv4.SignatureError, match="does not match"):
        sigv4.verify(req, {"K": "s"}, now=when)
    with pytest.raises(sigv4.SignatureError, match="expired"):
        sigv4.verify(req, {"K": "s"}, now=when + 16 * 60)
    assert hashlib.sha256(b"").hexdigest() in sigv4.canonical_request(req, ["host", "x-amz-date"])


async def test_store_down_is_a_service_exception_not_a_crash(serve: Any, clients: list[Lambda]) -> None:
    from router.errors import StateStoreError

    server, client = await lam(serve, clients)
    server.dispatcher.submit_error = StateStoreError("sqlite:///state.db: enqueue: disk I/O error")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        await client.invoke(FunctionName="echo", InvocationType="Event", Payload=b"{}")
    assert info.value.response["Error"]["Code"] == "ServiceException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert "retry later" in info.value.response["Error"]["Message"]


async def test_invoke_api_can_be_turned_off(serve: Any) -> None:
    server = await serve(make_config(server={"invoke_api": False}))
    async with server.session.post(f"{server.url}/2015-03-31/functions/echo/invocations", data=b"{}") as r:
        assert r.status == 404


async def test_bad_invocation_type_and_name(serve: Any) -> None:
    server = await serve()
    url = f"{server.url}/2015-03-31/functions/echo/invocations"
    async with server.session.post(url, data=b"{}", headers={"X-Amz-Invocation-Type": "Later"}) as r:
        assert r.status == 400
        assert r.headers["x-amzn-ErrorType"] == "ValidationException"
        assert "invocationType" in (await r.json())["message"]
        assert r.headers["x-amzn-RequestId"]
    async with server.session.post(f"{server.url}/2015-03-31/functions/bad%20name/invocations") as r:
        assert r.status == 400


def _unused(inv: Invocation) -> None:  # keeps the import used for typing of scripts
    del inv
