"""Several invocations per environment (``per_environment_concurrency``, Lambda Managed Instances'
PerExecutionEnvironmentMaxConcurrency): Node runs them concurrently in one process, Python in one worker
process each sharing the environment's /tmp; output attributed by request id, a timeout or a worker's
death failing only its own invocation, and the slots of the environment."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from router.invocation import Outcome, Result
from tests.waiting import until

from .conftest import MakeInvoker, environment_pids, invocation
from .node_support import NODE_RUNTIME, require_node


@pytest.fixture
def node() -> None:
    require_node()


def payload(result: Result) -> Any:
    return json.loads(result.payload)


async def test_one_environment_runs_its_slots_at_once(make_invoker: MakeInvoker, node: None) -> None:
    # The barrier handler only returns once 4 invocations run at the same time: in one process.
    invoker = await make_invoker("node_concurrent", runtime=NODE_RUNTIME, handler="index.barrier",
                                 per_environment_concurrency=4, timeout=20)
    results = await asyncio.gather(*(invoker.invoke(invocation({"expect": 4, "n": n})) for n in range(4)))
    assert all(r.ok for r in results), [r.payload for r in results]
    assert sorted(payload(r)["n"] for r in results) == [0, 1, 2, 3]
    assert len(environment_pids(invoker)) == 1
    for r in results:  # each invocation's log tail holds its own line, found by its request id
        rid = payload(r)["requestId"]
        own = [line for line in r.logs.splitlines() if "\tINFO\tdone" in line]
        assert len(own) == 1
        assert rid in own[0]


async def test_the_environment_sees_its_max_concurrency(make_invoker: MakeInvoker, node: None) -> None:
    invoker = await make_invoker("node_basic", runtime=NODE_RUNTIME, handler="index.context",
                                 per_environment_concurrency=3)
    result = await invoker.invoke(invocation())
    assert result.ok, result.payload
    assert payload(result)["env"]["AWS_LAMBDA_MAX_CONCURRENCY"] == "3"


async def test_a_timeout_fails_only_its_own_invocation(make_invoker: MakeInvoker, node: None) -> None:
    # As on Lambda Managed Instances: the environment is not reset for one slow invocation; the others
    # go on, and its slot is freed when its handler returns after all.
    invoker = await make_invoker("node_basic", runtime=NODE_RUNTIME, handler="index.sleep",
                                 per_environment_concurrency=2, timeout=1)
    slow = asyncio.create_task(invoker.invoke(invocation({"seconds": 2.5})))
    fast = await invoker.invoke(invocation({"seconds": 0.01}))
    assert fast.ok, fast.payload
    timed_out = await slow
    assert timed_out.outcome is Outcome.TIMEOUT
    assert payload(timed_out)["errorMessage"].endswith("Task timed out after 1.00 seconds")
    (env,) = invoker.pool._live
    assert env.alive
    assert env.in_flight == 1  # the slow handler still runs
    await until(lambda: env.in_flight == 0, deadline=10, what="the late handler to return")
    again = await invoker.invoke(invocation({"seconds": 0.01}))
    assert again.ok
    assert environment_pids(invoker) == {env.pid}


async def test_an_environment_whose_every_slot_timed_out_is_recycled(
    make_invoker: MakeInvoker, node: None
) -> None:
    invoker = await make_invoker("node_basic", runtime=NODE_RUNTIME, handler="index.hangs",
                                 per_environment_concurrency=2, timeout=1)
    results = await asyncio.gather(*(invoker.invoke(invocation()) for _ in range(2)))
    assert [r.outcome for r in results] == [Outcome.TIMEOUT, Outcome.TIMEOUT]
    await until(lambda: not invoker.pool._live, what="the stuck environment to be taken out of service")


async def test_python_runs_its_slots_in_processes_sharing_the_environments_tmp(
    make_invoker: MakeInvoker, tmp_path: Path
) -> None:
    invoker = await make_invoker("gate", per_environment_concurrency=3, timeout=60)
    event = {"dir": str(tmp_path), "gate": str(tmp_path / "gate")}
    calls = [asyncio.create_task(invoker.invoke(invocation(event))) for _ in range(3)]
    await until(lambda: len(list(tmp_path.glob("started-*"))) == 3, what="three invocations at once")
    assert len(invoker.pool._live) == 1  # in one environment
    (tmp_path / "gate").touch()
    results = [payload(r) for r in await asyncio.gather(*calls)]
    assert len({r["pid"] for r in results}) == 3  # one worker process each
    assert len({r["tmp"] for r in results}) == 1  # the environment's /tmp, shared


async def test_python_workers_see_the_max_concurrency(make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("context", per_environment_concurrency=2)
    result = await invoker.invoke(invocation())
    assert result.ok, result.payload
    assert "AWS_LAMBDA_MAX_CONCURRENCY" in payload(result)["all_env_keys"]


async def test_a_python_worker_that_dies_fails_only_its_own_invocation(
    make_invoker: MakeInvoker, tmp_path: Path
) -> None:
    # Three runtime workers: two deaths in a row stay under the supervisor's rule that ends an
    # environment whose every worker died within a second (with two workers, that rule ended it right
    # after the second death, and this test passed only while the router had not seen that exit yet).
    invoker = await make_invoker("exit", per_environment_concurrency=3)
    died = await invoker.invoke(invocation({"code": 3}))
    assert payload(died)["errorType"] == "Runtime.ExitError"
    assert "the runtime worker running the invocation exited" in payload(died)["errorMessage"]
    (env,) = invoker.pool._live
    assert env.alive  # the environment goes on: its supervisor starts another worker
    again = await invoker.invoke(invocation({"code": 4}))
    assert payload(again)["errorType"] == "Runtime.ExitError"
    assert invoker.pool._live == {env}
