"""HTTP load generation: wrk when installed (a C client leaves the CPU to the servers), else aiohttp."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import time
from dataclasses import dataclass

import aiohttp

from bench.harness import BENCH_DIR, BenchError

WRK_SCRIPT = BENCH_DIR / "wrk_report.lua"
WRK_MISSING = (
    "wrk is not installed: falling back to an aiohttp load client in the bench process, which competes "
    "with the servers for CPU (absolute req/s are lower, ratios still compare like with like); "
    "install it with 'apt-get install -y wrk' (Debian/Ubuntu) or 'brew install wrk'"
)


@dataclass
class LoadResult:
    requests: int  # completed responses (any status)
    errors: int  # connect/read/write/timeout errors plus HTTP status >= 400
    seconds: float
    p50_ms: float
    p99_ms: float
    client: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def ok_rps(self) -> float:
        return max(self.requests - self.errors, 0) / self.seconds if self.seconds else 0.0


def wrk_path() -> str | None:
    return shutil.which("wrk")


async def run_load(
    url: str,
    *,
    connections: int,
    seconds: float,
    method: str = "GET",
    body: bytes = b"",
    limit: int = 0,
) -> LoadResult:
    """Drive ``url`` with ``connections`` keep-alive connections for ``seconds`` (or ``limit`` requests)."""
    if wrk_path():
        return await _wrk(url, connections, seconds, method, body, limit)
    return await _aiohttp(url, connections, seconds, method, body, limit)


async def _wrk(
    url: str, connections: int, seconds: float, method: str, body: bytes, limit: int
) -> LoadResult:
    env = dict(os.environ, BENCH_METHOD=method, BENCH_BODY=body.decode(), BENCH_LIMIT=str(limit))
    argv = [
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
        "-s", str(WRK_SCRIPT), url,
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), seconds + 30)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("BENCH_JSON "):
            d = json.loads(line.removeprefix("BENCH_JSON "))
            errors = d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"]
            # A limited run that reached its limit reports its own elapsed time (see wrk_report.lua).
            elapsed_us = d["limited_us"] or d["duration_us"]
            done = min(d["requests"], limit) if d["limited_us"] else d["requests"]
            return LoadResult(
                requests=done, errors=errors, seconds=elapsed_us / 1e6,
                p50_ms=d["p50_us"] / 1000, p99_ms=d["p99_us"] / 1000, client="wrk",
            )
    raise BenchError(f"wrk {url}: no report (exit {proc.returncode}): {err.decode(errors='replace')[-500:]}")


async def _aiohttp(
    url: str, connections: int, seconds: float, method: str, body: bytes, limit: int
) -> LoadResult:
    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + seconds
    remaining = [limit or 10**12]

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.monotonic() < stop_at and remaining[0] > 0:
            remaining[0] -= 1
            t0 = time.perf_counter()
            try:
                async with session.request(method, url, data=body or None) as r:
                    await r.read()
                    if r.status >= 400:
                        errors += 1
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
            latencies.append(time.perf_counter() - t0)

    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for _ in range(connections):
                tg.create_task(worker(session))
        elapsed = time.perf_counter() - t0
    if not latencies:
        raise BenchError(f"aiohttp client {url}: no request completed")
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return LoadResult(
        requests=len(latencies), errors=errors, seconds=elapsed, p50_ms=statistics.median(latencies) * 1000,
        p99_ms=q[98] * 1000, client="aiohttp",
    )
