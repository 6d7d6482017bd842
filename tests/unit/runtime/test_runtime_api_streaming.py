"""Response streaming on the Runtime API: a POST of ``/response`` in streaming mode (chunked, trailers
for a mid-stream error) spoken over raw sockets, handed on chunk by chunk to the invocation's
``ResponseStream``, with back pressure on the function's socket."""

from __future__ import annotations

import asyncio
import base64
import json

from router.response_stream import HIGH_WATER, ResponseStream
from router.runtime.api import PendingEvent, Reply, ReplyKind, RuntimeApiServer, RuntimeChannel
from tests.unit.runtime.test_runtime_api import PREFIX, Raw
from tests.waiting import until

HEAD = (f"POST {PREFIX}/invocation/{{rid}}/response HTTP/1.1\r\nHost: x\r\n"
        "Lambda-Runtime-Function-Response-Mode: streaming\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: {ctype}\r\n"
        "Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n\r\n")


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def taken(runtime_api: RuntimeApiServer, stream: ResponseStream | None
                ) -> tuple[RuntimeChannel, Raw, asyncio.Future[Reply]]:
    """A channel whose one event ('r1') the raw client has taken with /next."""
    channel = await runtime_api.open_channel()
    future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
    channel.send(PendingEvent("r1", b"{}", {"Lambda-Runtime-Aws-Request-Id": "r1"}, future, stream=stream))
    raw = await Raw.connect(channel)
    await raw.send(f"GET {PREFIX}/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    status, _, _ = await raw.answer()
    assert status == 200
    return channel, raw, future


async def next_chunk(stream: ResponseStream) -> bytes:
    async with asyncio.timeout(5):
        return await anext(stream)


async def test_chunks_reach_the_stream_as_they_arrive(runtime_api: RuntimeApiServer) -> None:
    stream = ResponseStream()
    channel, raw, future = await taken(runtime_api, stream)
    await raw.send(HEAD.format(rid="r1", ctype="text/plain").encode() + chunk(b"first"))
    assert await next_chunk(stream) == b"first"  # before the body is complete
    assert stream.opened
    assert stream.content_type == "text/plain"
    assert not future.done()
    await raw.send(chunk(b"second"))
    assert await next_chunk(stream) == b"second"
    await raw.send(b"0\r\n\r\n")
    status, _, _ = await raw.answer()
    assert status == 202
    assert future.result() == Reply(ReplyKind.RESPONSE, b"")
    assert [c async for c in stream] == []
    assert not stream.failed
    await raw.close()
    await runtime_api.close_channel(channel)


async def test_a_mid_stream_error_in_the_trailers_fails_the_invocation(runtime_api: RuntimeApiServer) -> None:
    stream = ResponseStream()
    channel, raw, future = await taken(runtime_api, stream)
    await raw.send(HEAD.format(rid="r1", ctype="application/octet-stream").encode() + chunk(b"part"))
    assert await next_chunk(stream) == b"part"
    error = {"errorType": "Error", "errorMessage": "boom", "trace": []}
    encoded = base64.b64encode(json.dumps(error).encode()).decode()
    await raw.send(f"0\r\nLambda-Runtime-Function-Error-Type: Error\r\n"
                   f"Lambda-Runtime-Function-Error-Body: {encoded}\r\n\r\n".encode())
    status, _, _ = await raw.answer()
    assert status == 202
    reply = future.result()
    assert reply.kind is ReplyKind.ERROR
    assert reply.error_type == "Error"
    assert json.loads(reply.body) == error
    assert stream.ended
    assert stream.failed
    await raw.close()
    await runtime_api.close_channel(channel)


async def test_without_a_stream_taker_the_streamed_body_is_buffered(runtime_api: RuntimeApiServer) -> None:
    channel, raw, future = await taken(runtime_api, None)
    await raw.send(HEAD.format(rid="r1", ctype="application/json").encode()
                   + chunk(b'{"a":') + chunk(b" 1}") + b"0\r\n\r\n")
    status, _, _ = await raw.answer()
    assert status == 202
    assert future.result() == Reply(ReplyKind.RESPONSE, b'{"a": 1}')
    await raw.close()
    await runtime_api.close_channel(channel)


async def test_a_buffered_streamed_body_with_an_error_trailer_is_an_error(
        runtime_api: RuntimeApiServer) -> None:
    channel, raw, future = await taken(runtime_api, None)
    await raw.send(HEAD.format(rid="r1", ctype="text/plain").encode() + chunk(b"x")
                   + b"0\r\nLambda-Runtime-Function-Error-Type: Custom.Failure\r\n\r\n")
    status, _, _ = await raw.answer()
    assert status == 202
    reply = future.result()
    assert reply.kind is ReplyKind.ERROR
    assert reply.error_type == "Custom.Failure"
    assert json.loads(reply.body)["errorType"] == "Custom.Failure"
    await raw.close()
    await runtime_api.close_channel(channel)


async def test_a_slow_taker_pauses_reading_the_functions_socket(runtime_api: RuntimeApiServer) -> None:
    stream = ResponseStream()
    channel, raw, future = await taken(runtime_api, stream)
    (conn,) = channel.listener.connections
    assert conn.transport is not None
    piece = b"y" * 65536
    await raw.send(HEAD.format(rid="r1", ctype="text/plain").encode())
    # Write until the router stops reading: it holds at most HIGH_WATER bytes plus one read.
    writer = asyncio.ensure_future(raw.send(chunk(piece) * (4 * HIGH_WATER // len(piece))))
    await until(lambda: not conn.transport.is_reading(), "the router pauses reading the function's socket")
    got = 0
    while got < 4 * HIGH_WATER:
        got += len(await next_chunk(stream))
    await until(lambda: conn.transport.is_reading(), "the router reads again once the taker caught up")
    await writer
    await raw.send(b"0\r\n\r\n")
    status, _, _ = await raw.answer()
    assert status == 202
    assert future.result().kind is ReplyKind.RESPONSE
    await raw.close()
    await runtime_api.close_channel(channel)


async def test_a_connection_lost_mid_stream_ends_the_stream_failed(runtime_api: RuntimeApiServer) -> None:
    stream = ResponseStream()
    channel, raw, future = await taken(runtime_api, stream)
    await raw.send(HEAD.format(rid="r1", ctype="text/plain").encode() + chunk(b"partial"))
    assert await next_chunk(stream) == b"partial"
    await raw.close()
    await until(lambda: stream.ended, "the stream ends when the function's connection is lost")
    assert stream.failed
    assert not future.done()  # the environment settles it (process exit, timeout)
    await runtime_api.close_channel(channel)
    assert future.result().kind is ReplyKind.CLOSED
