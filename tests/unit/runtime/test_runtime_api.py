"""The Runtime API server's own answers, spoken to directly over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json

import aiohttp
import pytest

from router.invocation import RESPONSE_LIMIT
from router.runtime import http11
from router.runtime.api import (
    NO_INIT_ERROR,
    PendingEvent,
    Reply,
    ReplyKind,
    RuntimeApiServer,
    RuntimeChannel,
)
from tests.waiting import until

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


@pytest.mark.parametrize(("sent", "duration"), [
    ("1500", 0.0015), ("0", 0.0), (None, None), ("-3", None), ("1.5", None), ("soon", None)])
async def test_a_runtimes_own_duration_is_read_from_its_result(
    runtime_api: RuntimeApiServer, sent: str | None, duration: float | None
) -> None:
    # Router-Duration: microseconds, from the router's own bootstraps; anything else (a runtime of the
    # user's own may send what it likes) is no duration.
    channel = await runtime_api.open_channel()
    base = BASE.format(channel.address)
    future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
    async with aiohttp.ClientSession() as session:
        pending_next = asyncio.ensure_future(session.get(base + "/invocation/next"))
        await asyncio.wait_for(asyncio.shield(channel.ready), 5)
        channel.send(PendingEvent("req-1", b"{}", {"Lambda-Runtime-Aws-Request-Id": "req-1"}, future))
        async with await pending_next as resp:
            assert resp.status == 200
        headers = {} if sent is None else {"Router-Duration": sent}
        async with session.post(base + "/invocation/req-1/response", data=b"1", headers=headers) as resp:
            assert resp.status == 202
    assert future.result() == Reply(ReplyKind.RESPONSE, b"1", duration=duration)
    await runtime_api.close_channel(channel)


async def test_oversized_response_is_refused_with_413(runtime_api: RuntimeApiServer) -> None:
    channel = await runtime_api.open_channel()
    base = BASE.format(channel.address)
    future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
    channel.send(PendingEvent("big", b"{}", {"Lambda-Runtime-Aws-Request-Id": "big"}, future))
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/invocation/next") as resp:
            assert resp.status == 200
        big = io.BytesIO(b"x" * (RESPONSE_LIMIT + 1))
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


# --- the HTTP/1.1 transport, spoken to over raw sockets -------------------------------------------------

PREFIX = "/2018-06-01/runtime"


class Raw:
    """A bare HTTP/1.1 client: writes bytes as given, reads answers one at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, channel: RuntimeChannel) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", channel.port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        async with asyncio.timeout(5):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            status = int(lines[0].split(" ")[1])
            headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:] if line)}
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body

    async def at_eof(self) -> bool:
        async with asyncio.timeout(5):
            return await self.reader.read() == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def _event(
    channel: RuntimeChannel, request_id: str = "r1", payload: bytes = b'{"k": 1}'
) -> asyncio.Future[Reply]:
    future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
    channel.send(PendingEvent(request_id, payload, {"Lambda-Runtime-Aws-Request-Id": request_id,
                                                    "Content-Type": "application/json"}, future))
    return future


NEXT = f"GET {PREFIX}/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n".encode()


async def test_keep_alive_serves_several_invocations_on_one_connection(runtime_api: RuntimeApiServer) -> None:
    channel = await runtime_api.open_channel()
    raw = await Raw.connect(channel)
    for n in range(3):
        await raw.send(NEXT)
        await until(lambda: bool(channel.waiters), what="/next to wait")  # long poll
        future = _event(channel, f"r{n}", b'{"n": %d}' % n)
        status, headers, body = await raw.answer()
        assert (status, body) == (200, b'{"n": %d}' % n)
        assert headers["lambda-runtime-aws-request-id"] == f"r{n}"
        assert headers["content-type"] == "application/json"
        assert "connection" not in headers
        await raw.send(f"POST {PREFIX}/invocation/r{n}/response HTTP/1.1\r\nHost: x\r\n"
                       f"Content-Length: 2\r\n\r\n{n}!".encode())
        assert (await raw.answer())[0] == 202
        assert future.result() == Reply(ReplyKind.RESPONSE, f"{n}!".encode())
    await raw.close()
    await runtime_api.close_channel(channel)


async def test_pipelined_requests_are_answered_in_order(runtime_api: RuntimeApiServer) -> None:
    channel = await runtime_api.open_channel()
    future = _event(channel, "p1")
    raw = await Raw.connect(channel)
    await raw.send(NEXT + f"POST {PREFIX}/invocation/p1/response HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
                   .encode() + NEXT)
    assert (await raw.answer())[0] == 200
    assert (await raw.answer())[0] == 202
    assert future.result() == Reply(ReplyKind.RESPONSE, b"abc")
    await until(lambda: bool(channel.waiters), what="the third request to wait")
    await runtime_api.close_channel(channel)
    status, _, body = await raw.answer()
    assert status == 410
    assert json.loads(body)["errorType"] == "Gone"
    assert await raw.at_eof()
    await raw.close()


def _server_connection(channel: RuntimeChannel) -> http11.Connection:
    (conn,) = channel.listener.connections
    return conn


async def test_a_result_pipelined_with_next_is_answered_with_the_next_event(
    runtime_api: RuntimeApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A runtime that posts its result and asks for the next event in one write gets the 202 together
    # with the next event: it wakes up once for both.
    monkeypatch.setattr(http11, "HOLD_SECONDS", 60.0)
    channel = await runtime_api.open_channel()
    first = _event(channel, "h1")
    raw = await Raw.connect(channel)
    await raw.send(NEXT)
    assert (await raw.answer())[0] == 200
    await raw.send(f"POST {PREFIX}/invocation/h1/response HTTP/1.1\r\nContent-Length: 2\r\n\r\nok"
                   .encode() + NEXT)
    await until(lambda: bool(channel.waiters), what="the pipelined /next to wait")
    await until(first.done, what="the result")
    assert first.result() == Reply(ReplyKind.RESPONSE, b"ok")
    assert _server_connection(channel)._held.startswith(b"HTTP/1.1 202 ")  # not sent on its own
    second = _event(channel, "h2", b'{"n": 2}')
    assert (await raw.answer())[0] == 202
    status, headers, body = await raw.answer()
    assert (status, body, headers["lambda-runtime-aws-request-id"]) == (200, b'{"n": 2}', "h2")
    assert not second.done()
    await raw.close()
    await runtime_api.close_channel(channel)


async def test_a_held_answer_goes_out_alone_when_no_event_comes(
    runtime_api: RuntimeApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http11, "HOLD_SECONDS", 0.01)
    channel = await runtime_api.open_channel()
    _event(channel, "h1")
    raw = await Raw.connect(channel)
    await raw.send(NEXT)
    assert (await raw.answer())[0] == 200
    await raw.send(f"POST {PREFIX}/invocation/h1/response HTTP/1.1\r\nContent-Length: 2\r\n\r\nok"
                   .encode() + NEXT)
    assert (await raw.answer())[0] == 202  # the /next behind it still waits
    assert channel.waiters
    await runtime_api.close_channel(channel)
    assert (await raw.answer())[0] == 410
    await raw.close()


async def test_a_held_answer_is_sent_before_the_connection_closes(
    runtime_api: RuntimeApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http11, "HOLD_SECONDS", 60.0)
    channel = await runtime_api.open_channel()
    _event(channel, "h1")
    raw = await Raw.connect(channel)
    await raw.send(NEXT)
    assert (await raw.answer())[0] == 200
    await raw.send(f"POST {PREFIX}/invocation/h1/response HTTP/1.1\r\nContent-Length: 2\r\n\r\nok"
                   .encode() + NEXT)
    await until(lambda: bool(channel.waiters), what="the pipelined /next to wait")
    await runtime_api.close_channel(channel)
    assert (await raw.answer())[0] == 202
    assert (await raw.answer())[0] == 410
    assert await raw.at_eof()
    await raw.close()


async def test_a_channel_of_capacity_three_runs_three_invocations_at_once(
    runtime_api: RuntimeApiServer,
) -> None:
    channel = await runtime_api.open_channel(capacity=3)
    workers = [await Raw.connect(channel) for _ in range(4)]
    for raw in workers[:3]:
        await raw.send(NEXT)
    await until(lambda: len(channel.waiters) == 3, what="three /next to wait")
    await workers[3].send(NEXT)
    status, _, body = await workers[3].answer()  # a fourth would be one more than the environment runs
    assert (status, json.loads(body)["errorType"]) == (400, "InvalidStateTransition")
    futures = [_event(channel, f"c{n}", b'{"n": %d}' % n) for n in range(3)]
    with pytest.raises(RuntimeError, match="3 invocation"):
        _event(channel, "c3")
    taken = {}
    for raw in workers[:3]:
        _, headers, _ = await raw.answer()
        taken[headers["lambda-runtime-aws-request-id"]] = raw
    assert sorted(taken) == ["c0", "c1", "c2"]
    for rid in ("c2", "c0", "c1"):  # results in any order, each to its own invocation
        await taken[rid].send(f"POST {PREFIX}/invocation/{rid}/response HTTP/1.1\r\nContent-Length: 2\r\n\r\n"
                              f"{rid}".encode())
        assert (await taken[rid].answer())[0] == 202
    assert [f.result().body for f in futures] == [b"c0", b"c1", b"c2"]
    assert not channel.running
    for raw in workers:
        await raw.close()
    await runtime_api.close_channel(channel)


async def test_the_death_of_a_multi_concurrent_worker_ends_all_its_invocations(
    runtime_api: RuntimeApiServer,
) -> None:
    channel = await runtime_api.open_channel(capacity=2)
    raw = await Raw.connect(channel)
    await raw.send(NEXT)
    await until(lambda: len(channel.waiters) == 1, what="/next to wait")
    taken, queued = _event(channel, "t1"), _event(channel, "t2")
    assert (await raw.answer())[0] == 200
    channel.finish(Reply(ReplyKind.EXITED, returncode=1))
    assert taken.result().kind is ReplyKind.EXITED
    assert queued.result().kind is ReplyKind.UNDELIVERED  # never reached the function: may run elsewhere
    await raw.close()
    await runtime_api.close_channel(channel)


async def test_a_lost_worker_connection_ends_only_its_own_invocation(runtime_api: RuntimeApiServer) -> None:
    # Multi-concurrent: each runtime worker has its own connection; one that goes away with an event
    # running died with it. The other worker's invocation goes on.
    channel = await runtime_api.open_channel(capacity=2)
    first, second = await Raw.connect(channel), await Raw.connect(channel)
    for raw in (first, second):
        await raw.send(NEXT)
    await until(lambda: len(channel.waiters) == 2, what="two /next to wait")
    futures = {"w1": _event(channel, "w1"), "w2": _event(channel, "w2")}
    owner = {}
    for raw in (first, second):
        owner[(await raw.answer())[1]["lambda-runtime-aws-request-id"]] = raw
    await owner["w1"].close()
    await until(futures["w1"].done, what="the lost worker's invocation to end")
    assert futures["w1"].result().kind is ReplyKind.EXITED
    assert not futures["w2"].done()
    await owner["w2"].send(f"POST {PREFIX}/invocation/w2/response HTTP/1.1\r\nContent-Length: 2\r\n\r\nok"
                           .encode())
    assert (await owner["w2"].answer())[0] == 202
    assert futures["w2"].result() == Reply(ReplyKind.RESPONSE, b"ok")
    await owner["w2"].close()
    await runtime_api.close_channel(channel)


async def test_chunked_bodies_are_read(runtime_api: RuntimeApiServer) -> None:
    channel = await runtime_api.open_channel()
    future = _event(channel, "c1")
    raw = await Raw.connect(channel)
    await raw.send(NEXT)
    assert (await raw.answer())[0] == 200
    await raw.send(f"POST {PREFIX}/invocation/c1/error HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                   "lambda-runtime-function-error-type: Boom\r\n\r\n5\r\nhello\r\n".encode())
    await raw.send(b"6\r\n world\r\n0\r\n\r\n")
    assert (await raw.answer())[0] == 202
    assert future.result() == Reply(ReplyKind.ERROR, b"hello world", "Boom")
    await raw.close()
    await runtime_api.close_channel(channel)


async def test_chunked_body_over_the_limit_is_refused(runtime_api: RuntimeApiServer) -> None:
    channel = await runtime_api.open_channel()
    future = _event(channel, "big")
    raw = await Raw.connect(channel)
    await raw.send(NEXT)
    assert (await raw.answer())[0] == 200
    await raw.send(f"POST {PREFIX}/invocation/big/response HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                   .encode())
    chunk = b"x" * (1024 * 1024)
    for _ in range(RESPONSE_LIMIT // len(chunk) + 1):
        await raw.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    await raw.send(b"0\r\n\r\n")
    status, headers, body = await raw.answer()
    assert status == 413
    assert headers["connection"] == "close"
    assert json.loads(body)["errorType"] == "RequestEntityTooLarge"
    assert future.result().kind is ReplyKind.TOO_LARGE
    assert await raw.at_eof()
    await raw.close()
    await runtime_api.close_channel(channel)


async def test_expect_100_continue(runtime_api: RuntimeApiServer) -> None:
    channel = await runtime_api.open_channel()
    future = _event(channel, "e1")
    raw = await Raw.connect(channel)
    await raw.send(NEXT)
    assert (await raw.answer())[0] == 200
    await raw.send(f"POST {PREFIX}/invocation/e1/response HTTP/1.1\r\nContent-Length: 4\r\n"
                   "Expect: 100-continue\r\n\r\n".encode())
    async with asyncio.timeout(5):
        assert await raw.reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    await raw.send(b"done")
    assert (await raw.answer())[0] == 202
    assert future.result() == Reply(ReplyKind.RESPONSE, b"done")
    await raw.close()
    await runtime_api.close_channel(channel)


async def test_expect_100_continue_with_a_body_over_the_limit_gets_413_at_once(
    runtime_api: RuntimeApiServer,
) -> None:
    channel = await runtime_api.open_channel()
    future = _event(channel, "e2")
    raw = await Raw.connect(channel)
    await raw.send(NEXT)
    assert (await raw.answer())[0] == 200
    await raw.send(f"POST {PREFIX}/invocation/e2/response HTTP/1.1\r\nContent-Length: "
                   f"{RESPONSE_LIMIT + 1}\r\nExpect: 100-continue\r\n\r\n".encode())
    status, headers, _ = await raw.answer()  # no 100 Continue first, and no body sent
    assert status == 413
    assert headers["connection"] == "close"
    assert future.result().kind is ReplyKind.TOO_LARGE
    assert await raw.at_eof()
    await raw.close()
    await runtime_api.close_channel(channel)


async def test_malformed_requests_get_400_and_close(runtime_api: RuntimeApiServer) -> None:
    channel = await runtime_api.open_channel()
    for garbage in (b"NOT HTTP AT ALL\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
                    f"POST {PREFIX}/init/error HTTP/1.1\r\nContent-Length: x\r\n\r\n".encode()):
        raw = await Raw.connect(channel)
        await raw.send(garbage)
        status, headers, _ = await raw.answer()
        assert status == 400
        assert headers["connection"] == "close"
        assert await raw.at_eof()
        await raw.close()
    assert not channel.ready.done()  # nothing reached the routes
    raw = await Raw.connect(channel)
    await raw.send(b"GET /nowhere HTTP/1.1\r\n\r\n"
                   + f"PUT {PREFIX}/invocation/next HTTP/1.1\r\n\r\n".encode())
    assert (await raw.answer())[0] == 404
    assert (await raw.answer())[0] == 405
    await raw.close()
    await runtime_api.close_channel(channel)


async def test_http_1_0_closes_unless_keep_alive(runtime_api: RuntimeApiServer) -> None:
    channel = await runtime_api.open_channel()
    future = _event(channel, "h1")
    raw = await Raw.connect(channel)
    await raw.send(f"GET {PREFIX}/invocation/next HTTP/1.0\r\n\r\n".encode())
    status, headers, body = await raw.answer()
    assert (status, body, headers["connection"]) == (200, b'{"k": 1}', "close")
    assert await raw.at_eof()
    await raw.close()
    raw = await Raw.connect(channel)
    await raw.send(f"POST {PREFIX}/invocation/h1/response HTTP/1.0\r\nConnection: keep-alive\r\n"
                   "Content-Length: 2\r\n\r\nok".encode())
    status, headers, _ = await raw.answer()
    assert (status, headers["connection"]) == (202, "keep-alive")
    assert future.result() == Reply(ReplyKind.RESPONSE, b"ok")
    await raw.send(f"POST {PREFIX}/invocation/h1/response HTTP/1.1\r\nConnection: close\r\n"
                   "Content-Length: 2\r\n\r\nok".encode())
    status, headers, _ = await raw.answer()
    assert (status, headers["connection"]) == (400, "close")  # finished already; then closed
    assert await raw.at_eof()
    await raw.close()
    await runtime_api.close_channel(channel)


async def test_a_worker_gone_with_next_pending_never_takes_the_event(runtime_api: RuntimeApiServer) -> None:
    channel = await runtime_api.open_channel()
    raw = await Raw.connect(channel)
    await raw.send(NEXT)
    await until(lambda: bool(channel.waiters), what="/next to wait")
    await raw.close()
    await until(lambda: not channel.waiters, what="the lost /next to be dropped")
    future = _event(channel, "lost")
    assert channel.queued  # nobody took it
    channel.finish(Reply(ReplyKind.EXITED, returncode=-9))
    assert future.result().kind is ReplyKind.UNDELIVERED
    await runtime_api.close_channel(channel)


async def test_close_answers_a_pending_next_and_closes_connections(runtime_api: RuntimeApiServer) -> None:
    channel = await runtime_api.open_channel()
    waiting, idle = await Raw.connect(channel), await Raw.connect(channel)
    await waiting.send(NEXT)
    await until(lambda: bool(channel.waiters), what="/next to wait")
    await runtime_api.close()
    assert (await waiting.answer())[0] == 410
    assert await waiting.at_eof()
    assert await idle.at_eof()
    for raw in (waiting, idle):
        await raw.close()
    try:
        await asyncio.open_connection("127.0.0.1", channel.port)
    except OSError:
        pass
    else:  # pragma: no cover
        raise AssertionError("the channel's port still accepts connections after close()")
