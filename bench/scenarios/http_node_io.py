"""Scenarios 12 and 13: a sync webhook at 32 connections to the trivial Node handler (12), and to handlers
that wait 50 ms on I/O (13: python ``time.sleep(0.05)``, node ``await`` a 50 ms timer), the router beside
serverless-offline running the same handlers. Scenario 13's figure is the router against the ideal
32 connections / 0.05 s = 640 req/s.

The router's Node runtime is checked with ``router validate`` first: when the router refuses
``runtime: nodejs<major>.x`` the router's Node rows say so and serverless-offline is still measured.
"""

from __future__ import annotations

import contextlib
from typing import Any

from bench.harness import BENCH_DIR, BenchError, Ctx, descendants
from bench.peers import (
    Node,
    PeerFunction,
    find_node,
    handler_processes,
    serverless_offline,
    start_offline,
    threads,
)
from bench.report import Row, at_least
from bench.router_proc import function, router_refuses, running_router, webhook
from bench.scenarios.http_sync import (
    Measured,
    Target,
    environments,
    measure,
    offline_processes_note,
    offline_target,
    router_target,
)

OK_NODE = BENCH_DIR / "functions" / "ok_node"
IO_PY = BENCH_DIR / "functions" / "io50"
IO_NODE = BENCH_DIR / "functions" / "io50_node"
CONNECTIONS = 32
IO_WAIT = 0.05
IDEAL = CONNECTIONS / IO_WAIT  # 640 req/s: every connection always waiting on one 50 ms call
SLS, SLS_WT = "serverless-offline", "serverless-offline, worker threads"


async def node_runtime(ctx: Ctx) -> tuple[Node | None, str | None]:
    """The machine's node and why the router cannot run Node handlers (None when it can); asked once."""
    node = await find_node(ctx)
    if isinstance(node, str):
        return None, node
    key = "router-node"
    if key not in ctx.cache:
        why = await router_refuses(ctx, {"n": function(OK_NODE, node.runtime)})
        ctx.cache[key] = why
        if why:
            ctx.notes.append(f"router Node runtime not available ({node.runtime}): {why}; "
                             "the router's Node rows are skipped")
    refused: str | None = ctx.cache[key]
    return node, refused


async def _scenario_12(ctx: Ctx, rounds: int, seconds: float, warm_s: float) -> list[Row]:
    node, refused = await node_runtime(ctx)
    sls_why = await serverless_offline(ctx)
    s = "12 webhook sync, node, 32 conn"
    if node is None or (refused and sls_why):
        why = "; ".join(x for x in (refused, sls_why) if x)
        return [Row(s, "throughput (2xx/s)", "req/s", None, "serverless-offline, node", None,
                    target=">= 2.0x serverless-offline", note=f"not measured: {why}")]
    runtime = node.runtime
    async with contextlib.AsyncExitStack() as stack:
        targets: dict[str, Target] = {}
        router_base, router_pid = "", 0
        if not refused:
            proc, router_base = await stack.enter_async_context(running_router(
                ctx, "node", extra_functions={"ok_node": function(OK_NODE, runtime)},
                extra_routes=[webhook("ok_node", "/ok-node", "ok_node")]))
            router_pid = proc.pid
            targets["router"] = router_target(router_pid, router_base, "/ok-node")
        fns = [PeerFunction("ok_node", OK_NODE, runtime, "/ok-node")]
        sls_pid = wt_pid = 0
        started = None if sls_why else await start_offline(ctx, stack, "offline-12", fns)
        if started:
            sls_pid, base = started
            targets[SLS] = offline_target(sls_pid, base, "/ok-node", python=False)
            if not ctx.quick:  # its default: a worker thread per concurrent request (informational)
                started = await start_offline(ctx, stack, "offline-12-threads", fns, in_process=False)
                if started:
                    wt_pid, base = started
                    targets[SLS_WT] = offline_target(wt_pid, base, "/ok-node", python=False)
        if not targets:
            return [Row(s, "throughput (2xx/s)", "req/s", None, "serverless-offline, node", None,
                        target=">= 2.0x serverless-offline", note=f"not measured: {refused}")]
        ctx.say(f"12: {CONNECTIONS} connections, {rounds} x {seconds:g}s per target ({', '.join(targets)})")
        m = await measure(ctx, targets, CONNECTIONS, seconds, rounds, warm_s)
        envs = await environments(router_base, "ok_node") if router_base else None
        router_kids = len(descendants(router_pid)) if router_base else 0
        sls_threads = threads(sls_pid) if sls_pid else 0
        wt_threads = threads(wt_pid) if wt_pid else 0
    rps, p50, p99 = m.rps(), m.p50(), m.p99()
    total = {k: a + b for (k, a), b in zip(m.front().items(), m.back().values(), strict=True)}
    r, o = rps.get("router"), rps.get(SLS)
    router_note = refused and f"router Node runtime not available: {refused}"
    peer = "serverless-offline, node"
    procs = f"serverless-offline --useInProcess: one node process ({sls_threads} threads)"
    if router_base:
        procs = (f"router: router_environments{{function=ok_node}} at the end of the run, {router_kids} "
                 f"processes under the router; {procs}")
    rows = [
        Row(s, "throughput (2xx/s)", "req/s", r, f"{peer}, --useInProcess", o,
            target=">= 2.0x serverless-offline", ok=at_least(r / o if r and o else None, 2.0),
            note="; ".join(x for x in (router_note, m.errors_note()) if x)),
    ]
    if wt_pid:
        rows.append(Row(s, "throughput vs serverless-offline's default", "req/s", r,
                        f"{peer}, worker threads", rps.get(SLS_WT),
                        note=f"its default runs each concurrent instance in a worker thread "
                        f"({wt_threads} threads at the end)"))
    rows += [
        Row(s, "latency p50", "ms", p50.get("router"), peer, p50.get(SLS)),
        Row(s, "latency p99", "ms", p99.get("router"), peer, p99.get(SLS)),
        Row(s, "CPU per request, all processes", "us", total.get("router"), peer, total.get(SLS),
            note="router + its environments vs serverless-offline's one process"),
        Row(s, "environments at 32 connections", "count", envs, f"{peer} (processes)",
            1.0 if sls_pid else None, note=procs),
    ]
    return rows


def _io_rows(s: str, lang: str, fn: str, m: Measured, envs: dict[str, float], router_kids: int,
             sls_note: str, sls_envs: float | None, router_note: str | None) -> list[Row]:
    rps, p50 = m.rps(), m.p50()
    mine, peer, label = f"router {lang}", f"serverless-offline {lang}", f"serverless-offline, {lang}"
    r = rps.get(mine)
    return [
        Row(s, f"throughput, {lang} handler (2xx/s)", "req/s", r, "ideal 32 / 0.05 s", IDEAL,
            target=">= 0.9x ideal", ok=at_least(r / IDEAL if r is not None else None, 0.9),
            note="; ".join(x for x in (router_note, m.errors_note()) if x)),
        Row(s, f"throughput, {lang} handler, vs serverless-offline", "req/s", r, label, rps.get(peer)),
        Row(s, f"latency p50, {lang} handler", "ms", p50.get(mine), label, p50.get(peer)),
        Row(s, f"environments, {lang} handler", "count", envs.get(fn), f"{label} (processes)", sls_envs,
            note=f"router: router_environments{{function={fn}}} at the end of the run, {router_kids} "
            f"processes under the router (all functions); {sls_note}"),
    ]


async def _scenario_13(ctx: Ctx, rounds: int, seconds: float, warm_s: float) -> list[Row]:
    node, refused = await node_runtime(ctx)
    sls_why = await serverless_offline(ctx)
    s = "13 webhook sync, 50 ms I/O, 32 conn"
    fns: dict[str, dict[str, Any]] = {"io_py": function(IO_PY)}
    peer = [PeerFunction("io_py", IO_PY, "python3.11", "/io-py")]
    if node is not None:
        peer.append(PeerFunction("io_node", IO_NODE, node.runtime, "/io-node"))
        if not refused:
            fns["io_node"] = function(IO_NODE, node.runtime)
    async with contextlib.AsyncExitStack() as stack:
        routes = [webhook(n, "/" + n.replace("_", "-"), n) for n in fns]
        proc, router_base = await stack.enter_async_context(
            running_router(ctx, "io", extra_functions=fns, extra_routes=routes))
        targets = {"router python": router_target(proc.pid, router_base, "/io-py")}
        sls_pid, sls_base = 0, ""
        started = None if sls_why else await start_offline(ctx, stack, "offline-13", peer)
        if started:
            sls_pid, sls_base = started
            targets["serverless-offline python"] = offline_target(sls_pid, sls_base, "/io-py", python=True)
        if "io_node" in fns:
            targets["router node"] = router_target(proc.pid, router_base, "/io-node")
        if sls_pid and node is not None:
            targets["serverless-offline node"] = offline_target(sls_pid, sls_base, "/io-node", python=False)
        ctx.say(f"13: {CONNECTIONS} connections, {rounds} x {seconds:g}s per target ({', '.join(targets)})")
        m = await measure(ctx, targets, CONNECTIONS, seconds, rounds, warm_s)
        envs = {fn: await environments(router_base, fn) for fn in fns}
        router_kids = len(descendants(proc.pid))
        sls_note = offline_processes_note(sls_pid) if sls_pid else f"serverless-offline skipped: {sls_why}"
        sls_py = float(len(handler_processes(sls_pid))) if sls_pid else None
    rows = _io_rows(s, "python", "io_py", m, envs, router_kids, sls_note, sls_py, None)
    if node is not None:
        rows += _io_rows(s, "node", "io_node", m, envs, router_kids,
                         "serverless-offline --useInProcess: one node process", 1.0 if sls_pid else None,
                         refused and f"router Node runtime not available: {refused}")
    return rows


async def run(ctx: Ctx) -> list[Row]:
    rounds, seconds, warm_s = (1, 3.0, 2.0) if ctx.quick else (3, 8.0, 3.0)
    rows: list[Row] = []
    for sid, scenario in (("12", _scenario_12), ("13", _scenario_13)):
        if ctx.wants(sid):
            try:
                rows += await scenario(ctx, rounds, seconds, warm_s)
            except BenchError as exc:  # e.g. a router that does not start: keep the other scenario
                ctx.notes.append(f"scenario {sid}: {exc}")
                ctx.say(f"!! {sid}: {exc}")
    return rows
