"""Max Memory Used: the router's own bootstraps send their worker's peak (``VmHWM``) and thread count with
each result, read from their own /proc/self/status, so the router does not read the file on its event
loop after every invocation; without those figures (another runtime's bootstrap, a malformed value) the
router reads the file itself."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest

from router.invocation import Result
from router.runtime.memory import CgroupV2, ProcStatus

from .conftest import MakeInvoker, invocation
from .node_support import NODE_RUNTIME, require_node


def _used(result: Result) -> int:
    report = next(line for line in result.logs.splitlines() if line.startswith("REPORT"))
    match = re.search(r"Max Memory Used: (\d+) MB", report)
    assert match, report
    return int(match.group(1))


@pytest.fixture
def own_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pids whose status file the router read itself."""
    reads: list[int] = []
    original = ProcStatus._own

    def spy(self: ProcStatus) -> tuple[int, int]:
        reads.append(self.pid)
        return original(self)

    monkeypatch.setattr(ProcStatus, "_own", spy)
    return reads


@pytest.mark.skipif(
    CgroupV2.detect() is not None,
    reason="the router runs in a delegated cgroup v2 here: Max Memory Used is the cgroup's memory.peak, "
           "and what the worker sends is not used")
@pytest.mark.parametrize("kind", ["exec", "fork", "node"])
async def test_the_peak_of_an_invocation_comes_from_the_worker_itself(
    kind: str, make_invoker: MakeInvoker, make_forked: MakeInvoker, own_reads: list[int]
) -> None:
    if kind == "node":
        require_node()
        invoker = await make_invoker("node_basic", name="memory-node", runtime=NODE_RUNTIME,
                                     handler="index.memory", memory=512)
    elif kind == "fork":  # the worker's figures, not its template's (whose status it must not read)
        invoker = await make_forked("memory_hog", memory=512)
    else:
        invoker = await make_invoker("memory_hog", fork_start=False, memory=512)
    small = await invoker.invoke(invocation({"mb": 1}))
    assert small.ok, small.payload
    big = await invoker.invoke(invocation({"mb": 160}))  # held during the call, let go after it
    assert big.ok, big.payload
    assert _used(small) < 160 <= _used(big)
    again = await invoker.invoke(invocation({"mb": 1}))
    assert _used(again) >= 160  # a peak: it stays
    assert own_reads == []


@pytest.fixture
def sleeper() -> Iterator[int]:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_reported_figures_are_used_and_bad_ones_are_replaced_by_a_read(
    sleeper: int, own_reads: list[int]
) -> None:
    status = ProcStatus(sleeper)
    try:
        assert status.max_memory_mb(b"204800 1") == 200
        assert status.max_memory_mb(b"204801 1") == 201  # kB rounded up to MB
        assert own_reads == []
        read = status.max_memory_mb()
        assert read is not None
        assert 0 < read < 100  # `sleep`'s own few MB
        for bad in (b"", b"204800", b"204800 1 2", b"-1 1", b"200 MB", b"\xff 1"):
            own_reads.clear()
            assert status.max_memory_mb(bad) == read, bad
            assert own_reads == [sleeper], bad
    finally:
        status.close()
