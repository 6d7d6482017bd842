"""START/END/REPORT lines and the function's own output, in the router's logs and in Result.logs."""

from __future__ import annotations

import logging
import re

import pytest

from .conftest import MakeInvoker, ended, invocation, read_results_late
from .node_support import NODE_RUNTIME, require_node


async def test_invocation_lines_and_output_carry_the_request_id(
    make_invoker: MakeInvoker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="router.function")
    invoker = await make_invoker("output", memory=256)
    inv = invocation()
    result = await invoker.invoke(inv)
    assert result.ok, result.payload
    await ended(result)
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
    # Result.logs: the cold start's INIT_START and the init's output first, as Lambda's tail of the
    # invocation that waited on a cold start; then this invocation's lines, START first, REPORT last
    lines = result.logs.split("\n")
    assert re.fullmatch(r"INIT_START Runtime Version: python:\d+\.\d+\.\d+\tRuntime Version ARN: "
                        r"arn:aws:lambda:us-east-1::runtime:[0-9a-f]{64}", lines[0]), lines[0]
    assert lines[1:] == ["init output", *ours]
    # a warm invocation: its own lines only
    again = invocation({})
    warm = await invoker.invoke(again)
    assert warm.logs.split("\n")[0] == f"START RequestId: {again.request_id} Version: $LATEST"
    assert "init output" not in warm.logs
    assert "INIT_START" not in warm.logs


def _logged(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str | None]]:
    return [(r.getMessage(), getattr(r, "request_id", None)) for r in caplog.records
            if r.name == "router.function"]


async def test_end_and_report_are_written_just_after_the_answer(
    make_invoker: MakeInvoker, caplog: pytest.LogCaptureFixture
) -> None:
    """The caller has its result before the environment writes END and REPORT (the next loop turn);
    ``Result.logs`` read earlier writes them first, so a tail or history row never misses them."""
    caplog.set_level(logging.INFO, logger="router.function")
    invoker = await make_invoker("output")
    inv = invocation()
    result = await invoker.invoke(inv)
    ours = [m for m, rid in _logged(caplog) if rid == inv.request_id]
    assert ours[0].startswith(f"START RequestId: {inv.request_id}")
    assert not any(m.startswith(("END", "REPORT")) for m in ours)  # not yet: after the answer
    assert result.finish_logs is not None
    await ended(result)
    ours = [m for m, rid in _logged(caplog) if rid == inv.request_id]
    assert ours[-2] == f"END RequestId: {inv.request_id}"
    assert ours[-1].startswith(f"REPORT RequestId: {inv.request_id}\tDuration: ")
    assert result.logs.split("\n")[-2:] == ours[-2:]

    # read at once: the lines are written then, in order, and the tail has them
    early = invocation()
    warm = await invoker.invoke(early)
    tail = warm.logs.split("\n")
    ours = [m for m, rid in _logged(caplog) if rid == early.request_id]
    assert tail == ours
    assert (tail[-2], tail[-1].split("\t")[0]) == (f"END RequestId: {early.request_id}",
                                                   f"REPORT RequestId: {early.request_id}")
    assert warm.finish_logs is None


async def test_a_log_tail_invocation_has_its_report_before_the_answer(
    make_invoker: MakeInvoker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="router.function")
    invoker = await make_invoker("output")
    inv = invocation(log_tail=True)
    result = await invoker.invoke(inv)
    assert result.finish_logs is None
    ours = [m for m, rid in _logged(caplog) if rid == inv.request_id]
    assert ours[-1].startswith(f"REPORT RequestId: {inv.request_id}")


async def test_an_invocation_starts_only_after_the_previous_ones_report(
    make_invoker: MakeInvoker, caplog: pytest.LogCaptureFixture
) -> None:
    """Back to back on one environment, with nothing awaited in between: each invocation's END and
    REPORT come before the next one's START in the router's log."""
    caplog.set_level(logging.INFO, logger="router.function")
    invoker = await make_invoker("output")
    invs = [invocation() for _ in range(4)]
    results = [await invoker.invoke(inv) for inv in invs]
    await ended(results[-1])
    platform = [(m.split(" ")[0], rid) for m, rid in _logged(caplog)
                if rid is not None and m.startswith(("START", "END", "REPORT"))]
    assert platform == [(kind, inv.request_id) for inv in invs for kind in ("START", "END", "REPORT")]
    assert all(r.finish_logs is None for r in results)


async def test_init_duration_only_on_the_cold_start(make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("output")
    cold = await invoker.invoke(invocation())
    warm = await invoker.invoke(invocation())
    assert "Init Duration:" in cold.logs.split("\n")[-1]
    assert "Init Duration:" not in warm.logs
    assert warm.logs.split("\n")[-1].startswith("REPORT RequestId: ")
    assert "hello from print" in warm.logs


@pytest.mark.parametrize("runtime", ["python", "node"])
async def test_duration_is_the_functions_time_not_the_wait_for_the_router_to_read_its_result(
    make_invoker: MakeInvoker, monkeypatch: pytest.MonkeyPatch, runtime: str
) -> None:
    # Lambda's Duration is the function's time; a busy router reads a result late (here 0.5 s late):
    # that wait is the router's, not the function's.
    if runtime == "node":
        require_node()
        invoker = await make_invoker("node_basic", name="sleep", runtime=NODE_RUNTIME, handler="index.sleep")
    else:
        invoker = await make_invoker("sleep")
    assert (await invoker.invoke(invocation({"seconds": 0}))).ok  # the cold start
    read_results_late(monkeypatch, 0.5)
    result = await invoker.invoke(invocation({"seconds": 0.05}))
    assert result.ok, result.payload
    assert result.duration >= 0.5
    report = result.logs.split("\n")[-1]
    found = re.search(r"\tDuration: (\d+\.\d\d) ms\tBilled Duration: (\d+) ms", report)
    assert found is not None, report
    assert 50 <= float(found[1]) < 500, report
    assert 50 <= int(found[2]) < 500, report
