"""Scenario 6: memory. RSS (and PSS) of an idle router just after /readyz answers, then PSS (and RSS) of
the python environment one webhook call started. Baselines: the bare aiohttp function server idle, and a bare
Runtime API worker (bare bootstrap, and awslambdaric) after one invocation.
"""

from __future__ import annotations

import asyncio

import aiohttp

from bench.harness import PYTHON, Ctx, cmdline, descendants, pss_kb, rss_kb
from bench.report import Row, at_most
from bench.router_proc import OK_CODE, running_bare, running_router
from bench.scenarios.invoke import BARE_ARGV, RIC_ARGV
from bench.servers.bare_runtime import BareRuntimeApi

SETTLE = 1.0  # let start-up garbage settle before reading an "idle" RSS (a measurement pause)


async def _worker_rss(argv: list[str]) -> tuple[float, float]:
    api = BareRuntimeApi()
    await api.start()
    worker = await api.spawn(argv, OK_CODE)
    try:
        await api.invoke(b"{}")
        await asyncio.sleep(SETTLE)
        # argv may be a shell or exec chain; measure the process and whatever it runs.
        pids = [worker.pid, *descendants(worker.pid)]
        return sum(rss_kb(p) for p in pids) / 1024, sum(pss_kb(p) for p in pids) / 1024
    finally:
        await worker.stop()
        await api.close()


async def run(ctx: Ctx) -> list[Row]:
    ctx.say("6: idle RSS and per-environment RSS")
    notes: list[str] = []
    async with running_bare(ctx, "bare function (memory)", "bare_function.py") as (bare, _u):
        await asyncio.sleep(SETTLE)
        bare_rss = rss_kb(bare.pid) / 1024
    async with running_router(ctx, "memory") as (router, base):
        await asyncio.sleep(SETTLE)
        idle_rss, idle_pss = rss_kb(router.pid) / 1024, pss_kb(router.pid) / 1024
        before = set(descendants(router.pid))
        async with aiohttp.ClientSession() as session, session.get(base + "/ok") as r:
            await r.read()
            if r.status != 200:
                notes.append(f"webhook call answered {r.status}")
        await asyncio.sleep(SETTLE)
        new = [p for p in descendants(router.pid) if p not in before]
        # A fork-started environment is the router's child beside the template it was forked from (the
        # template, shared by every environment of the runtime, is reported on its own).
        # Forked processes keep the template's command line: the template is the first of them started.
        forked = sorted((p for p in new if "python_template.py" in cmdline(p)), key=_start_time)
        templates = forked[:1]
        # The invocation history's writer (SQLite), started at the first write: the router's, not the
        # environment's; reported on its own.
        writers = [p for p in new if "history_writer.py" in cmdline(p)]
        new = [p for p in new if p not in writers]
        if writers:
            notes.append(f"the invocation history's writer process: RSS "
                         f"{sum(rss_kb(p) for p in writers) / 1024:.1f} MB, PSS "
                         f"{sum(pss_kb(p) for p in writers) / 1024:.1f} MB")
        envs = [p for p in new if p not in templates and PYTHON in cmdline(p)] or \
            [p for p in new if p not in templates]
        if templates:
            notes.append(f"the template the environment was forked from: PSS "
                         f"{sum(pss_kb(p) for p in templates) / 1024:.1f} MB, shared by every environment "
                         "of the runtime")
        env_rss = sum(rss_kb(p) for p in envs) / 1024 if envs else None
        env_pss = sum(pss_kb(p) for p in envs) / 1024 if envs else None
        after_rss = rss_kb(router.pid) / 1024
        if len(envs) != 1:
            notes.append(f"found {len(envs)} new worker processes after one call")
    bare_env_rss, bare_env_pss = await _worker_rss(BARE_ARGV)
    ric_rss, ric_pss = await _worker_rss(RIC_ARGV)
    s = "6 memory"
    return [
        Row(s, "router idle RSS", "MB", idle_rss, "bare aiohttp server", bare_rss, target="<= 80 MB",
            ok=at_most(idle_rss, 80),
            note=f"PSS {idle_pss:.1f} MB; RSS {after_rss:.1f} MB after the first invocation"),
        Row(s, "PSS per warm python environment", "MB", env_pss, "bare bootstrap worker", bare_env_pss,
            target="<= 10 MB", ok=at_most(env_pss, 10),
            note="; ".join([f"RSS {env_rss or 0:.1f} MB (bare bootstrap RSS {bare_env_rss:.1f} MB)",
                            *notes])),
        Row(s, "PSS per warm python environment", "MB", env_pss, "awslambdaric worker", ric_pss,
            note=f"awslambdaric RSS {ric_rss:.1f} MB"),
    ]


def _start_time(pid: int) -> int:
    """When ``pid`` started, in clock ticks since boot (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return 0
