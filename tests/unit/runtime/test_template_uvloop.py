"""Fork-started environments on uvloop's event loop: its child handling must leave them to the router."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest

from router.config.models import AwsConfig, FunctionConfig
from router.invokers.local import LocalInvoker
from router.metrics import Metrics
from router.runtime.api import RuntimeApiServer
from router.runtime.template import TemplateManager
from tests.waiting import until

from .conftest import ARN, FUNCTIONS, PYTHON_RUNTIME, invocation
from .template_support import forked, needs_fork, payload, reaped, zombie_children

uvloop = pytest.importorskip("uvloop")
pytestmark = needs_fork


async def _scenario() -> None:
    assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
    api = RuntimeApiServer()
    await api.start()
    templates = TemplateManager()
    invokers = []

    def make(code: str, **fields: object) -> LocalInvoker:
        config = FunctionConfig.model_validate(
            {"runtime": PYTHON_RUNTIME, "handler": "app.handler", "code": str(FUNCTIONS / code), **fields})
        invoker = LocalInvoker(code, config, code_dir=FUNCTIONS / code, aws=AwsConfig(), metrics=Metrics(),
                               runtime_api=api, arn=ARN.format(code), templates=templates)
        invokers.append(invoker)
        return invoker

    try:
        exits, probes = make("exit"), make("fork_probe", timeout=30)
        for invoker in invokers:
            await invoker.start()
        inv = invocation({"code": 3})
        assert json.loads((await exits.invoke(inv)).payload)["errorMessage"] == (
            f"RequestId: {inv.request_id} Error: Runtime exited with error: exit status 3")
        assert forked(payload(await probes.invoke(invocation())))
        (template,) = templates.template_pids()
        os.kill(template, signal.SIGSTOP)
        calls = [asyncio.create_task(probes.invoke(invocation({"sleep": 0.3}))) for _ in range(3)]
        try:
            await until(lambda: templates.forks_pending() >= 2, what="fork requests at the template")
        finally:
            os.kill(template, signal.SIGKILL)
        results = [payload(r) for r in await asyncio.gather(*calls)]
        assert all(forked(p) for p in results)
        for probe in results:
            os.kill(probe["pid"], signal.SIGKILL)
        await until(lambda: reaped(template) and all(reaped(p["pid"]) for p in results),
                    what="the template and the environments to be reaped")
    finally:
        for invoker in invokers:
            await invoker.close()
        await templates.close()
        await api.close()
    await until(lambda: not zombie_children(), what="no zombie children")


def test_forked_environments_on_uvloop() -> None:
    uvloop.run(_scenario())
