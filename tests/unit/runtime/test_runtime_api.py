"""The Runtime API server's own answers, spoken to directly over HTTP."""

from __future__ import annotations

import asyncio
import io
import json

import aiohttp

from router.runtime.api import (
    MAX_RESPONSE_BYTES,
    NO_INIT_ERROR,
    PendingEvent,
    Reply,
    ReplyKind,
    RuntimeApiServer,
)

BASE = "http://{}/2018-06-01/runtime"


async def test_next_response_round_trip_and_unknown_id(runtime_api: RuntimeApiServer) -> None:
    channel = await runtime_api.open_channel()
    base = BASE.format(channel.address)
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Reply] = loop.create_future()
    headers = {"Lambda-Runtime-Aws-Request-Id": "req-1", "Lambda-Runtime-Deadline-Ms": "123",
               "Lambda-Runtime-Invoked-Function-Arn": "arn:x", "Lambda-Runtime-Trace-Id": "Root=1-a-b"}
    async with aiohttp.ClientSession() as session:
        pending_next = asyncio.ensure_future(session.get(base + "/invocation/next"))
        await asyncio.wait_for(asyncio.shield(channel.ready), 5)
        assert channel.ready.result() is None
        channel.send(PendingEvent("req-1", b'{"a": 1}', headers, future))
        async with await pending_next as resp:
            assert resp.status == 200
            assert await resp.read() == b'{"a": 1}'
            for key, value in headers.items():
                assert resp.headers[key] == value
        async with session.post(base + "/invocation/other/response", data=b"1") as resp:
            assert resp.status == 400
            assert (await resp.json())["errorType"] == "InvalidRequestID"
        async with session.post(base + "/invocation/req-1/error", data=b'{"errorType": "X"}',
                                headers={"Lambda-Runtime-Function-Error-Type": "X"}) as resp:
            assert resp.status == 202
        assert future.result() == Reply(ReplyKind.ERROR, b'{"errorType": "X"}', "X")
        async with session.post(base + "/invocation/req-1/response", data=b"1") as resp:
            assert resp.status == 400  # already finished
    await runtime_api.close_channel(channel)


async def test_oversized_response_is_refused_with_413(runtime_api: RuntimeApiServer) -> None:
    channel = await runtime_api.open_channel()
    base = BASE.format(channel.address)
    future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
    channel.send(PendingEvent("big", b"{}", {"Lambda-Runtime-Aws-Request-Id": "big"}, future))
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/invocation/next") as resp:
            assert resp.status == 200
        big = io.BytesIO(b"x" * (MAX_RESPONSE_BYTES + 1))
        async with session.post(base + "/invocation/big/response", data=big) as resp:
            assert resp.status == 413
    assert future.result().kind is ReplyKind.TOO_LARGE
    await runtime_api.close_channel(channel)


async def test_init_error_and_close(runtime_api: RuntimeApiServer) -> None:
    channel = await runtime_api.open_channel()
    base = BASE.format(channel.address)
    async with aiohttp.ClientSession() as session:
        body = json.dumps({"errorType": "Runtime.ImportModuleError", "errorMessage": "m"})
        error_header = {"Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"}
        async with session.post(base + "/init/error", data=body, headers=error_header) as resp:
            assert resp.status == 202
        async with session.post(base + "/init/error", data=body) as resp:
            assert resp.status == 403
    init = channel.ready.result()
    assert init is not None
    assert init is not NO_INIT_ERROR
    assert init.error_type == "Runtime.ImportModuleError"
    future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
    channel.send(PendingEvent("r", b"{}", {}, future))
    await runtime_api.close_channel(channel)
    assert future.result().kind is ReplyKind.CLOSED
