"""A function's output belongs to the invocation that wrote it, however much it wrote and however it
wrote it (print, raw writes to fds 1 and 2, a last piece without a newline): every line is in the
invocation's logs before END, none in the next invocation's; on asyncio's loop and on uvloop's (the
pipe's reader callback and the drain at the result, ``router.runtime.output``)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from router.config.models import AwsConfig, FunctionConfig
from router.invokers.local import LocalInvoker
from router.metrics import Metrics
from router.runtime.api import RuntimeApiServer
from router.runtime.environment import MAX_TAIL_LINES

from .conftest import ARN, FUNCTIONS, PYTHON_RUNTIME, ended, invocation

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
    uvloop = None  # type: ignore[assignment]

# (lines, width): a few short lines; more than the pipe's 64 KB; more than one read (256 KB) a result.
SIZES = [(5, 10), (400, 300), (1500, 400)]


class _Lines(logging.Handler):
    """Every line the router logs for the function, with its request id."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[str | None, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((getattr(record, "request_id", None), record.getMessage()))


async def _scenario() -> None:
    lines_logged = _Lines()
    logger = logging.getLogger("router.function")
    logger.addHandler(lines_logged)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        await _invocations(lines_logged)
    finally:
        logger.removeHandler(lines_logged)
        logger.setLevel(old_level)


async def _invocations(lines_logged: _Lines) -> None:
    api = RuntimeApiServer()
    await api.start()
    config = FunctionConfig.model_validate({"runtime": PYTHON_RUNTIME, "handler": "app.bulk",
                                            "code": str(FUNCTIONS / "output"), "memory": 256})
    invoker = LocalInvoker("output", config, code_dir=FUNCTIONS / "output", aws=AwsConfig(),
                           metrics=Metrics(), runtime_api=api, arn=ARN.format("output"))
    try:
        await invoker.start()
        for round_ in range(3):
            for lines, width in SIZES:
                tag = f"r{round_}w{width}"
                inv = invocation({"lines": lines, "width": width, "tag": tag})
                result = await invoker.invoke(inv)
                assert result.ok, result.payload
                assert json.loads(result.payload) == {"lines": lines}
                await ended(result)
                written = [f"{tag} line {i} {'x' * width}" for i in range(lines)] + [f"{tag} tail"]
                # The router's log: START, every line in order (the unterminated tail flushed as a line
                # of its own), END, REPORT, all with this request id; nothing of it under another id.
                logged = [message for rid, message in lines_logged.lines if rid == inv.request_id]
                assert logged[0].startswith(f"START RequestId: {inv.request_id}")
                assert logged[1:-2] == written, next(
                    (i, a[:30], b[:30]) for i, (a, b) in enumerate(zip(logged[1:-2], written, strict=False))
                    if a != b) if len(logged) - 3 == len(written) else (len(logged) - 3, len(written))
                assert logged[-2] == f"END RequestId: {inv.request_id}"
                assert logged[-1].startswith(f"REPORT RequestId: {inv.request_id}")
                assert not any(message.startswith(tag) for rid, message in lines_logged.lines
                               if rid != inv.request_id)
                # Result.logs: the same, its last MAX_TAIL_LINES function lines
                tail = result.logs.split("\n")
                if round_ == 0 and (lines, width) == SIZES[0]:  # the cold start's lines come first
                    assert tail[0].startswith("INIT_START Runtime Version: python:")
                    assert tail[1] == "init output"
                    tail = tail[2:]
                assert tail == [logged[0], *written[-MAX_TAIL_LINES:], *logged[-2:]]
                lines_logged.lines.clear()
    finally:
        await invoker.close()
        await api.close()


def _run(runner: Callable[[Coroutine[Any, Any, None]], None]) -> None:
    runner(_scenario())


def test_output_is_attributed_to_its_invocation_on_asyncio() -> None:
    _run(asyncio.run)


@pytest.mark.skipif(uvloop is None, reason="uvloop is not installed")
def test_output_is_attributed_to_its_invocation_on_uvloop() -> None:
    assert uvloop is not None
    _run(uvloop.run)
