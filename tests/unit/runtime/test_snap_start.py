"""snap_start: the function's init runs once in a template, environments are forked from it with the
real ``snapshot_restore_py`` hooks honoured, each with its own variables, scratch dir, random state,
memory limit and connections."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from router.config.loader import load_config
from router.errors import ConfigError
from router.runtime.memory import CgroupV2, address_space_limit
from router.runtime.template import TemplateManager
from tests.waiting import until

from .conftest import MakeInvoker, invocation, process_gone
from .template_support import needs_fork, payload, reaped, zombie_children

pytestmark = needs_fork


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def function_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str | None]]:
    return [(r.getMessage(), getattr(r, "request_id", None)) for r in caplog.records
            if r.name == "router.function"]


async def test_init_runs_once_in_the_template_and_the_hooks_around_each_fork(
    make_forked: MakeInvoker, templates: TemplateManager, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "router.function")
    log = tmp_path / "snap.jsonl"
    invoker = await make_forked("snap_hooks", snap_start=True, timeout=30,
                                environment={"SNAP_LOG": str(log)})
    results = await asyncio.gather(*(invoker.invoke(invocation({"sleep": 0.5})) for _ in range(2)))
    envs = [payload(r) for r in results]
    (template,) = templates.template_pids()
    seen = records(log)

    inits = [r for r in seen if r["kind"] == "init"]
    assert len(inits) == 1  # once, in the template, for both environments
    assert inits[0]["pid"] == template
    assert inits[0]["init_type"] == "snap-start"
    assert inits[0]["runtime_api"] is None  # the Runtime API is an environment's, set after the fork
    # before-snapshot hooks: once, in the template, in the reverse order of registration
    assert [(r["name"], r["pid"]) for r in seen if r["kind"] == "before"] == [
        ("second", template), ("first", template)]

    assert len({e["pid"] for e in envs}) == 2
    for env in envs:
        assert env["init_pid"] == template
        assert env["init_type"] == "snap-start"
        assert env["tempdir"] == env["tmpdir"] != inits[0]["tempdir"]  # its own scratch, even for tempfile
        # after-restore hooks: in each environment, in the order of registration, with its own variables
        after = [r for r in seen if r["kind"] == "after" and r["pid"] == env["pid"]]
        assert [r["name"] for r in after] == ["first", "second!"]
        assert after[0]["runtime_api"]
        assert after[0]["tmpdir"] == after[0]["home"] == env["tmpdir"]
        assert after[0]["stream"] == env["log_stream_name"]
        assert after[0]["init_type"] == "snap-start"
    assert envs[0]["tmpdir"] != envs[1]["tmpdir"]
    assert len({r["runtime_api"] for r in seen if r["kind"] == "after" and r["name"] == "first"}) == 2
    # the init's random draw is in the snapshot (as on Lambda); the generator is re-seeded per environment
    assert envs[0]["init_random"] == envs[1]["init_random"]
    assert envs[0]["random"] != envs[1]["random"]

    for result in results:
        report = result.logs.splitlines()[-1]
        assert re.search(r"\tRestore Duration: \d+\.\d\d ms\tBilled Restore Duration: \d+ ms$",
                         report), report
        assert "Init Duration" not in report
        assert "handler output" in result.logs
    lines = function_lines(caplog)
    assert [m for m, _ in lines if m.startswith("INIT_REPORT")] == [
        m for m, _ in lines if re.fullmatch(r"INIT_REPORT Init Duration: \d+\.\d\d ms", m)]
    assert len([m for m, _ in lines if m.startswith("INIT_REPORT")]) == 1
    assert lines.count(("init output", None)) == 1  # the init's output, logged once, as the function's


async def test_a_snap_environment_gets_its_own_memory_limit(make_forked: MakeInvoker) -> None:
    invoker = await make_forked("fork_probe", snap_start=True, memory=256)
    probe = payload(await invoker.invoke(invocation()))
    assert probe["pid"] != probe["init_pid"]
    limit = address_space_limit(256)
    cgroup = await asyncio.to_thread(CgroupV2.detect)
    if cgroup is None:
        assert probe["rlimit_as"] == [limit, limit]
    else:  # the environment's own cgroup limits it; the template's soft limit is lifted
        assert probe["rlimit_as"][0] == probe["rlimit_as"][1]
    assert probe["pgid"] == probe["sid"] == probe["pid"]
    assert probe["ppid"] == os.getpid()


async def test_an_init_error_is_reported_like_any_and_the_template_rebuilt(
    make_forked: MakeInvoker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    count = tmp_path / "inits"
    invoker = await make_forked("snap_init_error", snap_start=True, environment={"INIT_COUNT": str(count)})
    for attempt in (1, 2):
        result = await invoker.invoke(invocation())
        assert not result.ok
        assert result.function_error == "Unhandled"
        error = json.loads(result.payload)
        assert error["errorType"] == "Runtime.ImportModuleError"
        assert error["errorMessage"] == "Unable to import module 'app': No module named 'does_not_exist'"
        assert "[ERROR] Runtime.ImportModuleError: Unable to import module 'app'" in result.logs
        assert len(count.read_text().splitlines()) == attempt  # a fresh template ran the init again
        # the template logged the init's INIT_REPORT (Phase: init, below); the invocation has its own lines
        report = result.logs.splitlines()[-1]
        assert report.startswith("REPORT RequestId: "), report
        assert report.endswith("\tStatus: error\tError Type: Runtime.ImportModuleError"), report
        assert "Phase: invoke" not in result.logs
    messages = [r.getMessage() for r in caplog.records]
    assert sum(1 for m in messages if m.startswith(
        "function 'snap_init_error': environment failed to start: Unable to import module 'app'")) == 2
    assert sum(1 for m in messages if m.startswith("INIT_REPORT Init Duration: ") and m.endswith(
        "\tPhase: init\tStatus: error\tError Type: Runtime.ImportModuleError")) == 2


@pytest.mark.parametrize(("hook", "message"), [
    ("before", "before-snapshot hook failed on purpose"),
    ("after", "after-restore hook failed on purpose"),
])
async def test_a_failing_hook_fails_the_start(
    make_forked: MakeInvoker, tmp_path: Path, hook: str, message: str
) -> None:
    log = tmp_path / "snap.jsonl"
    invoker = await make_forked("snap_hooks", snap_start=True,
                                environment={"SNAP_LOG": str(log), "FAIL_HOOK": hook})
    result = await invoker.invoke(invocation())
    assert not result.ok
    error = json.loads(result.payload)
    assert (error["errorType"], error["errorMessage"]) == ("RuntimeError", message)
    assert f"[ERROR] RuntimeError: {message}" in result.logs
    if hook == "after":  # the restore failed: Lambda's RESTORE_REPORT with its status, no INIT_REPORT
        lines = result.logs.splitlines()
        assert lines[0].startswith("RESTORE_START Runtime Version: python:")
        assert "INIT_REPORT" not in result.logs
        assert re.fullmatch(r"RESTORE_REPORT Restore Duration: \d+\.\d\d ms\tStatus: error"
                            r"\tError Type: RuntimeError",  # the errorType the invocation gets
                            next(line for line in lines if line.startswith("RESTORE_REPORT"))), result.logs
    await until(lambda: not zombie_children(), what="no zombie children")


async def test_a_dead_snap_template_is_rebuilt_and_its_environments_keep_running(
    make_forked: MakeInvoker, templates: TemplateManager, tmp_path: Path
) -> None:
    log = tmp_path / "snap.jsonl"
    invoker = await make_forked("snap_hooks", snap_start=True, timeout=30, environment={"SNAP_LOG": str(log)})
    first = payload(await invoker.invoke(invocation()))
    (template,) = templates.template_pids()
    os.kill(template, signal.SIGKILL)
    await until(lambda: reaped(template), what="the template to be reaped")
    busy = asyncio.create_task(invoker.invoke(invocation({"sleep": 0.5})))  # the warm environment
    await until(lambda: any(e.state == "busy" for e in invoker.pool._all), what="a busy environment")
    second = payload(await invoker.invoke(invocation()))  # a cold start: from a rebuilt template
    assert payload(await busy)["pid"] == first["pid"]  # it outlived its template
    assert second["init_pid"] not in (template, first["pid"])
    assert len([r for r in records(log) if r["kind"] == "init"]) == 2


class _EchoServer:
    """Answers each ``ping`` line with the port the connection comes from; counts connections."""

    def __init__(self) -> None:
        self.peers: list[int] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = writer.get_extra_info("peername")[1]
        self.peers.append(port)
        with contextlib.suppress(ConnectionError):
            while await reader.readline():
                writer.write(f"port {port}\n".encode())
                await writer.drain()
        writer.close()

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


@pytest.fixture
async def echo() -> AsyncIterator[tuple[_EchoServer, int]]:
    server = _EchoServer()
    async with server as port:
        yield server, port


async def test_init_sockets_reconnected_after_restore_are_each_environments_own(
    make_forked: MakeInvoker, echo: tuple[_EchoServer, int]
) -> None:
    server, port = echo
    invoker = await make_forked("snap_socket", snap_start=True, timeout=30,
                                environment={"ECHO_PORT": str(port), "RECONNECT": "1"})
    envs = [payload(r) for r in await asyncio.gather(
        *(invoker.invoke(invocation({"ping": True, "sleep": 0.5})) for _ in range(2)))]
    assert len({e["pid"] for e in envs}) == 2
    ports = {e["local_port"] for e in envs}
    assert len(ports) == 2  # each its own connection
    assert envs[0]["init_port"] not in ports
    assert {e["reply"] for e in envs} == {f"port {p}" for p in ports}  # and each works
    assert sorted(server.peers) == sorted([envs[0]["init_port"], *ports])  # the template's + one each


async def test_init_sockets_without_a_hook_are_shared_by_every_environment(
    make_forked: MakeInvoker, echo: tuple[_EchoServer, int]
) -> None:
    server, port = echo
    invoker = await make_forked("snap_socket", snap_start=True, timeout=30,
                                environment={"ECHO_PORT": str(port)})
    envs = [payload(r) for r in await asyncio.gather(
        *(invoker.invoke(invocation({"sleep": 0.5})) for _ in range(2)))]
    assert len({e["pid"] for e in envs}) == 2
    # One connection, made in init, inherited by the template and every environment (what the README
    # documents: reconnect in @register_after_restore).
    assert {e["local_port"] for e in envs} == {envs[0]["init_port"]}
    assert server.peers == [envs[0]["init_port"]]
    assert not any(process_gone(e["pid"]) for e in envs)


def test_snap_start_is_a_python_setting_that_needs_fork_start(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text("""version: 1
functions:
  api:
    runtime: nodejs20.x
    handler: index.handler
    code: .
    snap_start: true
  py:
    runtime: python3.11
    handler: app.handler
    code: .
    snap_start: true
    fork_start: false
""")
    with pytest.raises(ConfigError) as caught:
        load_config(config, env={})
    message = str(caught.value)
    assert f"{config}:4:5: functions.api: snap_start is for python3.X functions, got runtime 'nodejs20.x'; " \
           "remove snap_start" in message
    assert f"{config}:9:5: functions.py: snap_start needs fork_start (environments are forked from the " \
           "snapshot); remove fork_start: false or snap_start: true" in message
