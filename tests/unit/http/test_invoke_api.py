"""The Lambda Invoke API against a real boto3 ``lambda`` client over a real socket."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.client
import pytest
from botocore.config import Config

from router.core.invocation import Invocation, Outcome, Result
from router.http.invoke_api import parse_function_name

from .conftest import make_config


class Lambda:
    """A boto3 lambda client for a test server; every call runs in a thread (boto3 is sync)."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.client: botocore.client.BaseClient = boto3.client(
            "lambda", endpoint_url=url, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
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


async def test_other_qualifier_is_not_found(serve: Any, clients: list[Lambda]) -> None:
    _, client = await lam(serve, clients)
    with pytest.raises(client.client.exceptions.ResourceNotFoundException, match=r"function:echo:prod"):
        await client.invoke(FunctionName="echo", Qualifier="prod")


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
    server.dispatcher.scripts["echo"] = lambda inv: Result(payload=b"null", logs=logs)
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


async def test_throttled_result_is_429(serve: Any, clients: list[Lambda]) -> None:
    server, client = await lam(serve, clients)
    server.dispatcher.scripts["busy"] = lambda inv: Result.error(
        "TooManyRequestsException", "Rate Exceeded.", outcome=Outcome.THROTTLED)
    with pytest.raises(client.client.exceptions.TooManyRequestsException):
        await client.invoke(FunctionName="busy")


async def test_too_large(serve: Any, clients: list[Lambda]) -> None:
    server, client = await lam(serve, clients, make_config(server={"max_body": 1024}))
    with pytest.raises(client.client.exceptions.RequestTooLargeException, match="smaller than 1024 bytes"):
        await client.invoke(FunctionName="echo", Payload=json.dumps({"x": "a" * 5000}).encode())
    assert server.dispatcher.invoked == []


async def test_async_event_over_async_limit(serve: Any, clients: list[Lambda]) -> None:
    server, client = await lam(serve, clients)
    server.dispatcher.max_async = 10
    with pytest.raises(client.client.exceptions.RequestTooLargeException):
        await client.invoke(FunctionName="echo", InvocationType="Event", Payload=b'{"x": "0123456789"}')
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
