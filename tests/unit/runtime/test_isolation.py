"""Isolation of execution environments, with real workers: what an invocation starts ends with its
environment, Max Memory Used covers the processes it forked, and only the environment's own processes
may use its Runtime API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from router.errors import EnvironmentStartError
from router.invocation import Outcome, Result
from router.invokers.local import LocalInvoker
from router.runtime.api import PendingEvent, Reply, RuntimeApiServer
from router.runtime.memory import CgroupV2
from tests.waiting import until

from .conftest import MakeInvoker, invocation, process_gone
from .node_support import NODE_RUNTIME, require_node
from .template_support import needs_fork

STRANGER = """
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=20)
s.sendall(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
sys.stdout.write(s.recv(65536).decode("latin-1"))
"""


def _pids(result: Result) -> dict[str, Any]:
    match = re.search(r"pids (\{.*\})", result.logs)
    assert match, result.logs
    return dict(json.loads(match.group(1)))


@pytest.fixture
def leftovers() -> Iterator[set[int]]:
    """Pids a test saw; any still running at the end is killed (a failing test leaves nothing)."""
    pids: set[int] = set()
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _provided(**fields: Any) -> dict[str, Any]:
    pytest.importorskip("awslambdaric", reason="the provided runtime test runs awslambdaric")
    return {"runtime": "provided", "handler": "app.handler", "environment": {"PYTHON": sys.executable},
            **fields}


async def _make(kind: str, make_invoker: MakeInvoker, make_forked: MakeInvoker,
                **fields: Any) -> LocalInvoker:
    if kind == "node":
        require_node()
        return await make_invoker("node_escape", name="escape-node", runtime=NODE_RUNTIME,
                                  handler="index.handler", **fields)
    if kind == "fork":
        return await make_forked("escape", **fields)
    if kind == "provided":
        return await make_invoker("escape", name="escape-provided", **_provided(**fields))
    return await make_invoker("escape", fork_start=False, **fields)


@needs_fork
@pytest.mark.parametrize("kind", ["exec", "fork", "provided", "node"])
async def test_a_double_forked_daemon_ends_with_its_timed_out_environment(
    kind: str, make_invoker: MakeInvoker, make_forked: MakeInvoker, leftovers: set[int]
) -> None:
    invoker = await _make(kind, make_invoker, make_forked, timeout=2)
    result = await invoker.invoke(invocation({"daemon": True, "child": True, "sleep": 60}))
    assert result.outcome is Outcome.TIMEOUT
    pids = _pids(result)
    leftovers.update((pids["daemon"], pids["child"]))
    await until(lambda: process_gone(pids["daemon"]), what="the setsid daemon to end with the environment")
    await until(lambda: process_gone(pids["child"]), what="its child to end with its environment")


@needs_fork
@pytest.mark.parametrize("kind", ["exec", "fork", "node"])
async def test_an_environment_closed_after_its_worker_exits_on_sigterm_takes_its_daemon(
    kind: str, make_invoker: MakeInvoker, make_forked: MakeInvoker, leftovers: set[int]
) -> None:
    invoker = await _make(kind, make_invoker, make_forked, timeout=10)
    result = await invoker.invoke(invocation({"daemon": True}))
    assert result.ok, result.payload
    daemon = _pids(result)["daemon"]
    leftovers.add(daemon)
    await invoker.close()  # SIGTERM ends the worker at once; the daemon ignores nothing but is elsewhere
    await until(lambda: process_gone(daemon), what="the daemon to end with its closed environment")


@needs_fork
@pytest.mark.parametrize("kind", ["exec", "fork"])
async def test_a_daemon_seen_in_an_earlier_invocation_ends_when_the_worker_exits_on_its_own(
    kind: str, make_invoker: MakeInvoker, make_forked: MakeInvoker, leftovers: set[int]
) -> None:
    invoker = await _make(kind, make_invoker, make_forked, timeout=10)
    first = await invoker.invoke(invocation({"daemon": True}))
    assert first.ok, first.payload
    daemon = _pids(first)["daemon"]
    leftovers.add(daemon)
    second = await invoker.invoke(invocation({"exit": True}))
    assert json.loads(second.payload)["errorType"] == "Runtime.ExitError"
    await until(lambda: process_gone(daemon), what="the daemon to end with its environment")


@needs_fork
@pytest.mark.parametrize("kind", ["exec", "fork"])
async def test_max_memory_used_covers_the_children_a_handler_forked(
    kind: str, make_invoker: MakeInvoker, make_forked: MakeInvoker, leftovers: set[int]
) -> None:
    # Within the limit even where a cgroup makes it cover the whole environment.
    invoker = await _make(kind, make_invoker, make_forked, memory=512, timeout=30)
    result = await invoker.invoke(invocation({"holders": 4, "mb": 50}))
    assert result.ok, result.payload
    leftovers.update(_pids(result)["holders"])
    report = next(line for line in result.logs.splitlines() if line.startswith("REPORT"))
    used = int(re.search(r"Max Memory Used: (\d+) MB", report).group(1))  # type: ignore[union-attr]
    assert used >= 4 * 50, report  # each child holds 50 MB: the environment holds them all


needs_cgroup = pytest.mark.skipif(
    CgroupV2.detect() is None,
    reason="kernel feature missing here: the router's cgroup is not a writable cgroup v2 that delegates "
           "the memory controller (see /proc/self/cgroup), so memory is limited per process")


@needs_cgroup
async def test_with_a_delegated_cgroup_the_memory_limit_covers_the_children(
    make_invoker: MakeInvoker, leftovers: set[int]
) -> None:
    invoker = await make_invoker("escape", fork_start=False, memory=128, timeout=10)
    # 200 MB in all, over 128 (per process, under RLIMIT_AS alone, each child's 50 MB would fit): the
    # kernel kills in the cgroup, the handler waits for a child that never answers, the invocation fails.
    result = await invoker.invoke(invocation({"holders": 4, "mb": 50}))
    assert not result.ok, result.payload


async def test_a_process_outside_the_environment_cannot_take_its_events(
    make_invoker: MakeInvoker, leftovers: set[int]
) -> None:
    invoker = await make_invoker("escape", fork_start=False, timeout=5)
    assert (await invoker.invoke(invocation())).ok  # warm: the worker is connected
    env = next(iter(invoker.pool._all))
    channel = env._channel
    assert channel is not None
    busy = asyncio.create_task(invoker.invoke(invocation({"sleep": 1})))
    await until(lambda: bool(channel.running), what="the worker to take the first event")
    # While the worker runs it, another local process asks the port for the next event.
    stranger = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STRANGER, channel.address, stdout=asyncio.subprocess.PIPE)
    assert stranger.pid is not None
    leftovers.add(stranger.pid)
    await until(lambda: bool(channel.waiters) or getattr(channel, "refused", 0) > 0,
                what="the stranger's request")
    assert (await busy).ok
    second = await invoker.invoke(invocation({"sleep": 0}))
    async with asyncio.timeout(30):
        answer, _ = await stranger.communicate()
    assert answer.startswith(b"HTTP/1.1 403 "), answer[:300]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["errorType"] == "AccessDenied"
    assert second.ok, second.payload  # the event went to the environment's worker
    assert json.loads(second.payload)["pid"] == env.pid
    # The router's own process is no more the environment than any other.
    reader, writer = await asyncio.open_connection(*channel.address.rsplit(":", 1))
    writer.write(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(10):
        assert (await reader.readline()).startswith(b"HTTP/1.1 403 ")
    writer.close()
    assert (await invoker.invoke(invocation())).ok


@needs_fork
async def test_a_multi_concurrent_environment_admits_each_of_its_runtime_workers(
    make_invoker: MakeInvoker,
) -> None:
    # Its runtime workers are children of the environment's main process, each with its own connection.
    invoker = await make_invoker("escape", fork_start=False, per_environment_concurrency=3, timeout=10)
    results = await asyncio.gather(*(invoker.invoke(invocation({"sleep": 0.5})) for _ in range(3)))
    assert all(r.ok for r in results), [r.payload for r in results]
    assert len({json.loads(r.payload)["pid"] for r in results}) == 3


async def test_killing_a_tree_stops_what_forks_while_it_is_being_killed(leftovers: set[int]) -> None:
    from router.runtime import proctree

    # A chain that keeps growing (each new process forks the next, up to 200): stopped, then all killed.
    script = ("import os, time\nos.setsid()\nfor _ in range(200):\n    if os.fork():\n        break\n"
              "    time.sleep(0.02)\nwhile True:\n    time.sleep(1)\n")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
    leftovers.add(proc.pid)
    await until(lambda: len(proctree.descendants(proc.pid)) >= 5, what="a few generations")
    killed = proctree.kill_tree(proc.pid)
    leftovers.update(killed)
    await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    await until(lambda: all(process_gone(pid) for pid in killed), what="every process of the tree to end")
    assert len(killed) >= 6


async def test_a_worker_ending_its_own_descendants_keeps_itself(leftovers: set[int]) -> None:
    """What a bootstrap does before exiting for a lost Runtime API: everything below it, not itself."""
    from router.runtime import proctree

    script = ("import os, time\nos.setsid()\nfor _ in range(3):\n    if os.fork():\n        break\n"
              "while True:\n    time.sleep(1)\n")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
    leftovers.add(proc.pid)
    await until(lambda: len(proctree.descendants(proc.pid)) == 3, what="three generations below it")
    killed = proctree.kill_tree(proc.pid, include_root=False)
    leftovers.update(killed)
    assert proc.pid not in killed
    assert len(killed) == 3
    await until(lambda: all(process_gone(pid) for pid in killed), what="the processes below it to end")
    assert not process_gone(proc.pid)
    proc.kill()
    await proc.wait()


async def _next_status(address: str, wait: float) -> bytes | None:
    reader, writer = await asyncio.open_connection(*address.rsplit(":", 1))
    writer.write(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        async with asyncio.timeout(wait):
            return await reader.readline()
    except TimeoutError:
        return None
    finally:
        writer.close()


async def test_a_confined_channel_waits_for_its_owner_then_admits_only_its_process_tree(
    runtime_api: RuntimeApiServer, leftovers: set[int]
) -> None:
    channel = await runtime_api.open_channel(confined=True)
    early = asyncio.create_task(_next_status(channel.address, 10))
    await until(lambda: bool(channel.held), what="the first request to wait for the owner")
    channel.set_owner(os.getpid())  # this test process holds the client socket: admitted
    await until(lambda: bool(channel.waiters), what="the admitted /next to wait for an event")
    future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
    channel.send(PendingEvent("r1", b"{}", {}, future))
    assert (await early) == b"HTTP/1.1 200 OK\r\n"

    other = await runtime_api.open_channel(confined=True)
    sleeper = await asyncio.create_subprocess_exec("sleep", "30")
    leftovers.add(sleeper.pid)
    other.set_owner(sleeper.pid)  # someone else's channel: this process is a stranger to it
    assert (await _next_status(other.address, 10)) == b"HTTP/1.1 403 Forbidden\r\n"
    assert other.refused == 1
    sleeper.kill()
    await sleeper.wait()


async def _family(leftovers: set[int], tmp_path: Path) -> tuple[asyncio.subprocess.Process, int]:
    """A process (in a session of its own, as a worker) with a child; returns it and the child's pid."""
    out = tmp_path / f"family-{len(leftovers)}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import os, subprocess, sys, time\nos.setsid()\n"
        "open(sys.argv[1] + '.tmp', 'w').write(str(subprocess.Popen(['sleep', '300']).pid))\n"
        "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\ntime.sleep(300)\n", str(out))
    leftovers.add(proc.pid)
    await until(out.exists, what="the family to start")
    child = int(out.read_text())
    leftovers.add(child)
    return proc, child


async def test_the_watchdog_ends_registered_trees_when_its_pipe_ends_even_after_a_restart(
    leftovers: set[int], tmp_path: Path
) -> None:
    from router.runtime.proctree import Watchdog

    watchdog = Watchdog()
    await watchdog.start()
    assert watchdog.running
    kept_proc, kept_child = await _family(leftovers, tmp_path)
    ended_proc, ended_child = await _family(leftovers, tmp_path)
    kept, ended = kept_proc.pid, ended_proc.pid
    watchdog.register(kept)
    watchdog.register(ended)
    watchdog.unregister(ended)  # ended as far as the router knows: not the watchdog's to kill
    # The watchdog is killed: another is started and told every registered worker.
    first = watchdog._transport
    assert first is not None
    first.kill()
    await until(lambda: watchdog._transport is not None and watchdog._transport is not first
                and watchdog.running, what="a new watchdog")
    await watchdog.close()  # its pipe ends, as when the router dies
    await until(lambda: process_gone(kept) and process_gone(kept_child),
                what="the registered worker and its child to end")
    assert not process_gone(ended)
    assert not process_gone(ended_child)
    ended_proc.kill()
    for proc in (kept_proc, ended_proc):
        async with asyncio.timeout(10):
            await proc.wait()


SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(os.geteuid() != 0, reason="run_as switches users: only a router running as root can")
@pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK),
                    reason=f"needs {SYSTEM_PYTHON}, a Python any user may run (the test's may be in a "
                           "home directory other users cannot enter)")
async def test_run_as_runs_the_workers_as_the_functions_own_user(make_invoker: MakeInvoker) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    invoker = await make_invoker("run_as", runtime="provided", handler="app.handler", run_as="nobody",
                                 timeout=10)
    result = await invoker.invoke(invocation())
    assert result.ok, result.payload  # its Runtime API admitted the worker
    probe = json.loads(result.payload)
    assert (probe["uid"], probe["euid"], probe["gid"]) == (nobody.pw_uid, nobody.pw_uid, nobody.pw_gid)
    assert probe["groups"] == []  # none of the router's supplementary groups
    assert probe["tmp_owner"] == nobody.pw_uid  # its scratch dir is its own
    assert probe["parent_environ"] == "PermissionError"  # the router (root) is not its to read


async def test_run_as_an_unknown_user_is_refused_at_start(make_invoker: MakeInvoker) -> None:
    with pytest.raises(EnvironmentStartError, match=r"function 'echo': run_as 'no-such-user-x1': no user "
                       r"'no-such-user-x1' on this machine; create it or give a numeric uid"):
        await make_invoker("echo", run_as="no-such-user-x1")


def _open_files_limit(pid: int) -> list[str]:
    limits = Path(f"/proc/{pid}/limits").read_text()
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    return line.split()[3:5]


@needs_fork
@pytest.mark.parametrize("kind", ["exec", "fork", "provided", "node"])
async def test_a_worker_gets_lambdas_1024_file_descriptors_not_the_routers_raised_limit(
    kind: str, make_invoker: MakeInvoker, make_forked: MakeInvoker, leftovers: set[int]
) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 1024:
        pytest.skip(f"the test process's own hard limit is {hard}: nothing above Lambda's 1,024 to lower")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # as the router raises its own at start
    try:
        invoker = await _make(kind, make_invoker, make_forked, timeout=10)
        result = await invoker.invoke(invocation({}))
        assert result.ok, result.payload
        pid = _pids(result)["pid"]
        assert _open_files_limit(pid) == ["1024", "1024"]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
