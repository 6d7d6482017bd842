"""Scenarios 3 and 4: warm and cold invocations through execution environments, in the bench process.

Router side: ``LocalInvoker.invoke`` with the router's ``RuntimeApiServer``, timed around the call.
Baselines: the bare Runtime API of bench/servers/bare_runtime.py (a queue and a future) with
  - the bare bootstrap (bench/servers/bare_bootstrap.py: stdlib http.client loop), and
  - awslambdaric (the official Python runtime interface client),
and, for cold starts, ``python -c`` importing the handler and printing its result.

Router-side overhead (scenario 3) = p50 of LocalInvoker.invoke with runtime ``provided`` running the *bare*
bootstrap, minus p50 of the bare API with the same bare bootstrap: same worker code, same handler, so
the difference is what the router's server side (invoker, pool, Runtime API server) adds.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from bench.harness import BENCH_DIR, PYTHON, Ctx, cpu_seconds, descendants
from bench.report import Row, at_most
from bench.router_proc import OK_CODE
from bench.servers.bare_runtime import BareRuntimeApi

BARE_BOOTSTRAP = BENCH_DIR / "servers" / "bare_bootstrap.py"
BARE_ARGV = [PYTHON, str(BARE_BOOTSTRAP)]
RIC_ARGV = [PYTHON, "-m", "awslambdaric", "app.handler"]
PAYLOAD = b"{}"


def _pct(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] if len(samples) > 1 else samples[0]


class Samples(list[float]):
    """Seconds per call, plus CPU per call (us) of this process (the server side) and of its children
    (the worker)."""

    cpu_server_us: float = 0.0
    cpu_worker_us: float = 0.0


async def _timed(call: Callable[[], Awaitable[Any]], n: int, budget: float) -> Samples:
    """``n`` calls one at a time, stopping early when ``budget`` seconds are used."""
    out = Samples()
    me = os.getpid()
    kids = descendants(me)
    s0, w0 = cpu_seconds([me]), cpu_seconds(kids)
    deadline = time.monotonic() + budget
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t0)
        if time.monotonic() > deadline:
            break
    out.cpu_server_us = (cpu_seconds([me]) - s0) / len(out) * 1e6
    out.cpu_worker_us = (cpu_seconds(kids) - w0) / len(out) * 1e6
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

        self.api = RuntimeApiServer()
        self.metrics = metrics

    def invoker(self, name: str, code: Path, runtime: str = "python3.11") -> Any:
        from router.config.models import AwsConfig, FunctionConfig
        from router.invokers.local import LocalInvoker

        fn = FunctionConfig.model_validate(
            {"runtime": runtime, "handler": "app.handler", "code": str(code), "timeout": 10, "memory": 256})
        return LocalInvoker(name, fn, code_dir=code, aws=AwsConfig.model_validate({}), metrics=self.metrics,
                            runtime_api=self.api,
                            arn=f"arn:aws:lambda:us-east-1:000000000000:function:{name}")


async def _invoke_ok(invoker: Any, name: str) -> None:
    from router.core.invocation import Invocation

    result = await invoker.invoke(Invocation(function=name, payload=PAYLOAD, source="bench"))
    if not result.ok:
        raise RuntimeError(f"{name}: invocation failed: {result.payload[:300]!r}")


async def _router_warm(side: RouterSide, name: str, code: Path, runtime: str, n: int, budget: float
                       ) -> Samples:
    inv = side.invoker(name, code, runtime)
    await inv.start()
    try:
        for _ in range(50):
            await _invoke_ok(inv, name)
        return await _timed(lambda: _invoke_ok(inv, name), n, budget)
    finally:
        await inv.close()


async def _bare_warm(argv: list[str], n: int, budget: float) -> Samples:
    api = BareRuntimeApi()
    await api.start()
    worker = await api.spawn(argv, OK_CODE)
    try:
        for _ in range(50):
            await api.invoke(PAYLOAD)
        return await _timed(lambda: api.invoke(PAYLOAD), n, budget)
    finally:
        await worker.stop()
        await api.close()


async def _router_cold(side: RouterSide, code: Path, n: int) -> list[float]:
    out = []
    for i in range(n):
        name = f"cold{i}"
        inv = side.invoker(name, code)
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
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        out.append(time.perf_counter() - t0)
        await proc.wait()
        if b"statusCode" not in line:
            raise RuntimeError(f"python -c baseline: unexpected output {line!r}")
    return out


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
    n, budget, cold_n = (500, 5.0, 5) if ctx.quick else (3000, 20.0, 20)
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
            prov = provided_code_dir(ctx.tmp)
            r_py = r_prov = None
            if side is not None:
                r_py = await _guard(ctx, "3 router python3.11",
                                    _router_warm(side, "warm", OK_CODE, "python3.11", n, budget))
                r_prov = await _guard(ctx, "3 router provided+bare bootstrap",
                                      _router_warm(side, "warmprov", prov, "provided", n, budget))
            b_bare = await _guard(ctx, "3 bare bootstrap", _bare_warm(BARE_ARGV, n, budget))
            b_ric = await _guard(ctx, "3 awslambdaric", _bare_warm(RIC_ARGV, n, budget))
            s = "3 warm invoke"
            overhead = (_us(r_prov) - _us(b_bare)) if r_prov and b_bare else None  # type: ignore[operator]
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
            b_pyc = await _guard(ctx, "4 python -c", _python_c_cold(cold_n))
            c_bare = await _guard(ctx, "4 bare bootstrap cold", _bare_cold(BARE_ARGV, cold_n))
            c_ric = await _guard(ctx, "4 awslambdaric cold", _bare_cold(RIC_ARGV, cold_n))
            s = "4 cold start (python)"
            rows += [
                Row(s, "spawn to first result p50", "ms", _ms(r_cold), "python -c", _ms(b_pyc),
                    target="<= 50 ms", ok=at_most(_ms(r_cold), 50)),
                Row(s, "vs a bare Runtime API loop", "ms", _ms(r_cold), "bare API + bare bootstrap",
                    _ms(c_bare)),
                Row(s, "vs awslambdaric", "ms", _ms(r_cold), "bare API + awslambdaric", _ms(c_ric)),
            ]
    finally:
        if side is not None:
            await side.api.close()
    return rows
