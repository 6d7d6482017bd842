"""Node.js and ``provided`` workers started through the router's template (its child sets the process up and
execs the command line): the same process as one the router starts itself, and the same errors."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import stat
import sys
from pathlib import Path

from router.invocation import Outcome
from router.invokers.local import LocalInvoker
from router.runtime.memory import HEADROOM_MB, LIBUV_THREAD_STACK_MB, CgroupV2
from router.runtime.spawn import EXEC
from router.runtime.template import TemplateManager, TemplateSpawner

from .conftest import FUNCTIONS, MakeInvoker, invocation
from .node_support import NODE_RUNTIME, require_node
from .template_support import fd_kinds, needs_fork, payload

pytestmark = needs_fork

PER_ENVIRONMENT = {"AWS_LAMBDA_RUNTIME_API", "AWS_LAMBDA_LOG_STREAM_NAME", "TMPDIR", "HOME",
                   "_X_AMZN_TRACE_ID", "_ROUTER_PARENT_PID"}


def _spawners(invoker: LocalInvoker) -> set[type]:
    """The kinds of spawner that started the invoker's environments now running."""
    return {type(env._spawner) for env in invoker.pool._all}


def _templated(invoker: LocalInvoker) -> bool:
    return _spawners(invoker) == {TemplateSpawner}


async def test_a_node_worker_started_through_the_template_is_what_an_exec_one_is(
    make_invoker: MakeInvoker, make_forked: MakeInvoker, templates: TemplateManager,
) -> None:
    require_node()
    fields = {"runtime": NODE_RUNTIME, "handler": "index.probe", "memory": 256,
              "environment": {"FN_COLOUR": "blue"}}
    exec_invoker = await make_invoker("node_basic", name="by-exec", **fields)
    forked_invoker = await make_forked("node_basic", name="by-template", **fields)
    by_exec = payload(await exec_invoker.invoke(invocation()))
    by_template = payload(await forked_invoker.invoke(invocation()))
    assert _templated(forked_invoker)
    assert _spawners(exec_invoker) == {type(EXEC)}
    template_pids = templates.template_pids()
    assert template_pids, "no template was started"
    for probe in (by_exec, by_template):
        assert probe["ppid"] == os.getpid()  # the router's child (reaped by it), not the template's
        assert probe["pgrp"] == probe["session"] == probe["pid"]  # own session: a timeout kills the group
        assert probe["pid"] not in template_pids
    named = {"AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_LOG_GROUP_NAME"}  # by-exec, by-template
    assert by_template["env"].keys() == by_exec["env"].keys()
    assert {k: v for k, v in by_template["env"].items() if k not in PER_ENVIRONMENT | named} == {
        k: v for k, v in by_exec["env"].items() if k not in PER_ENVIRONMENT | named}
    assert by_template["env"]["FN_COLOUR"] == "blue"
    for key in ("cwd", "argv", "execArgv", "limits", "signals"):
        assert by_template[key] == by_exec[key], key
    if CgroupV2.detect() is None:  # else the cgroup limits memory
        # private writable memory of memory + headroom, set before the exec; the address space unlimited
        limits = {line[:25].strip(): line[25:].split() for line in by_template["limits"]}
        pool = 4 * LIBUV_THREAD_STACK_MB  # the stacks of libuv's thread pool (memory.data_limit)
        assert limits["Max data size"][:2] == [str((256 + HEADROOM_MB + pool) << 20)] * 2, limits
        assert limits["Max address space"][:2] == ["unlimited", "unlimited"], limits
    # stdin /dev/null, stdout and stderr the router's pipe, the Runtime API socket the router handed over
    # (its only socket: no TCP connection was made): nothing of the template's (its control socket, the
    # status socket) leaks through the exec. The handed-over socket keeps the number it had in the router
    # or in the template, so node's own fds may be numbered differently.
    for probe in (by_template, by_exec):
        assert list(fd_kinds(probe).values()).count("socket") == 1, fd_kinds(probe)
    assert sorted(fd_kinds(by_template).values()) == sorted(fd_kinds(by_exec).values())
    assert fd_kinds(by_template)["0"] == "/dev/null"
    assert fd_kinds(by_template)["1"] == fd_kinds(by_template)["2"] == "pipe"


async def test_node_memory_limit_and_timeout_hold_through_the_template(make_forked: MakeInvoker) -> None:
    require_node()
    invoker = await make_forked("node_basic", name="memory", runtime=NODE_RUNTIME, handler="index.memory",
                                memory=128)
    over = await invoker.invoke(invocation({"mb": 1024}))
    assert over.outcome is Outcome.ERROR
    assert json.loads(over.payload)["errorType"] in {"Runtime.ExitError", "Runtime.OutOfMemory", "RangeError"}
    within = await invoker.invoke(invocation({"mb": 48}))
    assert within.ok, within.payload
    assert _templated(invoker)
    sleeper = await make_forked("node_basic", name="hangs", runtime=NODE_RUNTIME, handler="index.hangs",
                                timeout=1)
    timed_out = await sleeper.invoke(invocation())
    assert timed_out.outcome is Outcome.TIMEOUT
    assert "Task timed out after 1.00 seconds" in json.loads(timed_out.payload)["errorMessage"]


async def test_provided_through_the_template(make_forked: MakeInvoker, tmp_path: Path) -> None:
    code = tmp_path / "provided"
    shutil.copytree(FUNCTIONS / "provided", code)
    invoker = await make_forked(str(code), name="provided", runtime="provided", handler="app.echo",
                                environment={"PYTHON": sys.executable})
    result = await invoker.invoke(invocation({"hello": "provided"}))
    assert payload(result) == {"hello": "provided"}
    assert _templated(invoker)


async def test_a_failed_exec_is_the_same_error_either_way(
    make_invoker: MakeInvoker, make_forked: MakeInvoker, templates: TemplateManager, tmp_path: Path,
) -> None:
    code = tmp_path / "broken"
    code.mkdir()
    bootstrap = code / "bootstrap"
    bootstrap.write_text("#!/nonexistent/interpreter\n")  # executable, but its interpreter is missing
    bootstrap.chmod(bootstrap.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    by_exec = await (await make_invoker(str(code), name="exec", runtime="provided")).invoke(invocation())
    forked_invoker = await make_forked(str(code), name="template", runtime="provided", handler="x.y")
    by_template = await forked_invoker.invoke(invocation())
    assert templates.template_pids(), "the start did not go through the template"
    for result in (by_exec, by_template):
        assert result.outcome is Outcome.ERROR
        error = json.loads(result.payload)
        assert error["errorType"] == "Runtime.InvalidEntrypoint", error
        assert re.search(r"fork/exec .*bootstrap: No such file or directory", error["errorMessage"]), error


async def test_fork_start_false_and_run_as_exec_from_the_router(make_forked: MakeInvoker) -> None:
    require_node()
    invoker = await make_forked("node_basic", name="no-template", runtime=NODE_RUNTIME, handler="index.echo",
                                fork_start=False)
    assert payload(await invoker.invoke(invocation({"a": 1}))) == {"a": 1}
    assert _spawners(invoker) == {type(EXEC)}


async def test_a_dead_template_is_rebuilt_for_node(make_forked: MakeInvoker,
                                                   templates: TemplateManager) -> None:
    require_node()
    invoker = await make_forked("node_basic", name="rebuilt", runtime=NODE_RUNTIME, handler="index.counter",
                                concurrency=2)
    first = payload(await invoker.invoke(invocation()))
    killed = templates.template_pids()
    assert killed
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    # two at once: the warm environment takes one, the other needs a new start, through a rebuilt template
    both = await asyncio.gather(invoker.invoke(invocation()), invoker.invoke(invocation()))
    results = [payload(r) for r in both]
    assert len({r["pid"] for r in results} | {first["pid"]}) == 2, results
    assert templates.template_pids()
    assert not templates.template_pids() & killed
    assert _templated(invoker)
