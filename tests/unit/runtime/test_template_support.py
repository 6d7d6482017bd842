"""Fixtures and helpers shared by the fork-start and snap_start tests (no tests of its own)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from router.config.models import AwsConfig, FunctionConfig
from router.invocation import Result
from router.invokers.local import LocalInvoker
from router.metrics import Metrics
from router.runtime.api import RuntimeApiServer
from router.runtime.template import TemplateManager, fork_supported

from .conftest import ARN, FUNCTIONS, PYTHON_RUNTIME, MakeInvoker, environment_pids, process_gone

needs_fork = pytest.mark.skipif(not fork_supported(), reason="fork-started environments need Linux "
                                "(x86_64 or aarch64) with pidfds")

PER_ENVIRONMENT = {
    "AWS_LAMBDA_RUNTIME_API", "AWS_LAMBDA_LOG_STREAM_NAME", "TMPDIR", "HOME", "_X_AMZN_TRACE_ID"}


def payload(result: Result) -> Any:
    assert result.ok, result.payload
    return json.loads(result.payload)


def zombie_children() -> set[int]:
    """This process's children that have ended and not been reaped."""
    me, found = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
        if state == "Z" and int(ppid) == me:
            found.add(int(entry))
    return found


def reaped(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def forked(probe: dict[str, Any]) -> bool:
    """Whether the environment was forked from a template (its command line is the template's)."""
    return any(arg.endswith("python_template.py") for arg in probe["cmdline"])


def fd_kinds(probe: dict[str, Any]) -> dict[str, str]:
    """Open fds by number, their targets without inode numbers (pipe:[123] -> pipe)."""
    return {fd: re.sub(r":\[\d+\]$", "", target) for fd, target in probe["fds"].items()
            if not target.startswith("/proc/")}


@pytest.fixture(name="templates")
async def templates_fixture() -> AsyncIterator[TemplateManager]:
    manager = TemplateManager()
    yield manager
    await manager.close()


@pytest.fixture(name="make_forked")
async def make_forked_fixture(runtime_api: RuntimeApiServer, metrics: Metrics,
                      templates: TemplateManager) -> AsyncIterator[MakeInvoker]:
    """Like ``make_invoker``, with environments forked from ``templates``."""
    created: list[LocalInvoker] = []

    async def make(code: str, *, name: str | None = None, start: bool = True, **fields: Any) -> LocalInvoker:
        fields.setdefault("runtime", PYTHON_RUNTIME)
        fields.setdefault("handler", "app.handler")
        name = name or code
        config = FunctionConfig(code=str(FUNCTIONS / code), **fields)
        invoker = LocalInvoker(name, config, code_dir=FUNCTIONS / code, aws=AwsConfig(), metrics=metrics,
                               runtime_api=runtime_api, arn=ARN.format(name), templates=templates)
        created.append(invoker)
        if start:
            await invoker.start()
        return invoker

    yield make
    pids: set[int] = set()
    for invoker in created:
        pids |= environment_pids(invoker)
        await invoker.close()
    assert all(process_gone(pid) for pid in pids), "close() left a worker process behind"
