"""The pieces of response streaming on the HTTP side: the event stream encoder (read back with botocore's
own parser, CRCs checked), the http-integration-response prelude, and ``StreamedCall`` choosing between
a stream and a whole result."""

from __future__ import annotations

import asyncio
import json
import zlib

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

from router.errors import Throttled
from router.http import eventstream
from router.http.streaming import HttpPrelude, MalformedPrelude, StreamedCall
from router.invocation import Invocation, Result


def parsed(data: bytes) -> list[tuple[dict[str, str], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return [(dict(m.headers), m.payload) for m in buffer]


def test_botocore_reads_payload_chunks_and_invoke_complete() -> None:
    data = (eventstream.payload_chunk(b"\x00binary\xff") + eventstream.payload_chunk(b"x" * 70000)
            + eventstream.invoke_complete("Error", "boom", "bG9n"))
    (h1, p1), (h2, p2), (h3, p3) = parsed(data)
    assert h1 == {":event-type": "PayloadChunk", ":content-type": "application/octet-stream",
                  ":message-type": "event"}
    assert p1 == b"\x00binary\xff"
    assert p2 == b"x" * 70000
    assert h2[":event-type"] == "PayloadChunk"
    assert h3[":event-type"] == "InvokeComplete"
    assert h3[":content-type"] == "application/json"
    assert json.loads(p3) == {"ErrorCode": "Error", "ErrorDetails": "boom", "LogResult": "bG9n"}
    assert json.loads(parsed(eventstream.invoke_complete())[0][1]) == {}


def test_a_corrupted_message_fails_botocores_checksum() -> None:
    good = bytearray(eventstream.payload_chunk(b"hello"))
    good[-6] ^= 0xFF  # a payload byte: the message CRC no longer matches
    with pytest.raises(ChecksumMismatch):
        parsed(bytes(good))
    prelude = bytes(good[:8])
    assert int.from_bytes(good[8:12], "big") == zlib.crc32(prelude)


def test_the_prelude_may_come_in_pieces_and_the_body_follows_it() -> None:
    prelude = HttpPrelude()
    fields = {"statusCode": 201, "headers": {"a": "b"}, "cookies": ["c=1"]}
    meta = json.dumps(fields).encode()
    assert prelude.feed(meta[:10]) is None
    assert prelude.feed(meta[10:] + b"\0" * 3) is None
    assert prelude.feed(b"\0" * 5 + b"body") == (fields, b"body")


@pytest.mark.parametrize(("data", "why"), [
    (b"not json" + b"\0" * 8, "not JSON"),
    (b"[1]" + b"\0" * 8, "not a JSON object"),
])
def test_a_malformed_prelude_says_why(data: bytes, why: str) -> None:
    with pytest.raises(MalformedPrelude, match=why):
        HttpPrelude().feed(data)


def test_a_prelude_without_its_delimiter_is_refused_past_the_limit() -> None:
    with pytest.raises(MalformedPrelude, match="no 8 NUL bytes"):
        HttpPrelude().feed(b"{" + b" " * 70000)


class FakeDispatcher:
    """Runs one invocation the test drives: the stream it writes, the result it returns."""

    def __init__(self) -> None:
        self.finish: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self.invocations: list[Invocation] = []

    async def invoke(self, inv: Invocation) -> Result:
        self.invocations.append(inv)
        return await self.finish


async def test_streamed_call_streams_when_the_function_writes() -> None:
    dispatcher = FakeDispatcher()
    inv = Invocation(function="f", payload=b"{}", source="test")
    async with StreamedCall(dispatcher, inv) as call:
        waiting = asyncio.ensure_future(call.streams())
        await asyncio.sleep(0)
        assert inv.stream is call.stream
        call.stream.open("text/plain", lambda: None)
        call.stream.push(b"one")
        assert await waiting is True
        assert await anext(call.stream) == b"one"
        call.stream.end()
        dispatcher.finish.set_result(Result(payload=b""))
        assert [c async for c in call.stream] == []
        assert (await call.result()).ok


async def test_streamed_call_answers_whole_when_the_function_does_not_stream() -> None:
    dispatcher = FakeDispatcher()
    inv = Invocation(function="f", payload=b"{}", source="test")
    async with StreamedCall(dispatcher, inv) as call:
        dispatcher.finish.set_result(Result(payload=b'"whole"'))
        assert await call.streams() is False
        assert (await call.result()).payload == b'"whole"'


async def test_streamed_call_a_stream_failing_before_any_byte_is_the_error_result() -> None:
    dispatcher = FakeDispatcher()
    inv = Invocation(function="f", payload=b"{}", source="test")
    async with StreamedCall(dispatcher, inv) as call:
        call.stream.open("text/plain", lambda: None)
        call.stream.end(failed=True)
        dispatcher.finish.set_result(Result.error("Error", "boom"))
        assert await call.streams() is False
        assert (await call.result()).function_error == "Unhandled"
        assert (await call.result()).error_message() == "boom"


async def test_streamed_call_passes_a_refusal_on() -> None:
    class Refusing:
        async def invoke(self, inv: Invocation) -> Result:
            raise Throttled("f", 1, Throttled.ACCOUNT)

    async with StreamedCall(Refusing(), Invocation(function="f", payload=b"{}", source="test")) as call:
        assert await call.streams() is False
        with pytest.raises(Throttled):
            await call.result()


async def test_leaving_early_drops_the_rest_and_waits_for_the_function() -> None:
    dispatcher = FakeDispatcher()
    inv = Invocation(function="f", payload=b"{}", source="test")
    resumed: list[bool] = []
    async with StreamedCall(dispatcher, inv) as call:
        call.stream.open("text/plain", lambda: resumed.append(True))
        assert call.stream.push(b"x" * (256 * 1024)) is True  # over the high water mark: pause
        assert await call.streams() is True
        asyncio.get_running_loop().call_soon(dispatcher.finish.set_result, Result(payload=b""))
    # the caller went away: the held bytes were dropped, the function's socket resumed, the task awaited
    assert resumed == [True]
    assert not call.stream.has_data
    assert call.stream.push(b"more") is False
    assert dispatcher.finish.done()
