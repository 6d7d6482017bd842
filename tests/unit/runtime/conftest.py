"""Fixtures for execution environment tests: a real Runtime API server and real worker processes, spawned
(``make_invoker``) or forked from templates (``make_forked``)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from router.config.models import AwsConfig, FunctionConfig
from router.invocation import Invocation, Result
from router.invokers.local import LocalInvoker
from router.metrics import Metrics
from router.runtime import api as runtime_api_module
from router.runtime.api import Reply, ReplyKind, RuntimeApiServer
from router.runtime.template import TemplateManager

FUNCTIONS = Path(__file__).resolve().parents[2] / "fixtures" / "functions"
PYTHON_RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"
ARN = "arn:aws:lambda:us-east-1:000000000000:function:{}"

MakeInvoker = Callable[..., Awaitable[LocalInvoker]]


def invocation(event: Any = None, **kw: Any) -> Invocation:
    return Invocation(function="f", payload=json.dumps({} if event is None else event).encode(),
                      source="test", **kw)


async def ended(result: Result, within: float = 5.0) -> None:
    """Poll, up to ``within`` seconds, until the environment has written ``result``'s END and REPORT: it
    writes an answered invocation's in the event loop's turn after the answer (``Environment._finish``),
    not before ``invoke`` returns. (Reading ``result.logs`` would write them at once.)"""
    deadline = asyncio.get_running_loop().time() + within
    while result.finish_logs is not None:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"END and REPORT not written within {within:g}s")
        await asyncio.sleep(0.001)  # polling interval


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie waiting for its parent)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return "\nState:\tZ" in status


def socket_kinds(pid: int) -> list[str]:
    """The kinds of the sockets process ``pid`` holds (unix, tcp), from procfs."""

    def inodes(table: str) -> set[str]:
        with open(f"/proc/{pid}/net/{table}") as f:
            rows = [line.split() for line in f.read().splitlines()[1:]]
        column = 6 if table == "unix" else 9  # the inode
        return {cols[column] for cols in rows if len(cols) > column}

    unix, tcp = inodes("unix"), inodes("tcp") | inodes("tcp6")
    kinds = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inode = target[len("socket:["):-1]
            kinds.append("unix" if inode in unix else "tcp" if inode in tcp else "other")
    return sorted(kinds)


def read_results_late(monkeypatch: pytest.MonkeyPatch, delay: float) -> None:
    """Make the Runtime API take in each function response ``delay`` seconds after it arrived, as a
    router whose event loop is busy with other connections would read it late."""
    settle = runtime_api_module._settle

    def late(future: asyncio.Future[Any], value: Any) -> None:
        if isinstance(value, Reply) and value.kind is ReplyKind.RESPONSE:
            asyncio.get_running_loop().call_later(delay, settle, future, value)
        else:
            settle(future, value)

    monkeypatch.setattr(runtime_api_module, "_settle", late)


def environment_pids(invoker: LocalInvoker) -> set[int]:
    return {env.pid for env in invoker.pool._all if env.pid is not None}


@pytest.fixture
async def runtime_api() -> AsyncIterator[RuntimeApiServer]:
    api = RuntimeApiServer()
    await api.start()
    yield api
    await api.close()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def make_invoker(runtime_api: RuntimeApiServer, metrics: Metrics) -> AsyncIterator[MakeInvoker]:
    created: list[LocalInvoker] = []
    pids: set[int] = set()

    async def make(code: str, *, name: str | None = None, start: bool = True, **fields: Any) -> LocalInvoker:
        fields.setdefault("runtime", PYTHON_RUNTIME)
        if fields["runtime"] != "provided":
            fields.setdefault("handler", "app.handler")
        name = name or code
        capacity = fields.pop("capacity", None)
        config = FunctionConfig(code=str(FUNCTIONS / code), **fields)
        invoker = LocalInvoker(name, config, code_dir=FUNCTIONS / code, aws=AwsConfig(), metrics=metrics,
                               runtime_api=runtime_api, arn=ARN.format(name), capacity=capacity)
        created.append(invoker)
        if start:
            await invoker.start()
        return invoker

    yield make
    for invoker in created:
        pids |= environment_pids(invoker)
        await invoker.close()
    assert all(process_gone(pid) for pid in pids), "close() left a worker process behind"


@pytest.fixture
async def templates() -> AsyncIterator[TemplateManager]:
    manager = TemplateManager()
    yield manager
    await manager.close()


@pytest.fixture
async def make_forked(runtime_api: RuntimeApiServer, metrics: Metrics,
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
