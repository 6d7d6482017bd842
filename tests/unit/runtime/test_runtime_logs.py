"""START/END/REPORT lines and the function's own output, in the router's logs and in Result.logs."""

from __future__ import annotations

import logging
import re

import pytest

from .conftest import MakeInvoker, invocation


async def test_invocation_lines_and_output_carry_the_request_id(
    make_invoker: MakeInvoker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="router.function")
    invoker = await make_invoker("output", memory=256)
    inv = invocation()
    result = await invoker.invoke(inv)
    assert result.ok, result.payload
    records = [r for r in caplog.records if r.name == "router.function"]
    messages = [(r.getMessage(), getattr(r, "request_id", None), getattr(r, "function", None))
                for r in records]
    assert ("init output", None, "output") in messages
    ours = [m for m, rid, _ in messages if rid == inv.request_id]
    assert ours[0] == f"START RequestId: {inv.request_id} Version: $LATEST"
    assert "hello from print" in ours
    assert "to stderr" in ours
    assert any(re.fullmatch(rf"\[INFO\]\t\S+Z\t{inv.request_id}\tinfo via logging", m) for m in ours)
    assert any(m.startswith("[WARNING]\t") and m.endswith("warning via logging") for m in ours)
    assert ours[-2] == f"END RequestId: {inv.request_id}"
    assert re.fullmatch(
        rf"REPORT RequestId: {inv.request_id}\tDuration: \d+\.\d\d ms\tBilled Duration: \d+ ms"
        r"\tMemory Size: 256 MB\tMax Memory Used: \d+ MB\tInit Duration: \d+\.\d\d ms",
        ours[-1],
    )
    # Result.logs: this invocation's lines only, START first, REPORT last
    lines = result.logs.split("\n")
    assert lines == ours
    assert "init output" not in result.logs


async def test_init_duration_only_on_the_cold_start(make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("output")
    cold = await invoker.invoke(invocation())
    warm = await invoker.invoke(invocation())
    assert "Init Duration:" in cold.logs.split("\n")[-1]
    assert "Init Duration:" not in warm.logs
    assert warm.logs.split("\n")[-1].startswith("REPORT RequestId: ")
    assert "hello from print" in warm.logs
