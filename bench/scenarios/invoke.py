"""Scenarios 3, 4 and 14: warm and cold invocations through execution environments, in the bench process.

Router side: ``LocalInvoker.invoke`` with the router's ``RuntimeApiServer``, timed around the call.
Baselines: the bare Runtime API of bench/servers/bare_runtime.py (a queue and a future) with
  - the bare bootstrap (bench/servers/bare_bootstrap.py: stdlib http.client loop), and
  - awslambdaric (the official Python runtime interface client),
and, for cold starts, ``python -c`` importing the handler and printing its result (scenario 14: the Node
runtime's cold start against ``node -e`` requiring the Node handler and printing its result).

Warm targets stay up side by side and are sampled in interleaved chunks. Router-side overhead
(scenario 3) = p50 of LocalInvoker.invoke with runtime ``provided`` running the *bare* bootstrap, minus
p50 of the bare API with the same bare bootstrap: same worker code, same handler, so the difference is
what the router's server side (invoker, pool, Runtime API server) adds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from bench.harness import BENCH_DIR, PYTHON, Ctx, cpu_seconds, descendants
from bench.peers import find_node
from bench.report import Row, at_most
from bench.router_proc import OK_CODE
from bench.servers.bare_runtime import BareRuntimeApi

BARE_BOOTSTRAP = BENCH_DIR / "servers" / "bare_bootstrap.py"
OK_NODE = BENCH_DIR / "functions" / "ok_node"
BARE_ARGV = [PYTHON, str(BARE_BOOTSTRAP)]
RIC_ARGV = [PYTHON, "-m", "awslambdaric", "app.handler"]
PAYLOAD = b"{}"


def _pct(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] if len(samples) > 1 else samples[0]


class Samples(list[float]):
    """Seconds per call, plus CPU per call (us) of the bench process (the API server side) and of the
    worker process."""

    cpu_server_us: float = 0.0
    cpu_worker_us: float = 0.0


Call = Callable[[], Awaitable[Any]]
Target = tuple[Call, Callable[[], list[int]]]
"""One invocation of a warm target, and the pids of its worker."""


async def interleaved(targets: dict[str, Target], n: int, budget: float, chunk: int = 100
                      ) -> dict[str, Samples]:
    """``n`` calls of each target one at a time, in interleaved chunks (a, b, c, a, b, c, ...), so a
    slow moment of the machine hits every target alike; stops early when ``budget`` seconds are used."""
    out = {k: Samples() for k in targets}
    server = {k: 0.0 for k in targets}
    worker = {k: 0.0 for k in targets}
    me = os.getpid()
    deadline = time.monotonic() + budget
    while min(len(v) for v in out.values()) < n and time.monotonic() < deadline:
        for name, (call, pids) in targets.items():
            wpids = pids()
            s0, w0 = cpu_seconds([me]), cpu_seconds(wpids)
            for _ in range(chunk):
                t0 = time.perf_counter()
                await call()
                out[name].append(time.perf_counter() - t0)
            server[name] += cpu_seconds([me]) - s0
            worker[name] += cpu_seconds(wpids) - w0
    for name, samples in out.items():
        samples.cpu_server_us = server[name] / len(samples) * 1e6
        samples.cpu_worker_us = worker[name] / len(samples) * 1e6
    return out


def provided_code_dir(tmp: Path) -> Path:
    """A code dir for runtime ``provided`` whose ``bootstrap`` runs the bare bootstrap and the ok handler."""
    d = tmp / "provided"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(OK_CODE / "app.py", d / "app.py")
    boot = d / "bootstrap"
    boot.write_text(f"#!/bin/sh\nexec {PYTHON} {BARE_BOOTSTRAP}\n")
    boot.chmod(0o755)
    return d


class RouterSide:
    """The router's Runtime API server and LocalInvokers made as router.app makes them."""

    def __init__(self, metrics: Any) -> None:
        from router.runtime.api import RuntimeApiServer
        from router.runtime.template import TemplateManager

        self.api = RuntimeApiServer()
        self.templates = TemplateManager()  # python environments are forked from templates, as in the router
        self.metrics = metrics

    def invoker(self, name: str, code: Path, runtime: str = "python3.11", fork_start: bool = True) -> Any:
        from router.config.models import AwsConfig, FunctionConfig
        from router.invokers.local import LocalInvoker

        fn = FunctionConfig.model_validate(
            {"runtime": runtime, "handler": "app.handler", "code": str(code), "timeout": 10, "memory": 256,
             "fork_start": fork_start})
        return LocalInvoker(name, fn, code_dir=code, aws=AwsConfig.model_validate({}), metrics=self.metrics,
                            runtime_api=self.api, templates=self.templates,
                            arn=f"arn:aws:lambda:us-east-1:000000000000:function:{name}")

    async def close(self) -> None:
        await self.templates.close()
        await self.api.close()


async def _invoke_ok(invoker: Any, name: str) -> None:
    from router.invocation import Invocation

    result = await invoker.invoke(Invocation(function=name, payload=PAYLOAD, source="bench"))
    if not result.ok:
        raise RuntimeError(f"{name}: invocation failed: {result.payload[:300]!r}")


@contextlib.asynccontextmanager
async def router_target(side: RouterSide, name: str, code: Path, runtime: str) -> AsyncIterator[Target]:
    """A warm LocalInvoker (50 calls made) and its environment's pids."""
    before = set(descendants(os.getpid()))
    inv = side.invoker(name, code, runtime)
    await inv.start()
    try:
        for _ in range(50):
            await _invoke_ok(inv, name)
        pids = [p for p in descendants(os.getpid()) if p not in before]
        yield (lambda: _invoke_ok(inv, name)), (lambda: pids)
    finally:
        await inv.close()


@contextlib.asynccontextmanager
async def bare_target(argv: list[str]) -> AsyncIterator[Target]:
    """A bare Runtime API with one warm worker (50 calls made)."""
    api = BareRuntimeApi()
    await api.start()
    worker = await api.spawn(argv, OK_CODE)
    try:
        for _ in range(50):
            await api.invoke(PAYLOAD)
        yield (lambda: api.invoke(PAYLOAD)), (lambda: [worker.pid])
    finally:
        await worker.stop()
        await api.close()


async def warm_samples(ctx: Ctx, side: RouterSide | None, n: int, budget: float) -> dict[str, Samples]:
    """Interleaved samples of every warm target that starts; a target that fails is left out (noted)."""
    prov = provided_code_dir(ctx.tmp)
    makers: dict[str, Callable[[], contextlib.AbstractAsyncContextManager[Target]]] = {
        "bare": lambda: bare_target(BARE_ARGV),
        "ric": lambda: bare_target(RIC_ARGV),
    }
    if side is not None:
        makers["router_py"] = lambda: router_target(side, "warm", OK_CODE, "python3.11")
        makers["router_prov"] = lambda: router_target(side, "warmprov", prov, "provided")
    async with contextlib.AsyncExitStack() as stack:
        targets: dict[str, Target] = {}
        for name, make in makers.items():
            try:
                targets[name] = await stack.enter_async_context(make())
            except Exception as exc:
                ctx.notes.append(f"3 {name}: could not start: {type(exc).__name__}: {str(exc)[:300]}")
        return await interleaved(targets, n, budget)


async def _router_cold(side: RouterSide, code: Path, n: int, runtime: str = "python3.11",
                       fork_start: bool = True, *, warm_up: bool = True, first: int = 0) -> list[float]:
    """Spawn (or fork) to first result of a fresh invoker, ``n`` times; the template is started first
    (by a cold start not counted), as a running router has it from its first cold start on (python
    environments are forked from it; node ones are started through it)."""
    if fork_start and warm_up:
        inv = side.invoker(f"cold-warmup-{runtime}", code, runtime)
        await inv.start()
        try:
            await _invoke_ok(inv, f"cold-warmup-{runtime}")
        finally:
            await inv.close()
    out = []
    for i in range(first, first + n):
        name = f"cold{i}{'' if fork_start else '-exec'}"
        inv = side.invoker(name, code, runtime, fork_start)
        await inv.start()
        try:
            t0 = time.perf_counter()
            await _invoke_ok(inv, name)
            out.append(time.perf_counter() - t0)
        finally:
            await inv.close()
    return out


async def _bare_cold(argv: list[str], n: int) -> list[float]:
    """A fresh bare API per sample (as the router's invoker is fresh), then spawn to first result."""
    out = []
    for _ in range(n):
        api = BareRuntimeApi()
        await api.start()
        try:
            t0 = time.perf_counter()
            worker = await api.spawn(argv, OK_CODE)
            try:
                await api.invoke(PAYLOAD)
                out.append(time.perf_counter() - t0)
            finally:
                await worker.stop()
        finally:
            await api.close()
    return out


async def _python_c_cold(n: int) -> list[float]:
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import app; "
            "sys.stdout.write(json.dumps(app.handler({}, None)) + '\\n'); sys.stdout.flush()")
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            PYTHON, "-c", code, str(OK_CODE), stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL)
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 10)
            out.append(time.perf_counter() - t0)
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await proc.wait()
        if b"statusCode" not in line:
            raise RuntimeError(f"python -c baseline: unexpected output {line!r}")
    return out


# The environment a function gets from the router (PATH, LANG, Lambda's variables), not the bench's: a
# machine-wide NODE_EXTRA_CA_CERTS or NODE_OPTIONS would slow `node -e` alone (a CA bundle costs ~60 ms of
# node start-up on the development machine; Lambda's nodejs20.x no longer loads one by default either).
NODE_E_ENV = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LANG": "en_US.UTF-8"}


async def _node_e_cold(node: str, code: Path, n: int) -> list[float]:
    """``node -e`` requiring the handler and printing its result: spawn to first result, no Runtime API."""
    script = ("const h = require(require('path').join(process.argv[1], 'app.js')).handler;"
              "Promise.resolve(h({}, {})).then((r) => process.stdout.write(JSON.stringify(r) + '\\n'));")
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            node, "-e", script, str(code), stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
            env=NODE_E_ENV)
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 10)
            out.append(time.perf_counter() - t0)
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await proc.wait()
        if b"statusCode" not in line:
            raise RuntimeError(f"node -e baseline: unexpected output {line!r}")
    return out


async def _node_rows(ctx: Ctx, side: RouterSide | None, n: int) -> list[Row]:
    """Scenario 14: router nodejs<major>.x spawn to first result vs ``node -e`` requiring the handler."""
    s = "14 cold start (node)"
    node = await find_node(ctx)
    if isinstance(node, str):
        return [Row(s, "spawn to first result p50", "ms", None, "node -e", None, target="<= 1.2x node -e",
                    note=f"not measured: {node}")]
    base: list[float] | None
    cold: list[float] | None = None
    note = ""
    if side is not None:
        try:
            side.invoker("coldnode", OK_NODE, node.runtime)
        except Exception as exc:  # the config model refuses a runtime it does not know
            note = f"router Node runtime not available ({node.runtime}): {str(exc).splitlines()[-1][:200]}"
            side = None
    if side is None:
        base = await _guard(ctx, "14 node -e", _node_e_cold(node.path, OK_NODE, n))
    else:
        # Interleaved, one sample of each side in turn: a slow moment of the machine hits both alike.
        await _guard(ctx, "14 router node cold", _router_cold(side, OK_NODE, 1, node.runtime))  # warm-up
        base, cold = [], []
        for i in range(n):
            b = await _guard(ctx, "14 node -e", _node_e_cold(node.path, OK_NODE, 1))
            c = await _guard(ctx, "14 router node cold",
                             _router_cold(side, OK_NODE, 1, node.runtime, warm_up=False, first=i + 1))
            if b is None or c is None:
                base = cold = None
                break
            base += b
            cold += c
    c_ms, b_ms = _ms(cold), _ms(base)
    ratio = c_ms / b_ms if c_ms is not None and b_ms else None
    return [Row(s, "spawn to first result p50", "ms", c_ms, "node -e", b_ms,
                target="<= 1.2x node -e", ok=at_most(ratio, 1.2), note=note or f"node {node.version}")]


T = TypeVar("T")


async def _guard(ctx: Ctx, what: str, coro: Awaitable[T]) -> T | None:
    try:
        return await coro
    except Exception as exc:
        ctx.notes.append(f"{what}: could not run: {type(exc).__name__}: {str(exc)[:300]}")
        return None


def _us(samples: list[float] | None, q: int = 50) -> float | None:
    return None if not samples else _pct(samples, q) * 1e6


def _cpu(samples: Samples | None, which: str) -> float | None:
    if not samples:
        return None
    return samples.cpu_server_us if which == "server" else samples.cpu_worker_us


def _ms(samples: list[float] | None) -> float | None:
    return None if not samples else statistics.median(samples) * 1000


async def run(ctx: Ctx) -> list[Row]:
    n, budget, cold_n = (500, 10.0, 5) if ctx.quick else (3000, 40.0, 20)
    rows: list[Row] = []
    try:
        from router.metrics import Metrics

        side = RouterSide(Metrics())
    except ImportError as exc:
        ctx.notes.append(f"scenarios 3-4: router runtime not importable: {exc}")
        side = None
    if side is not None:
        await side.api.start()
    try:
        if ctx.wants("3"):
            ctx.say(f"3: warm invocations, {n} each, one at a time")
            got = await warm_samples(ctx, side, n, budget)
            r_py, r_prov = got.get("router_py"), got.get("router_prov")
            b_bare, b_ric = got.get("bare"), got.get("ric")
            s = "3 warm invoke"
            p_prov, p_bare = _us(r_prov), _us(b_bare)
            overhead = p_prov - p_bare if p_prov is not None and p_bare is not None else None
            rows += [
                Row(s, "router-side overhead p50", "us", overhead, auto_ratio=False, target="<= 300 us",
                    ok=at_most(overhead, 300),
                    note="LocalInvoker(provided, bare bootstrap) p50 minus bare API (same bootstrap) p50"),
                Row(s, "p50, provided + bare bootstrap", "us", _us(r_prov), "bare API + bare bootstrap",
                    _us(b_bare)),
                Row(s, "p50, python3.11 runtime", "us", _us(r_py), "bare API + awslambdaric", _us(b_ric)),
                Row(s, "p99, python3.11 runtime", "us", _us(r_py, 99), "bare API + awslambdaric",
                    _us(b_ric, 99)),
                Row(s, "server-side CPU per invocation", "us", _cpu(r_prov, "server"),
                    "bare API (same bare bootstrap)", _cpu(b_bare, "server"),
                    note="CPU of the bench process (which hosts the API server) / invocations"),
                Row(s, "worker CPU per invocation", "us", _cpu(r_py, "worker"), "bare bootstrap",
                    _cpu(b_bare, "worker"), note=f"router python bootstrap; awslambdaric: "
                    f"{_cpu(b_ric, 'worker') or 0:.0f} us"),
            ]
        if ctx.wants("4"):
            ctx.say(f"4: cold starts, {cold_n} each")
            r_cold = await _guard(ctx, "4 router cold", _router_cold(side, OK_CODE, cold_n)) if side else None
            r_exec = (await _guard(ctx, "4 router cold, exec", _router_cold(side, OK_CODE, cold_n,
                                                                        fork_start=False))
                      if side else None)
            b_pyc = await _guard(ctx, "4 python -c", _python_c_cold(cold_n))
            c_bare = await _guard(ctx, "4 bare bootstrap cold", _bare_cold(BARE_ARGV, cold_n))
            c_ric = await _guard(ctx, "4 awslambdaric cold", _bare_cold(RIC_ARGV, cold_n))
            s = "4 cold start (python)"
            rows += [
                Row(s, "spawn to first result p50", "ms", _ms(r_cold), "python -c", _ms(b_pyc),
                    target="<= 15 ms", ok=at_most(_ms(r_cold), 15),
                    note="forked from the runtime's template (fork_start, the default), the template "
                    "started before the first sample; issue 8 also states it as <= 0.5x python -c"),
                Row(s, "spawn to first result p50, fork_start: false", "ms", _ms(r_exec), "python -c",
                    _ms(b_pyc), note="a new interpreter per environment (exec)"),
                Row(s, "vs a bare Runtime API loop", "ms", _ms(r_cold), "bare API + bare bootstrap",
                    _ms(c_bare)),
                Row(s, "vs awslambdaric", "ms", _ms(r_cold), "bare API + awslambdaric", _ms(c_ric)),
            ]
        if ctx.wants("14"):
            ctx.say(f"14: node cold starts, {cold_n} each")
            rows += await _node_rows(ctx, side, cold_n)
    finally:
        if side is not None:
            await side.close()
    return rows
