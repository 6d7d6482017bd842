"""Environments sized to the machine: waiting for a warm environment while the CPUs are saturated, starting
more while they are not, the bounded wait, the router-wide memory budget (reaping idle environments of
other functions, throttling when no room comes), and the CPU verdict read from the kernel."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from router.invocation import Outcome, Result
from router.invokers.local import LocalInvoker
from router.metrics import Metrics
from router.runtime import pool as pool_module
from router.runtime.capacity import Capacity, CpuLoad, MemoryBudget
from tests.waiting import until

from .conftest import MakeInvoker, invocation, read_results_late
from .node_support import NODE_RUNTIME, require_node


class FakeCpu:
    """A CPU verdict the test sets."""

    def __init__(self, saturated: bool) -> None:
        self.value = saturated

    def saturated(self) -> bool:
        return self.value


class WindowCpu(FakeCpu):
    """A verdict with sampling windows (``generation``), as ``CpuLoad`` gives: followed once per window."""

    def __init__(self, saturated: bool) -> None:
        super().__init__(saturated)
        self.generation = 0


def payload(result: Result) -> Any:
    return json.loads(result.payload)


def started(tmp_path: Path) -> int:
    return len(list(tmp_path.glob("started-*")))


async def gated_calls(invoker: LocalInvoker, tmp_path: Path, n: int, *, spin: bool = False
                      ) -> list[asyncio.Task[Result]]:
    event = {"dir": str(tmp_path), "gate": str(tmp_path / "gate"), "spin": spin}
    return [asyncio.create_task(invoker.invoke(invocation(event))) for _ in range(n)]


def waits(metrics: Metrics, function: str, reason: str) -> float:
    return metrics.registry.get_sample_value(
        "router_environment_waits_total", {"function": function, "reason": reason}) or 0.0


async def test_saturated_cpus_make_invocations_wait_for_a_warm_environment(
    make_invoker: MakeInvoker, metrics: Metrics, tmp_path: Path
) -> None:
    # A CPU-bound handler (it spins) on saturated CPUs: another environment would add nothing. (The
    # verdict's window never changes here: the limit is decided once, whatever the kernel's counters.)
    capacity = Capacity(cpu=WindowCpu(True), environment_wait=30.0, max_starting=1, min_environments=1)
    invoker = await make_invoker("gate", timeout=60, capacity=capacity)
    calls = await gated_calls(invoker, tmp_path, 4, spin=True)
    await until(lambda: started(tmp_path) == 1, what="the first invocation to start")
    await until(lambda: waits(metrics, "gate", "cpu") + waits(metrics, "gate", "starting") == 3,
                what="three invocations to wait")
    # Each waiter looks again every RECHECK (0.1 s); after several looks the queue still holds three.
    pool = invoker.pool
    looks = 0
    gate = pool._cpu_gate

    def counted(*, for_waiter: bool = False) -> str | None:
        nonlocal looks
        looks += 1
        return gate(for_waiter=for_waiter)

    pool._cpu_gate = counted  # type: ignore[method-assign]
    await until(lambda: looks >= 9, what="three rechecks of each waiter")
    assert len(pool._waiters) == 3
    (tmp_path / "gate").touch()
    results = await asyncio.gather(*calls)
    assert all(r.ok for r in results), [r.payload for r in results]
    assert len({payload(r)["pid"] for r in results}) == 1  # one environment served all four
    assert not pool._waiters
    value = metrics.registry.get_sample_value
    assert value("router_cold_starts_total", {"function": "gate"}) == 1
    assert value("router_environment_wait_seconds_count", {"function": "gate"}) == 3


async def _one_environment_and_waiters(make_invoker: MakeInvoker, metrics: Metrics, tmp_path: Path, n: int
                                       ) -> tuple[LocalInvoker, list[asyncio.Task[Result]]]:
    """One environment on saturated CPUs running a gated invocation, and ``n`` more waiting for it, each
    queued after the one before (so their order is known)."""
    capacity = Capacity(cpu=WindowCpu(True), environment_wait=30.0, max_starting=1, min_environments=1)
    invoker = await make_invoker("gate", timeout=60, capacity=capacity)
    event = {"dir": str(tmp_path), "gate": str(tmp_path / "gate")}
    calls = [asyncio.create_task(invoker.invoke(invocation(event)))]
    await until(lambda: started(tmp_path) == 1, what="the first invocation to start")
    for i in range(n):
        calls.append(asyncio.create_task(invoker.invoke(invocation(event))))
        await until(lambda i=i: waits(metrics, "gate", "cpu") + waits(metrics, "gate", "starting") == i + 1,
                    what=f"invocation {i + 2} to wait")
    return invoker, calls


async def test_a_freed_environment_goes_straight_to_the_longest_waiting_invocation(
    make_invoker: MakeInvoker, metrics: Metrics, tmp_path: Path
) -> None:
    invoker, calls = await _one_environment_and_waiters(make_invoker, metrics, tmp_path, 3)
    pool = invoker.pool
    states: list[str] = []
    set_state = pool._set_state

    def recorded(env: Any, state: Any) -> None:
        states.append(state.value)
        set_state(env, state)

    pool._set_state = recorded  # type: ignore[method-assign]
    finished: list[int] = []
    for i, call in enumerate(calls):
        call.add_done_callback(lambda _, i=i: finished.append(i))
    (tmp_path / "gate").touch()
    results = await asyncio.gather(*calls)
    assert all(r.ok for r in results), [r.payload for r in results]
    assert finished == [0, 1, 2, 3]  # first come, first served
    # Each freed slot went to the next waiter as it was: the environment stayed busy until the last.
    assert states == ["idle"], states
    assert pool._in_flight == 0
    assert not pool._waiters
    assert value_of(metrics, "router_environment_wait_seconds_count", function="gate") == 3


async def test_a_waiter_cancelled_with_a_slot_in_hand_passes_it_on(
    make_invoker: MakeInvoker, metrics: Metrics, tmp_path: Path
) -> None:
    invoker, calls = await _one_environment_and_waiters(make_invoker, metrics, tmp_path, 2)
    pool = invoker.pool
    hand_over = pool._hand_over

    def then_cancel(env: Any) -> bool:
        handed = hand_over(env)
        if handed and not calls[1].done():
            calls[1].cancel()  # its caller gives up before it takes the slot
        return handed

    pool._hand_over = then_cancel  # type: ignore[method-assign]
    (tmp_path / "gate").touch()
    first, third = await calls[0], await calls[2]
    assert first.ok, first.payload
    assert third.ok, third.payload
    assert payload(first)["pid"] == payload(third)["pid"]  # the slot reached the third, in the same one
    assert calls[1].cancelled()
    assert pool._in_flight == 0
    assert not pool._waiters
    assert all(env.in_flight == 0 for env in pool._live)
    assert (await invoker.invoke(invocation({"dir": str(tmp_path), "gate": str(tmp_path / "gate")}))).ok


def value_of(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_idle_cpus_start_an_environment_per_concurrent_invocation(
    make_invoker: MakeInvoker, metrics: Metrics, tmp_path: Path
) -> None:
    # Environments waiting on I/O leave the CPUs idle: more start (as many at once as may start), up to
    # one per invocation, as on Lambda.
    capacity = Capacity(cpu=FakeCpu(False), environment_wait=30.0, max_starting=2, min_environments=1)
    invoker = await make_invoker("gate", timeout=60, capacity=capacity)
    calls = await gated_calls(invoker, tmp_path, 5)
    await until(lambda: started(tmp_path) == 5, what="five invocations running at once")
    (tmp_path / "gate").touch()
    results = await asyncio.gather(*calls)
    assert len({payload(r)["pid"] for r in results}) == 5
    assert waits(metrics, "gate", "cpu") == 0  # some waited for the limit to grow ("scaling"), none for CPU


async def test_the_limit_holds_under_saturation_and_grows_when_the_cpus_are_idle(
    make_invoker: MakeInvoker, metrics: Metrics, tmp_path: Path
) -> None:
    cpu = WindowCpu(True)
    capacity = Capacity(cpu=cpu, environment_wait=30.0, max_starting=2, min_environments=2)
    invoker = await make_invoker("gate", timeout=60, capacity=capacity)
    calls = await gated_calls(invoker, tmp_path, 6)
    await until(lambda: started(tmp_path) == 2, what="two invocations (one per CPU) to run")
    await until(lambda: waits(metrics, "gate", "cpu") == 4, what="the other four to wait for the CPUs")
    assert len(invoker.pool._live) == 2

    async def windows() -> None:
        while True:
            cpu.generation += 1
            await asyncio.sleep(0.02)

    cpu.value = False  # e.g. the handlers wait on I/O: the CPUs idle
    ticker = asyncio.create_task(windows())
    try:
        await until(lambda: started(tmp_path) == 6, what="the limit to grow to all six")
    finally:
        ticker.cancel()
    (tmp_path / "gate").touch()
    results = await asyncio.gather(*calls)
    assert all(r.ok for r in results)
    assert len({payload(r)["pid"] for r in results}) == 6


async def test_environments_waiting_on_io_grow_even_on_a_busy_machine(
    make_invoker: MakeInvoker, metrics: Metrics, tmp_path: Path
) -> None:
    # The CPUs are saturated by other work, but this function's environments sleep in their handlers
    # (the gate handler polls a file: waiting on I/O): another environment adds throughput.
    cpu = WindowCpu(True)
    capacity = Capacity(cpu=cpu, environment_wait=30.0, max_starting=1, min_environments=1)
    invoker = await make_invoker("gate", timeout=60, capacity=capacity)
    calls = await gated_calls(invoker, tmp_path, 4)

    async def windows() -> None:
        while True:
            await asyncio.sleep(0.05)
            cpu.generation += 1

    ticker = asyncio.create_task(windows())
    try:
        await until(lambda: started(tmp_path) == 4, what="all four to run")
    finally:
        ticker.cancel()
    (tmp_path / "gate").touch()
    results = await asyncio.gather(*calls)
    assert len({payload(r)["pid"] for r in results}) == 4


async def test_a_limit_grown_while_invocations_queue_starts_the_environments_it_allows(
    make_invoker: MakeInvoker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Callers that invoke again as soon as a result comes, each invocation sleeping shortly: the waiters
    are handed the environments that free up, and new invocations queue behind them. When the limit
    then grows (the CPUs are idle), a waiter must be woken to start the environment it allows: left to
    its recheck, it is handed a freed environment first, and the pool stays at what it had when the
    invocations began to queue (bench scenario 13: 16 Node environments for 32 connections, 277 req/s of
    640; here, before the fix, 2 environments with the limit grown past them). The recheck is put out of
    reach so that only that wake-up can start them."""
    monkeypatch.setattr(pool_module, "RECHECK", 60.0)
    cpu = WindowCpu(False)
    capacity = Capacity(cpu=cpu, environment_wait=60.0, max_starting=2, min_environments=2)
    invoker = await make_invoker("sleep", timeout=60, capacity=capacity)
    pool = invoker.pool
    stop = asyncio.Event()
    callers = 8

    async def caller() -> None:
        while not stop.is_set():
            result = await invoker.invoke(invocation({"seconds": 0.02}))
            assert result.ok, result.payload

    async def windows() -> None:
        while not stop.is_set():
            await asyncio.sleep(0.02)
            cpu.generation += 1

    tasks = [asyncio.create_task(caller()) for _ in range(callers)]
    ticker: asyncio.Task[None] | None = None
    try:
        # No new CPU window yet: the limit stays at one environment per CPU and the rest queue.
        await until(lambda: len(pool._live) == 2 and len(pool._waiters) >= callers - 3,
                    what="two environments running and the other callers queued")
        ticker = asyncio.create_task(windows())
        # The limit grows to the demand a release sees (the caller whose result just came is not asking
        # yet), so with callers that ask again at once one of them may keep waiting its turn: 7 of 8.
        await until(lambda: len(pool._live) >= callers - 1, deadline=20.0,
                    what="an environment for (nearly) each of the eight callers")
    finally:
        stop.set()
        await asyncio.gather(*tasks, *([ticker] if ticker is not None else []))
    assert len(pool._live) <= callers  # not more than the demand


@pytest.mark.parametrize("runtime", ["python", "node"])
async def test_a_slow_router_does_not_make_quick_handlers_look_like_waiting_on_io(
    make_invoker: MakeInvoker, monkeypatch: pytest.MonkeyPatch, runtime: str
) -> None:
    """A trivial handler on saturated CPUs while the router is slow to take in results (each waits 5 ms
    here, as for a busy event loop serving many connections): by the router's clock the environment
    holds every invocation for milliseconds while its process sleeps, which is what waiting on I/O looks
    like. Its runtime's own clock (``Router-Duration``) says the handler took a fraction of that: the
    environment is CPU-light and another would add nothing, so the pool stays at one environment."""
    if runtime == "node":
        require_node()
        fields: dict[str, Any] = {"runtime": NODE_RUNTIME, "handler": "index.counter"}
        code = "node_basic"
    else:
        fields, code = {}, "counter"
    read_results_late(monkeypatch, 0.005)
    cpu = WindowCpu(True)
    capacity = Capacity(cpu=cpu, environment_wait=30.0, max_starting=1, min_environments=1)
    invoker = await make_invoker(code, timeout=60, capacity=capacity, **fields)
    durations: list[float] = []
    pids: set[int] = set()
    done = 0

    async def caller() -> None:
        nonlocal done
        for _ in range(20):
            result = await invoker.invoke(invocation({}))
            assert result.ok, result.payload
            pids.add(payload(result)["pid"])
            if result.runtime_duration is not None:
                durations.append(result.runtime_duration)
            done += 1
            if done % 8 == 0:
                cpu.generation += 1  # a new CPU window every 8 results: the limit follows the verdict

    # 32 callers: ~0.16 s from queueing to running at one environment, past the waiters' RECHECK (0.1 s),
    # when they look at the CPU gate again (where a grown limit would start another environment)
    await asyncio.gather(*(caller() for _ in range(32)))
    assert len(durations) == 640, "the runtime reports its own duration with every result"
    assert len(pids) == 1, f"{len(pids)} environments for a CPU-light handler on saturated CPUs"


async def test_a_wait_past_its_bound_starts_an_environment_anyway(
    make_invoker: MakeInvoker, metrics: Metrics, tmp_path: Path
) -> None:
    capacity = Capacity(cpu=FakeCpu(True), environment_wait=0.2, max_starting=3, min_environments=1)
    invoker = await make_invoker("gate", timeout=60, capacity=capacity)
    calls = await gated_calls(invoker, tmp_path, 3)
    await until(lambda: started(tmp_path) == 3, what="all three to run after the bounded wait")
    (tmp_path / "gate").touch()
    results = await asyncio.gather(*calls)
    assert len({payload(r)["pid"] for r in results}) == 3
    assert waits(metrics, "gate", "cpu") == 2


async def test_a_spent_memory_budget_throttles_after_the_wait(
    make_invoker: MakeInvoker, metrics: Metrics, tmp_path: Path
) -> None:
    budget = MemoryBudget(256)
    capacity = Capacity(budget=budget, environment_wait=0.2, min_environments=1)  # no CPU sizing
    invoker = await make_invoker("gate", timeout=60, memory=128, capacity=capacity)
    calls = await gated_calls(invoker, tmp_path, 3)
    await until(lambda: sum(c.done() for c in calls) == 1, what="the invocation with no room to end")
    throttled = next(c.result() for c in calls if c.done())
    assert throttled.outcome is Outcome.THROTTLED
    assert throttled.throttle
    assert payload(throttled)["errorType"] == "TooManyRequestsException"
    assert "limits.environment_memory" in payload(throttled)["errorMessage"]
    assert budget.reserved == 256
    (tmp_path / "gate").touch()
    results = [r for r in await asyncio.gather(*calls) if r is not throttled]
    assert all(r.ok for r in results)
    assert waits(metrics, "gate", "memory") == 1
    assert metrics.registry.get_sample_value("router_environment_memory_reserved_bytes") == 256 * 2**20


async def test_idle_environments_of_another_function_are_reaped_to_make_room(
    make_invoker: MakeInvoker, metrics: Metrics
) -> None:
    budget = MemoryBudget(256)
    capacity = Capacity(cpu=FakeCpu(False), budget=budget, environment_wait=5.0, min_environments=1)
    first = await make_invoker("counter", name="first", memory=256, capacity=capacity)
    second = await make_invoker("echo", name="second", memory=128, capacity=capacity)
    assert (await first.invoke(invocation())).ok
    assert budget.reserved == 256  # first's environment is idle now, holding its memory
    result = await second.invoke(invocation({"hello": 1}))
    assert result.ok, result.payload
    assert not first.pool._live  # reaped to make room
    assert budget.reserved == 128
    assert waits(metrics, "second", "memory") == 0  # reaping made room at once, no wait


async def test_provisioned_environments_start_even_over_the_budget(make_invoker: MakeInvoker) -> None:
    budget = MemoryBudget(128)
    capacity = Capacity(cpu=FakeCpu(False), budget=budget, environment_wait=0.2, min_environments=1)
    invoker = await make_invoker("counter", memory=128, provisioned=2, capacity=capacity)
    await until(lambda: len(invoker.pool._available) == 2, what="two provisioned environments")
    assert budget.reserved == 256
    assert (await invoker.invoke(invocation())).ok


async def test_closing_a_pool_gives_its_memory_back(make_invoker: MakeInvoker) -> None:
    budget = MemoryBudget(1024)
    capacity = Capacity(budget=budget)
    invoker = await make_invoker("counter", memory=256, capacity=capacity)
    assert (await invoker.invoke(invocation())).ok
    assert budget.reserved == 256
    await invoker.close()
    assert budget.reserved == 0


def test_memory_budget_reaps_the_least_recently_used_first() -> None:
    budget = MemoryBudget(300)
    reaped: list[str] = []

    def pool(name: str, idle_since: float) -> Any:
        def reap() -> int:
            reaped.append(name)
            budget.release(100)
            return 100
        return lambda: None if name in reaped else (idle_since, reap)

    budget.reserve(300)
    budget.add_reaper(pool("newer", 20.0))
    budget.add_reaper(pool("older", 10.0))
    assert budget.try_reserve(100)
    assert reaped == ["older"]
    assert budget.try_reserve(100)
    assert reaped == ["older", "newer"]
    assert not budget.try_reserve(200)  # nothing idle is left


def test_memory_pressure_reaps_one_idle_environment_per_start() -> None:
    reaped: list[int] = []
    budget = MemoryBudget(10_000, floor_mb=500, available=lambda: 400)
    budget.add_reaper(lambda: (1.0, lambda: reaped.append(1) or 128))
    assert budget.try_reserve(128)  # the machine is short: one idle environment goes, the start proceeds
    assert reaped == [1]


async def test_busy_cpus_are_seen_as_saturated() -> None:
    # One spinning process per usable CPU: the kernel's counters must show the CPUs saturated.
    load = CpuLoad(window=0.05)
    spinners = [await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass")
                for _ in range(len(os.sched_getaffinity(0)))]
    try:
        await until(load.saturated, deadline=20.0, what="the CPUs to be seen saturated")
    finally:
        for p in spinners:
            p.kill()
            await p.wait()


def test_the_router_stays_saturated_through_windows_a_little_under_the_threshold() -> None:
    # The router's own CPU a window of 0.1 s (a fake process clock): an event loop that is the
    # bottleneck shows some windows under 0.9; the verdict holds until one under ROUTER_HOLD (0.8).
    now, used = [0.0], [0.0]
    load = CpuLoad(window=0.05, clock=lambda: now[0], own_cpu=lambda: used[0])  # each step a window
    verdicts = []
    for share in (0.95, 0.86, 0.82, 0.7, 0.86, 0.92, 0.88):
        now[0] += 0.1
        used[0] += share * 0.1
        load.saturated()
        verdicts.append(load.router_saturated)
    assert verdicts == [True, True, True, False, False, True, True]


async def test_the_limit_grows_to_the_demand_a_release_sees_not_one_more(make_invoker: MakeInvoker) -> None:
    """At a new CPU window with the CPUs idle, the limit grows to the demand: the invocations running and
    those waiting, plus the one asking. An ending invocation asks for the longest waiter, which the
    waiters count already: one environment more would start than invocations need."""
    cpu = WindowCpu(False)
    capacity = Capacity(cpu=cpu, environment_wait=30.0, max_starting=4, min_environments=1)
    invoker = await make_invoker("gate", timeout=60, capacity=capacity)
    pool = invoker.pool
    waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    pool._waiters.append(waiter)
    try:
        for asking, for_waiter, demand in (("a new invocation", False, 3), ("a release", True, 2)):
            pool._in_flight, pool._limit = 1, 1.0
            cpu.generation += 1  # a new window: the limit follows the verdict
            pool._cpu_gate(for_waiter=for_waiter)
            assert pool._limit == demand, asking
    finally:
        pool._waiters.clear()
        pool._in_flight = 0


async def test_a_limit_the_invocations_did_not_reach_does_not_grow(make_invoker: MakeInvoker) -> None:
    """A trivial handler's environments, fed as fast as a busy router can: two run, the other callers
    wait their turn and are handed a freed environment at once, so the limit (4 here) is never what
    holds them. Windows with the CPUs a little under the threshold came often; in each the limit grew
    by ``max_starting`` towards the demand (33), and the next burst of requests after a pause started
    that many environments at once (20 for a Node handler that 2 serve: bench scenario 12). It grows
    only once an invocation found it reached."""
    cpu = WindowCpu(False)
    capacity = Capacity(cpu=cpu, environment_wait=30.0, max_starting=2, min_environments=2)
    invoker = await make_invoker("gate", timeout=60, capacity=capacity)
    pool = invoker.pool
    loop = asyncio.get_running_loop()
    pool._waiters.extend(loop.create_future() for _ in range(30))
    try:
        pool._in_flight, pool._limit = 2, 4.0
        for _ in range(10):  # ten windows, the CPUs not saturated, two running, thirty waiting
            cpu.generation += 1
            assert pool._cpu_gate() is None
        assert pool._limit == 4.0
        pool._in_flight = 4  # now an invocation finds the limit reached: the next window grows it
        assert pool._cpu_gate() == "scaling"
        pool._in_flight = 2
        cpu.generation += 1
        pool._cpu_gate()
        assert pool._limit == 6.0
        cpu.generation += 1  # and not again in the window after, which did not reach it
        pool._cpu_gate()
        assert pool._limit == 6.0
    finally:
        pool._waiters.clear()
        pool._in_flight = 0
