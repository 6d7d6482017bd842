"""Execution environments under failure: timeouts, memory, crashes, concurrency, reaping, provisioning."""

from __future__ import annotations

import asyncio
import json
import re

from router.invocation import ErrorType, Outcome
from router.metrics import Metrics
from tests.waiting import until

from .conftest import MakeInvoker, environment_pids, invocation, process_gone


def gauge(metrics: Metrics, function: str, state: str) -> float | None:
    return metrics.registry.get_sample_value("router_environments", {"function": function, "state": state})


async def test_timeout_kills_the_process_group(make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("sleep", timeout=1)
    assert (await invoker.invoke(invocation({"seconds": 0}))).ok  # warm: the REPORT below has no init
    inv = invocation({"seconds": 60, "spawn_child": True})
    result = await invoker.invoke(inv)
    assert result.outcome is Outcome.TIMEOUT
    assert result.error_type is ErrorType.TIMEOUT
    assert result.function_error == "Unhandled"
    assert json.loads(result.payload) == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {inv.request_id} Error: Task timed out after 1.00 seconds",
    }
    match = re.search(r"child pid (\d+)", result.logs)
    assert match, result.logs
    child = int(match.group(1))
    await until(lambda: process_gone(child), what="the handler's child process to die")
    assert f"{inv.request_id} Task timed out after 1.00 seconds" in result.logs
    report = result.logs.splitlines()[-1]
    assert "Status: timeout" in report
    # Lambda reports and bills a timed-out invocation its time limit, not the moments after it
    assert "\tDuration: 1000.00 ms\tBilled Duration: 1000 ms\t" in report, report
    # the next invocation gets a fresh environment
    after = await invoker.invoke(invocation({"seconds": 0}))
    assert after.ok, after.payload


async def test_memory_limit_is_enforced_and_the_router_survives(make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("memory_hog", memory=128)
    over = await invoker.invoke(invocation({"mb": 1024}))
    assert over.outcome is Outcome.ERROR
    error = json.loads(over.payload)
    assert error["errorType"] in {"MemoryError", "Runtime.ExitError", "Runtime.OutOfMemory"}
    within = await invoker.invoke(invocation({"mb": 48}))
    assert within.ok, within.payload
    report = within.logs.splitlines()[-1]
    used = int(re.search(r"Max Memory Used: (\d+) MB", report).group(1))  # type: ignore[union-attr]
    assert 48 <= used <= 128 + 64


async def test_exit_mid_invocation_is_exit_error_then_a_fresh_environment(make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("exit")
    inv = invocation({"code": 3})
    first_pids = set()
    result = await invoker.invoke(inv)
    first_pids |= environment_pids(invoker)
    assert result.outcome is Outcome.ERROR
    assert result.function_error == "Unhandled"
    assert json.loads(result.payload) == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {inv.request_id} Error: Runtime exited with error: exit status 3",
    }
    assert "about to exit" in result.logs
    killed = invocation({"signal": "SIGKILL"})
    result = await invoker.invoke(killed)
    assert json.loads(result.payload)["errorMessage"] == (
        f"RequestId: {killed.request_id} Error: Runtime exited with error: signal: killed")


async def test_next_invocation_after_a_crash_succeeds(make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("counter")
    first = json.loads((await invoker.invoke(invocation())).payload)
    import os
    import signal

    os.kill(first["pid"], signal.SIGKILL)  # dies while idle
    await until(lambda: process_gone(first["pid"]), what="the worker to die")
    second = await invoker.invoke(invocation())
    assert second.ok, second.payload
    assert json.loads(second.payload)["pid"] != first["pid"]
    assert json.loads(second.payload)["count"] == 1


async def test_concurrent_invocations_get_distinct_environments(
    make_invoker: MakeInvoker, metrics: Metrics
) -> None:
    invoker = await make_invoker("sleep", timeout=30)
    results = await asyncio.gather(*(invoker.invoke(invocation({"seconds": 0.5})) for _ in range(3)))
    assert all(r.ok for r in results), [r.payload for r in results]
    assert len({json.loads(r.payload)["pid"] for r in results}) == 3
    assert gauge(metrics, "sleep", "idle") == 3


async def test_concurrency_bounds_the_number_of_environments(make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("sleep", timeout=30, concurrency=2)
    results = await asyncio.gather(*(invoker.invoke(invocation({"seconds": 0.3})) for _ in range(4)))
    assert all(r.ok for r in results)
    assert len({json.loads(r.payload)["pid"] for r in results}) <= 2


async def test_idle_environments_are_reaped(make_invoker: MakeInvoker, metrics: Metrics) -> None:
    invoker = await make_invoker("counter", idle_timeout=1)
    pid = json.loads((await invoker.invoke(invocation())).payload)["pid"]
    await until(lambda: gauge(metrics, "counter", "idle") == 0 and process_gone(pid),
                what="the idle environment to be reaped")
    again = json.loads((await invoker.invoke(invocation())).payload)
    assert again["pid"] != pid


async def test_provisioned_environments_are_warm_at_start_and_replaced(
    make_invoker: MakeInvoker, metrics: Metrics
) -> None:
    invoker = await make_invoker("context", provisioned=2, idle_timeout=1)
    assert gauge(metrics, "context", "idle") == 2
    result = await invoker.invoke(invocation())
    ctx = json.loads(result.payload)
    assert ctx["env"]["AWS_LAMBDA_INITIALIZATION_TYPE"] == "provisioned-concurrency"
    assert "Init Duration" not in result.logs
    assert metrics.registry.get_sample_value("router_cold_starts_total", {"function": "context"}) in (None, 0)
    # provisioned environments are not reaped when idle; one that dies is replaced
    import os
    import signal

    os.kill(ctx["pid"], signal.SIGKILL)
    await until(lambda: process_gone(ctx["pid"]), what="the worker to die")
    await until(
        lambda: gauge(metrics, "context", "idle") == 2 and ctx["pid"] not in environment_pids(invoker),
        what="the provisioned environment to be replaced")


async def test_close_leaves_no_process_behind(make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("sleep", timeout=30, provisioned=1)
    running = asyncio.create_task(invoker.invoke(invocation({"seconds": 30, "spawn_child": True})))
    await until(lambda: len(environment_pids(invoker)) >= 1 and any(
        env.state == "busy" for env in invoker.pool._all), what="a busy environment")
    pids = environment_pids(invoker)
    await invoker.close()
    result = await running
    assert result.outcome is Outcome.ERROR
    assert all(process_gone(pid) for pid in pids)
    match = re.search(r"child pid (\d+)", result.logs)
    if match:
        await until(lambda: process_gone(int(match.group(1))), what="the handler's child to die")
