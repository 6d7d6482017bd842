"""Node.js functions that fail badly: timeouts, process.exit, uncaught errors, 10 MB of output, memory.

Each gives Lambda's error shape, the next invocation gets a working (fresh) environment, and the
router goes on serving.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from router.invocation import RESPONSE_LIMIT, ErrorType, Outcome
from router.runtime.output import MAX_LINE
from tests.waiting import until

from .conftest import MakeInvoker, environment_pids, invocation, process_gone
from .node_support import NODE_RUNTIME, require_node


@pytest.fixture(autouse=True)
def _node() -> None:
    require_node()


async def make(make_invoker: MakeInvoker, handler: str, **fields: object):  # type: ignore[no-untyped-def]
    return await make_invoker("node_basic", name=handler.replace(".", "-"), runtime=NODE_RUNTIME,
                              handler=handler, **fields)


async def test_handler_that_never_resolves_times_out_and_the_process_group_dies(
        make_invoker: MakeInvoker) -> None:
    invoker = await make(make_invoker, "index.hangs", timeout=1)
    inv = invocation()
    result = await invoker.invoke(inv)
    pids = environment_pids(invoker)
    assert result.outcome is Outcome.TIMEOUT
    assert result.error_type is ErrorType.TIMEOUT
    assert json.loads(result.payload) == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {inv.request_id} Error: Task timed out after 1.00 seconds",
    }
    assert "Status: timeout" in result.logs.split("\n")[-1]
    await until(lambda: all(process_gone(pid) for pid in pids), what="the node worker to die")
    echo = await make(make_invoker, "index.echo")
    after = await echo.invoke(invocation({"again": True}))
    assert json.loads(after.payload) == {"again": True}


async def test_process_exit_is_an_exit_error_then_a_fresh_environment(make_invoker: MakeInvoker) -> None:
    invoker = await make(make_invoker, "index.exit")
    first = invocation({"code": 3})
    result = await invoker.invoke(first)
    assert result.outcome is Outcome.ERROR
    assert json.loads(result.payload) == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {first.request_id} Error: Runtime exited with error: exit status 3",
    }
    assert "about to exit" in result.logs
    assert "Error Type: Runtime.ExitError" in result.logs.split("\n")[-1]
    second = await invoker.invoke(invocation({"code": 4}))
    assert "exit status 4" in json.loads(second.payload)["errorMessage"]
    assert "Init Duration" in second.logs.split("\n")[-1]  # a new environment took it


@pytest.mark.parametrize(("handler", "error_type", "message", "logged", "code"), [
    ("index.uncaught", "Error", "uncaught boom", "Uncaught Exception", 129),
    ("index.unhandled", "Runtime.UnhandledPromiseRejection", "Error: rejected boom",
     "Unhandled Promise Rejection", 128),
])
async def test_uncaught_errors_fail_the_invocation_and_end_the_environment(
        make_invoker: MakeInvoker, handler: str, error_type: str, message: str, logged: str,
        code: int) -> None:
    invoker = await make(make_invoker, handler)
    inv = invocation()
    result = await invoker.invoke(inv)
    pids = environment_pids(invoker)
    assert result.outcome is Outcome.ERROR
    error = json.loads(result.payload)
    assert (error["errorType"], error["errorMessage"]) == (error_type, message)
    assert re.search(rf"\t{inv.request_id}\tERROR\t{logged} \t\{{", result.logs), result.logs
    await until(lambda: all(process_gone(pid) for pid in pids), what="the environment to end")
    again = await invoker.invoke(invocation())
    assert json.loads(again.payload)["errorType"] == error_type
    assert "Init Duration" in again.logs.split("\n")[-1]


async def test_a_rejection_left_beside_a_result_ends_the_environment_after_the_result(
        make_invoker: MakeInvoker) -> None:
    """As Lambda's client: a promise the handler left rejected comes out in the turn of its result, before
    the next event is asked for. The result stands, the rejection is logged in its invocation, the process
    exits (128) without taking another event, and the next invocation runs in a new environment: it is
    not failed with an error that was not its own."""
    invoker = await make(make_invoker, "index.rejectsAfterResult")
    inv = invocation()
    first = await invoker.invoke(inv)
    assert first.ok, first.payload
    pid = json.loads(first.payload)["pid"]
    assert re.search(rf"\t{inv.request_id}\tERROR\tUnhandled Promise Rejection \t\{{", first.logs), first.logs
    await until(lambda: process_gone(pid), what="the environment to exit after its result")
    second = await invoker.invoke(invocation())
    assert second.ok, second.payload
    assert json.loads(second.payload)["pid"] != pid
    assert "Init Duration" in second.logs.split("\n")[-1]


async def test_a_timer_that_throws_after_the_result_fails_the_next_invocation(
        make_invoker: MakeInvoker) -> None:
    """A timer left running fires after the result went out: on Lambda the environment is frozen by then
    and the timer fires when the next invocation thaws it, failing that one; so here (README, Node.js
    functions). The environment then ends and the one after runs in a new environment."""
    invoker = await make(make_invoker, "index.throwsAfterResult")
    first = await invoker.invoke(invocation())
    assert first.ok, first.payload
    pid = json.loads(first.payload)["pid"]
    second = await invoker.invoke(invocation())
    assert second.outcome is Outcome.ERROR
    error = json.loads(second.payload)
    assert (error["errorType"], error["errorMessage"]) == ("Error", "timer boom")
    await until(lambda: process_gone(pid), what="the environment to end")
    third = await invoker.invoke(invocation())
    assert third.ok, third.payload
    assert "Init Duration" in third.logs.split("\n")[-1]


async def test_ten_megabytes_of_stdout_arrive_before_the_result(make_invoker: MakeInvoker) -> None:
    invoker = await make(make_invoker, "index.bigStdout")
    size = 10 * 1024 * 1024
    result = await invoker.invoke(invocation({"bytes": size}))
    assert result.ok, result.payload
    assert json.loads(result.payload) == {"wrote": size}
    lines = result.logs.split("\n")
    big = [line for line in lines if line.startswith("xxxx")]
    # one 10 MB line, cut into log events of at most MAX_LINE as CloudWatch cuts them
    assert len(big) >= size // (2 * MAX_LINE)
    assert all(len(line) <= MAX_LINE for line in big)
    after = next(i for i, line in enumerate(lines) if line.endswith("\tINFO\tafter the big write"))
    assert after < len(lines) - 2  # before END and REPORT
    assert lines[-2].startswith("END RequestId: ")
    warm = await invoker.invoke(invocation({"bytes": 10}))
    assert warm.ok
    assert "Init Duration" not in warm.logs


async def test_a_result_over_6_mb_is_refused_and_the_environment_goes_on(make_invoker: MakeInvoker) -> None:
    invoker = await make(make_invoker, "index.bigResult", memory=512)
    at_limit = await invoker.invoke(invocation({"bytes": RESPONSE_LIMIT - 2}))  # Lambda's 6291556 bytes
    assert at_limit.ok
    assert len(at_limit.payload) == RESPONSE_LIMIT
    over = await invoker.invoke(invocation({"bytes": RESPONSE_LIMIT - 1}))
    assert over.outcome is Outcome.ERROR
    assert json.loads(over.payload)["errorType"] == "Function.ResponseSizeTooLarge"
    within = await invoker.invoke(invocation({"bytes": 1000}))
    assert json.loads(within.payload) == "x" * 1000
    assert "Init Duration" not in within.logs  # the same environment, on a new connection


async def test_memory_limit_is_enforced_for_node(make_invoker: MakeInvoker) -> None:
    invoker = await make(make_invoker, "index.memory", memory=128)
    over = await invoker.invoke(invocation({"mb": 1024}))
    assert over.outcome is Outcome.ERROR
    error = json.loads(over.payload)
    assert error["errorType"] in {"Runtime.ExitError", "Runtime.OutOfMemory", "RangeError"}, error
    within = await invoker.invoke(invocation({"mb": 48}))
    assert within.ok, within.payload
    used = int(re.search(r"Max Memory Used: (\d+) MB", within.logs.split("\n")[-1]).group(1))  # type: ignore[union-attr]
    assert used >= 48


async def test_concurrent_invocations_get_their_own_environments(make_invoker: MakeInvoker) -> None:
    invoker = await make(make_invoker, "index.sleep", concurrency=3)
    results = await asyncio.gather(*(invoker.invoke(invocation({"seconds": 0.3})) for _ in range(3)))
    assert all(r.ok for r in results), [r.payload for r in results]
    assert len({json.loads(r.payload)["pid"] for r in results}) == 3
