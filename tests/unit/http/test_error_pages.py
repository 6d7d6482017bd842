"""404 and 405 are JSON like every other error: AWS-shaped on the AWS API paths, API Gateway's elsewhere."""

from __future__ import annotations

import asyncio
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from .conftest import make_config

HOOK = {"name": "only-post", "function": "echo", "source": {"type": "webhook", "path": "/only-post"}}


@pytest.mark.parametrize(("method", "path", "status", "message"), [
    ("GET", "/nowhere", 404, "Not Found"),
    ("POST", "/users/1/deeper", 404, "Not Found"),
    ("GET", "/only-post", 405, "Method Not Allowed"),
    ("POST", "/livez", 405, "Method Not Allowed"),
])
async def test_webhook_and_other_paths_answer_api_gateway_json(
        serve: Any, method: str, path: str, status: int, message: str) -> None:
    server = await serve(make_config(routes=[HOOK]))
    async with server.session.request(method, server.url + path, data=b"{}") as r:
        assert r.status == status
        assert r.headers["Content-Type"].startswith("application/json")
        assert await r.json() == {"message": message}
        if status == 405:
            assert r.headers["Allow"]
    assert server.dispatcher.invoked == []


async def test_aws_api_paths_answer_aws_errors(serve: Any) -> None:
    server = await serve()
    async with server.session.get(f"{server.url}/2015-03-31/functions/echo/invocations") as r:
        assert r.status == 405
        assert r.headers["x-amzn-ErrorType"] == "UnknownOperationException"
        assert r.headers["Allow"] == "POST"
        assert r.headers["x-amzn-RequestId"]
        assert "POST /2015-03-31/functions/{name}/invocations" in (await r.json())["message"]
    async with server.session.post(f"{server.url}/2015-03-31/functions/echo/configuration") as r:
        assert r.status == 404
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.headers["x-amzn-ErrorType"] == "UnknownOperationException"

    # An SDK calling an operation the router does not serve gets an error it can parse.
    client = boto3.client("lambda", endpoint_url=server.url, region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x",
                          config=Config(retries={"max_attempts": 1}))
    try:
        with pytest.raises(botocore.exceptions.ClientError) as info:
            await asyncio.to_thread(client.list_functions)
    finally:
        client.close()
    assert info.value.response["Error"]["Code"] == "UnknownOperationException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


async def test_turned_off_invoke_api_says_so(serve: Any) -> None:
    server = await serve(make_config(server={"invoke_api": False}))
    async with server.session.post(f"{server.url}/2015-03-31/functions/echo/invocations", data=b"{}") as r:
        assert r.status == 404
        assert r.headers["x-amzn-ErrorType"] == "UnknownOperationException"
        assert "server.invoke_api: false" in (await r.json())["message"]


async def test_the_path_is_not_echoed(serve: Any) -> None:
    server = await serve()
    async with server.session.get(server.url + "/services/T0KEN-SECRET-PART") as r:
        assert r.status == 404
        assert "T0KEN" not in await r.text()
