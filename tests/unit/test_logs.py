"""Log lines: the buffered handler's write batching and the fast function-line path's exact format."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from router import logs
from router.logs import FLUSH_LINES, FunctionLog, JsonFormatter, LoopBufferedHandler, TextFormatter
from tests.waiting import until


class Recording(io.StringIO):
    """A stream that counts its write calls."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, s: str) -> int:
        self.writes.append(s)
        return super().write(s)


@pytest.fixture
def root_handler() -> Iterator[tuple[LoopBufferedHandler, Recording]]:
    """The root logger set up as ``setup_logging`` does, writing to a recording stream."""
    stream = Recording()
    handler = LoopBufferedHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield handler, stream
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


MESSAGES = [
    "START RequestId: abc Version: $LATEST", 'quote " backslash \\ tab \t', "unicode é ✓ \u2028", "50% {x}",
]


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
@pytest.mark.parametrize("message", MESSAGES)
@pytest.mark.parametrize("request_id", ["5f1c-req", None])
def test_fast_function_line_is_exactly_the_formatted_record(
    formatter: JsonFormatter | TextFormatter, message: str, request_id: str | None
) -> None:
    record = logging.LogRecord("router.function", logging.INFO, __file__, 1, message, None, None)
    record.function = "resize"
    record.request_id = request_id
    assert formatter.line(record.created, "router.function", message, "resize", request_id) == \
        formatter.format(record)


async def test_lines_logged_together_go_out_in_one_write(
    root_handler: tuple[LoopBufferedHandler, Recording], monkeypatch: pytest.MonkeyPatch,
) -> None:
    handler, stream = root_handler
    monkeypatch.setattr(logs, "FLUSH_DELAY", 3600.0)  # the batch is written by the flush below, not by time
    log = FunctionLog()
    log.line("START RequestId: r1 Version: $LATEST", "f", "r1")
    await asyncio.sleep(0)  # another loop iteration: the line still waits for company
    logging.getLogger("router.test").info("in between")
    log.line("END RequestId: r1", "f", "r1")
    assert stream.writes == []
    handler.flush()
    assert len(stream.writes) == 1
    lines = [json.loads(line) for line in stream.writes[0].splitlines()]
    assert [line["message"] for line in lines] == [
        "START RequestId: r1 Version: $LATEST", "in between", "END RequestId: r1"]
    assert lines[0]["function"] == "f"
    assert lines[0]["request_id"] == "r1"


async def test_a_waiting_line_is_written_without_more_coming(
    root_handler: tuple[LoopBufferedHandler, Recording],
) -> None:
    _, stream = root_handler
    FunctionLog().line("REPORT RequestId: r1", "f", "r1")
    await until(lambda: stream.writes, what="the line written after FLUSH_DELAY")
    assert json.loads(stream.writes[0])["message"] == "REPORT RequestId: r1"


async def test_a_full_buffer_is_written_at_once(root_handler: tuple[LoopBufferedHandler, Recording]) -> None:
    _, stream = root_handler
    log = FunctionLog()
    for n in range(FLUSH_LINES):
        log.line(f"line {n}", "f", "r1")
    assert len(stream.writes) == 1
    assert len(stream.writes[0].splitlines()) == FLUSH_LINES


async def test_warnings_are_written_at_once_after_what_came_before(
    root_handler: tuple[LoopBufferedHandler, Recording],
) -> None:
    _, stream = root_handler
    logging.getLogger("router.test").info("first")
    logging.getLogger("router.test").warning("second")
    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == ["first", "second"]


async def test_lines_logged_from_a_thread_are_written_at_once(
    root_handler: tuple[LoopBufferedHandler, Recording],
) -> None:
    _, stream = root_handler
    await asyncio.to_thread(logging.getLogger("router.test").info, "from a thread")
    assert json.loads(stream.getvalue())["message"] == "from a thread"


def test_lines_outside_an_event_loop_are_written_at_once(
    root_handler: tuple[LoopBufferedHandler, Recording],
) -> None:
    _, stream = root_handler
    FunctionLog().line("REPORT RequestId: r2", "f", "r2")
    assert json.loads(stream.getvalue())["message"] == "REPORT RequestId: r2"


async def test_other_logging_set_ups_still_see_function_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="router.function")
    FunctionLog().line("hello from the handler", "f", "r3")
    (record,) = [r for r in caplog.records if r.name == "router.function"]
    assert record.getMessage() == "hello from the handler"
    assert (record.__dict__["function"], record.__dict__["request_id"]) == ("f", "r3")
