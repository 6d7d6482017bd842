"""Process plumbing for the benchmarks: free ports, servers started and always stopped, RSS, machine info."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
PYTHON = sys.executable
HOST = "127.0.0.1"


class BenchError(Exception):
    """Raised when a scenario cannot run (a server does not start, a tool is missing)."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the usual bind-to-0 trick; the race with other programs is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid``, from /proc/PID/task/*/children."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                kids = [int(x) for x in (task / "children").read_text().split()]
                out.extend(kids)
                todo.extend(kids)
    return out


def rss_kb(pid: int) -> int:
    """Resident set size of one process, kB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time used so far by ``pids`` (processes that are gone count 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLK_TCK


def pss_kb(pid: int) -> int:
    """Proportional set size of one process, kB (shared pages divided among their users)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    return ""


@dataclass
class ServerProcess:
    """A server started by the harness and stopped with SIGTERM on exit, even on error.

    Output goes to ``log_path``. Anything the server left behind (descendants still alive after it
    exited) is killed and listed in ``leaked``, so a bench run never leaves processes behind.
    """

    name: str
    argv: Sequence[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    stop_timeout: float = 20.0
    orphan_grace: float = 0.0
    """How long processes the server started may outlive it before they count as left behind: 0 for the
    router (it must reap its environments before it exits); serverless-offline kills the ``sh -c`` in
    front of each python handler, which then exits on end-of-input a moment after."""
    proc: asyncio.subprocess.Process | None = None
    leaked: list[str] = field(default_factory=list)
    _log: object | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def __aenter__(self) -> ServerProcess:
        env = dict(os.environ)
        env.update(self.env or {})
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self._log = log
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, env=env,
            cwd=str(self.cwd or REPO_DIR), start_new_session=True,
        )
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """SIGTERM, wait up to ``stop_timeout``, then SIGKILL whatever is left (also when cancelled)."""
        proc = self.proc
        if proc is None:
            return
        kids = descendants(proc.pid)
        try:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), self.stop_timeout)
                except TimeoutError:
                    self.leaked.append(
                        f"{self.name} (pid {proc.pid}) ignored SIGTERM for {self.stop_timeout}s")
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()
            for _ in range(round(self.orphan_grace / 0.05)):
                if all(_is_zombie(p) for p in kids):
                    break
                await asyncio.sleep(0.05)  # polling /proc: orphans are not our children, no wait() for them
        except asyncio.CancelledError:
            for pid in [proc.pid, *kids]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        for pid in kids:
            if not _is_zombie(pid):
                self.leaked.append(f"pid {pid} ({cmdline(pid)[:80]})")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
        self.proc = None

    def tail(self, n: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    async def wait_http(self, url: str, within: float = 30.0, expect: int = 200) -> None:
        """Wait until GET ``url`` answers ``expect``; fail early when the process exits."""
        deadline = time.monotonic() + within
        last = "no answer"
        async with aiohttp.ClientSession() as s:
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.returncode is not None:
                    code = None if self.proc is None else self.proc.returncode
                    raise BenchError(f"{self.name}: exited with status {code} before it was ready:\n"
                                     f"{self.tail()}")
                try:
                    async with s.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status == expect:
                            return
                        last = f"HTTP {r.status}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    last = type(exc).__name__
                await asyncio.sleep(0.05)  # polling interval, not synchronisation
        raise BenchError(f"{self.name}: {url} not ready after {within:.0f}s, got {last}:\n{self.tail()}")


async def metric_sum(session: aiohttp.ClientSession, base: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``, from the router's /metrics."""
    async with session.get(base + "/metrics") as r:
        text = await r.text()
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def _is_zombie(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return True


def machine_info() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) // 1024} MB"
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version() + f" ({platform.python_implementation()})",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


@dataclass
class Ctx:
    """What every scenario gets: run length, a scratch dir, the selected scenario ids, a note list."""

    quick: bool
    tmp: Path
    selected: set[str]
    notes: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)  # found once per run (node, installed peers)

    def wants(self, scenario_id: str) -> bool:
        return scenario_id in self.selected

    def say(self, msg: str) -> None:
        print(f"  .. {msg}", file=sys.stderr, flush=True)
