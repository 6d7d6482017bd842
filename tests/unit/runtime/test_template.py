"""Fork-started environments: forked from a template, yet exactly what an exec'd environment is; faults."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from router.invocation import Outcome
from router.runtime.template import TemplateManager
from tests.waiting import until

from .conftest import MakeInvoker, environment_pids, invocation, process_gone
from .template_support import PER_ENVIRONMENT, fd_kinds, forked, needs_fork, payload, reaped, zombie_children

pytestmark = needs_fork


async def test_a_forked_environment_is_what_an_exec_one_is(
    make_invoker: MakeInvoker, make_forked: MakeInvoker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROUTER_TEST_SECRET", "not for functions")  # the router's own environment
    fields = {"environment": {"FN_COLOUR": "blue"}, "memory": 256}
    by_exec = payload(await (await make_invoker("fork_probe", **fields)).invoke(invocation()))
    by_fork = payload(await (await make_forked("fork_probe", **fields)).invoke(invocation()))
    assert forked(by_fork)
    assert not forked(by_exec)
    for probe in (by_exec, by_fork):
        assert probe["ppid"] == os.getpid()  # the router's child (reaped by it, dies with it)
        assert probe["pgid"] == probe["sid"] == probe["pid"]  # own session: a timeout kills the group
        assert "ROUTER_TEST_SECRET" not in probe["env"]
        assert not [k for k in probe["env"] if k.startswith("_ROUTER")]
        assert probe["tempdir"] == probe["env"]["TMPDIR"] == probe["env"]["HOME"]
        assert probe["init_pid"] == probe["pid"]  # the function's init ran in the environment
        assert probe["name"] == "app"
    assert by_fork["env"].keys() == by_exec["env"].keys()
    assert {k: v for k, v in by_fork["env"].items() if k not in PER_ENVIRONMENT} == {
        k: v for k, v in by_exec["env"].items() if k not in PER_ENVIRONMENT}
    assert by_fork["env"]["FN_COLOUR"] == "blue"
    assert by_fork["env"]["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    assert by_fork["tempdir"] != by_exec["tempdir"]
    for key in ("cwd", "sys_path", "argv", "rlimit_as"):
        assert by_fork[key] == by_exec[key], key
    # stdin /dev/null, stdout and stderr the router's pipe, the Runtime API socket (at the number it had
    # in the router for an exec'd worker, at the one the template received it at for a forked one):
    # nothing of the template's (its control socket, the status socket) leaks into the environment
    assert sorted(fd_kinds(by_fork).values()) == sorted(fd_kinds(by_exec).values())
    assert sorted(fd_kinds(by_fork).values()).count("socket") == 1
    assert fd_kinds(by_fork)["0"] == "/dev/null"
    assert fd_kinds(by_fork)["1"] == fd_kinds(by_fork)["2"] == "pipe"


async def test_forked_environments_have_their_own_random_state_and_scratch(make_forked: MakeInvoker) -> None:
    invoker = await make_forked("fork_probe", timeout=30)
    first, second = [payload(r) for r in await asyncio.gather(
        *(invoker.invoke(invocation({"sleep": 0.5})) for _ in range(2)))]
    assert first["pid"] != second["pid"]
    assert first["random"] != second["random"]
    assert first["init_random"] != second["init_random"]
    assert first["tempdir"] != second["tempdir"]
    assert first["env"]["AWS_LAMBDA_RUNTIME_API"] != second["env"]["AWS_LAMBDA_RUNTIME_API"]


async def test_a_function_with_interpreter_start_up_variables_gets_a_template_of_its_own(
    make_forked: MakeInvoker, templates: TemplateManager
) -> None:
    plain = payload(await (await make_forked("fork_probe")).invoke(invocation()))
    optimised = payload(await (await make_forked("fork_probe", name="optimised", environment={
        "PYTHONOPTIMIZE": "1"})).invoke(invocation()))
    assert forked(plain)
    assert forked(optimised)
    assert (plain["optimize"], optimised["optimize"]) == (0, 1)  # as an exec'd interpreter would have it
    assert len(templates.template_pids()) == 2


async def test_fork_start_false_execs(make_forked: MakeInvoker) -> None:
    invoker = await make_forked("fork_probe", fork_start=False)
    assert not forked(payload(await invoker.invoke(invocation())))


async def test_timeouts_exits_and_memory_limits_of_forked_environments(make_forked: MakeInvoker) -> None:
    sleepy = await make_forked("sleep", timeout=1)
    result = await sleepy.invoke(invocation({"seconds": 60, "spawn_child": True}))
    assert result.outcome is Outcome.TIMEOUT
    child = int(re.search(r"child pid (\d+)", result.logs).group(1))  # type: ignore[union-attr]
    await until(lambda: process_gone(child), what="the handler's child to die with its process group")

    exits = await make_forked("exit")
    inv = invocation({"code": 3})
    assert json.loads((await exits.invoke(inv)).payload) == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {inv.request_id} Error: Runtime exited with error: exit status 3",
    }
    killed = invocation({"signal": "SIGKILL"})
    assert json.loads((await exits.invoke(killed)).payload)["errorMessage"] == (
        f"RequestId: {killed.request_id} Error: Runtime exited with error: signal: killed")

    hog = await make_forked("memory_hog", memory=128)
    over = await hog.invoke(invocation({"mb": 1024}))
    assert json.loads(over.payload)["errorType"] in {
        "MemoryError", "Runtime.ExitError", "Runtime.OutOfMemory"}
    within = await hog.invoke(invocation({"mb": 48}))
    assert within.ok, within.payload


async def test_a_template_killed_mid_fork_loses_nothing(
    make_forked: MakeInvoker, templates: TemplateManager
) -> None:
    invoker = await make_forked("fork_probe", timeout=30)
    warm = payload(await invoker.invoke(invocation()))
    (template,) = templates.template_pids()
    os.kill(template, signal.SIGSTOP)  # fork requests queue up at the template...
    calls = [asyncio.create_task(invoker.invoke(invocation({"sleep": 0.5}))) for _ in range(4)]
    try:
        await until(lambda: templates.forks_pending() >= 3, what="fork requests waiting at the template")
    finally:
        os.kill(template, signal.SIGKILL)  # ...and it dies before serving them
    probes = [payload(r) for r in await asyncio.gather(*calls)]
    assert len({p["pid"] for p in probes}) == 4
    (rebuilt,) = templates.template_pids()
    assert rebuilt != template
    assert sum(1 for p in probes if p["pid"] != warm["pid"] and forked(p)) == 3  # by the rebuilt one
    await until(lambda: reaped(template), what="the killed template to be reaped")
    assert not process_gone(warm["pid"])  # environments are not the template's children
    assert payload(await invoker.invoke(invocation()))["pid"] in {p["pid"] for p in probes}
    await until(lambda: not zombie_children(), what="no zombie children")


async def test_a_cancelled_start_leaves_no_process(
    make_forked: MakeInvoker, templates: TemplateManager
) -> None:
    invoker = await make_forked("fork_probe", timeout=30)
    payload(await invoker.invoke(invocation()))
    (template,) = templates.template_pids()
    before = {p for p in _children() if p != template}
    os.kill(template, signal.SIGSTOP)
    busy = asyncio.create_task(invoker.invoke(invocation({"sleep": 5})))  # keeps the warm one busy
    call = asyncio.create_task(invoker.invoke(invocation()))
    try:
        await until(lambda: templates.forks_pending() >= 1, what="a fork request at the template")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    finally:
        os.kill(template, signal.SIGCONT)  # the template forks it anyway: it is killed and reaped
    await until(lambda: templates.forks_pending() == 0, what="the fork request to be answered")
    await until(lambda: not zombie_children() and {p for p in _children() if p != template} <= before | {
        p for p in environment_pids(invoker)}, what="the unclaimed environment to be killed and reaped")
    busy.cancel()
    with pytest.raises(asyncio.CancelledError):
        await busy


def _children() -> set[int]:
    me, found = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == me:
                found.add(int(entry))
    return found


async def test_no_zombies_under_repeated_start_and_kill(
    make_forked: MakeInvoker, templates: TemplateManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "asyncio")
    invoker = await make_forked("fork_probe")
    seen = set()
    for round_ in range(12):
        probe = payload(await invoker.invoke(invocation()))
        assert forked(probe)
        seen.add(probe["pid"])
        os.kill(probe["pid"], signal.SIGKILL)  # an idle environment dies
        if round_ % 4 == 3:
            for template in templates.template_pids():
                os.kill(template, signal.SIGKILL)
                await until(lambda t=template: reaped(t), what="the template to be reaped")
        await until(lambda p=probe["pid"]: reaped(p), what="the environment to be reaped")
    assert len(seen) == 12
    await invoker.close()
    await templates.close()
    await until(lambda: not zombie_children(), what="no zombie children")
    # every process was reaped by the one that should: none under asyncio's child watcher
    assert not [r for r in caplog.records if "Unknown child process" in r.getMessage()]


async def test_a_template_that_cannot_start_falls_back_to_exec(
    make_forked: MakeInvoker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # An interpreter that runs the bootstrap but refuses to run the template.
    fake = tmp_path / "python3.99"
    fake.write_text(f'#!/bin/sh\ncase "$1" in */python_template.py) echo "no templates here" >&2; exit 3;; '
                    f'esac\nexec {sys.executable} "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    invoker = await make_forked("fork_probe", runtime="python3.99", timeout=30)
    caplog.set_level(logging.WARNING, "router.runtime")
    probes = [payload(r) for r in await asyncio.gather(
        *(invoker.invoke(invocation({"sleep": 0.3})) for _ in range(2)))]
    assert not any(forked(p) for p in probes)
    assert all(p["env"]["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.99" for p in probes)
    warnings = [r.getMessage() for r in caplog.records if "starting environments with exec" in r.getMessage()]
    assert len(warnings) == 1, warnings  # said once, not per environment
    assert re.search(r"fork template of .*python3\.99: exited before it was ready \(exit status 3\): "
                     r"no templates here; starting environments with exec instead", warnings[0]), warnings
