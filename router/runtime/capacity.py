"""What the machine gives execution environments: how busy its CPUs are, and a memory budget for all.

``CpuLoad`` answers "would another environment add throughput, or only contend for the CPUs?" from the
kernel's counters, over short windows. The CPUs are saturated when their busy share is at the threshold:
the router's cgroup (``cpu.stat`` against its ``cpu.max`` quota) when it runs under a CPU quota, as in a
container with a CPU limit; else ``/proc/stat`` for the CPUs of its affinity mask. The router itself is
saturated when its own process uses a whole CPU (its event loop is one thread: it then cannot hand
events to more environments any faster). Both are procfs/cgroupfs reads served from kernel memory,
never a disk, so they are safe on the event loop; a sample is taken at most once per window, when a
decision needs one.

``MemoryBudget`` is the memory every environment of every function reserves together (each its
function's ``memory``, as Lambda reserves it), like Lambda's account-wide limits: a pool reserves before
it starts an environment and releases when the environment is closed; when the budget is spent, idle
environments of any function are reaped, least recently used first, to make room.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger("router.runtime")

SATURATED = 0.9
"""Share of the usable CPU time in use over a window above which the CPUs count as saturated."""
WINDOW = 0.1
"""Seconds between two CPU samples (a verdict covers the last complete window)."""
ROUTER_HOLD = 0.8
"""Once the router's own process counts as saturated, it stays so until a window where it used less than
this share of a CPU: an event loop that is the bottleneck still shows windows a little under
``SATURATED`` (measured: ~0.97 of a CPU on average at 32 connections, windows of 0.87-1.0), and each
such window alone would let the pool start another environment that adds no throughput."""
_CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cpus() -> float:
    """CPUs the router may use: its affinity mask, capped by a cgroup v2 CPU quota when there is one."""
    cpus = float(len(os.sched_getaffinity(0)))
    quota = _cgroup_quota(_own_cgroup())
    return min(cpus, quota) if quota is not None else cpus


def _own_cgroup() -> Path | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    if len(lines) != 1 or not lines[0].startswith("0::"):
        return None
    return _CGROUP_ROOT / lines[0][3:].lstrip("/")


def _cgroup_quota(cgroup: Path | None) -> float | None:
    """CPUs allowed by ``cpu.max`` of ``cgroup`` or its nearest limited ancestor, None when unlimited."""
    while cgroup is not None and _CGROUP_ROOT in (cgroup, *cgroup.parents):
        try:
            quota, period = (cgroup / "cpu.max").read_text().split()
            if quota != "max":
                return int(quota) / int(period)
        except (OSError, ValueError):
            pass
        if cgroup == _CGROUP_ROOT:
            break
        cgroup = cgroup.parent
    return None


class CpuVerdict(Protocol):
    """A CPU verdict; one with a ``generation`` attribute (the sampling window's number) is followed
    once per window, one without on every call."""

    def saturated(self) -> bool:
        """Whether another environment would only contend for the CPUs."""


class CpuLoad:
    """Whether the usable CPUs are saturated (see the module doc)."""

    def __init__(self, *, threshold: float = SATURATED, window: float = WINDOW,
                 clock: Callable[[], float] = time.monotonic,
                 own_cpu: Callable[[], float] = time.process_time) -> None:
        self.threshold = threshold
        self.window = window
        self._clock = clock
        self._own_cpu = own_cpu
        self.cpus = usable_cpus()
        cgroup = _own_cgroup()
        self._quota = _cgroup_quota(cgroup)
        self._cpu_stat = cgroup / "cpu.stat" if cgroup is not None and self._quota is not None else None
        self._affinity = {f"cpu{n}" for n in os.sched_getaffinity(0)}
        self._last_at = clock()
        self._last = self._sample()
        self._last_own = own_cpu()
        self._saturated = False
        self.router_saturated = False  # the router's own process used a whole CPU (see ROUTER_HOLD)
        self.generation = 0  # counts the windows sampled: a new verdict each time it changes

    def saturated(self) -> bool:
        """The verdict of the last complete window (a new one is sampled when the window has passed)."""
        now = self._clock()
        elapsed = now - self._last_at
        if elapsed >= self.window:
            sample, own = self._sample(), self._own_cpu()
            machine = (self._share(self._last, sample, elapsed)
                       if sample is not None and self._last is not None else 0.0)
            router = (own - self._last_own) / elapsed
            held = self.router_saturated and router >= ROUTER_HOLD
            self.router_saturated = router >= self.threshold or held
            self._saturated = machine >= self.threshold or self.router_saturated
            self._last, self._last_at, self._last_own = sample, now, own
            self.generation += 1
        return self._saturated

    def _share(self, before: tuple[float, float], after: tuple[float, float], elapsed: float) -> float:
        busy, total = after[0] - before[0], after[1] - before[1]
        if self._cpu_stat is not None:  # busy = CPU-seconds used by the cgroup; capacity = quota x time
            assert self._quota is not None
            return busy / (self._quota * elapsed) if elapsed > 0 else 0.0
        return busy / total if total > 0 else 0.0

    def _sample(self) -> tuple[float, float] | None:
        """(busy, total) CPU time in seconds: the cgroup's usage, or /proc/stat over the affinity CPUs."""
        try:
            if self._cpu_stat is not None:
                for line in self._cpu_stat.read_text().splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) / 1e6, 0.0
                return None
            busy = total = 0
            with open("/proc/stat", "rb") as f:
                for raw in f:
                    if not raw.startswith(b"cpu"):
                        break  # the cpu lines come first
                    name, *fields = raw.split()
                    if name == b"cpu" or name.decode() not in self._affinity:
                        continue
                    # user nice system idle iowait irq softirq steal (guest time is inside user)
                    values = [int(v) for v in fields[:8]]
                    total += sum(values)
                    busy += sum(values) - values[3] - values[4]
            tick = os.sysconf("SC_CLK_TCK")
            return busy / tick, total / tick
        except (OSError, ValueError, IndexError):
            return None


def available_memory_mb() -> int | None:
    """``MemAvailable`` of the machine in MB (None when unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError):
        return None
    return None


def machine_memory_mb() -> int:
    """Memory of the machine, or of the router's cgroup when that is limited, in MB."""
    total = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) // 1024
                break
    except (OSError, ValueError):
        total = 0
    cgroup = _own_cgroup()
    while cgroup is not None and _CGROUP_ROOT in (cgroup, *cgroup.parents) and cgroup != _CGROUP_ROOT:
        try:
            limit = (cgroup / "memory.max").read_text().strip()
            if limit != "max":
                total = min(total, int(limit) // (1024 * 1024)) if total else int(limit) // (1024 * 1024)
                break
        except (OSError, ValueError):
            pass
        cgroup = cgroup.parent
    return total


class MemoryBudget:
    """The memory all environments reserve together, in MB (see the module doc)."""

    def __init__(self, total_mb: int, *, floor_mb: int = 0,
                 available: Callable[[], int | None] = available_memory_mb) -> None:
        self.total = total_mb
        self.floor = floor_mb  # keep at least this much of the machine's memory available
        self.reserved = 0
        self._available = available
        self._reapers: list[Callable[[], tuple[float, Callable[[], int]] | None]] = []

    def add_reaper(self, oldest_idle: Callable[[], tuple[float, Callable[[], int]] | None]) -> None:
        """Register a pool: ``oldest_idle()`` gives (idle since, reap) for its least recently used
        idle environment that may be reaped, or None; ``reap()`` takes it out of service and returns the
        MB it frees (released from this budget by the pool itself)."""
        self._reapers.append(oldest_idle)

    def remove_reaper(self, oldest_idle: Callable[[], tuple[float, Callable[[], int]] | None]) -> None:
        if oldest_idle in self._reapers:
            self._reapers.remove(oldest_idle)

    def fits(self, mb: int) -> bool:
        """Whether ``mb`` more fits in the budget as it stands (nothing reaped, nothing reserved)."""
        return self.reserved + mb <= self.total

    def try_reserve(self, mb: int) -> bool:
        """Reserve ``mb`` for a new environment. When the budget is spent, idle environments are reaped,
        least recently used first, until there is room (False when there is none); when the machine is
        short of memory (less than ``floor`` MB would be left available), one idle environment is
        reaped for each one started."""
        while not self.fits(mb):
            if self._reap_oldest() <= 0:
                return False
        if self.floor > 0:
            available = self._available()
            if available is not None and available - mb < self.floor:
                self._reap_oldest()
        self.reserved += mb
        return True

    def _reap_oldest(self) -> int:
        """Reap the least recently used idle environment of any pool; the MB it frees (0: none)."""
        candidates = [c for c in (r() for r in self._reapers) if c is not None]
        if not candidates:
            return 0
        _, reap = min(candidates, key=lambda c: c[0])
        return reap()

    def reserve(self, mb: int) -> None:
        """Reserve ``mb`` even over the budget (provisioned environments, asked for explicitly)."""
        self.reserved += mb

    def release(self, mb: int) -> None:
        self.reserved = max(0, self.reserved - mb)


@dataclass
class Capacity:
    """What every pool of the router shares when it sizes its environments (see router.runtime.pool).

    ``cpu``: the CPU verdict (None: start an environment for every concurrent invocation, as Lambda's
    on-demand scaling does); ``budget``: the memory budget of all environments (None: unbounded);
    ``environment_wait``: the longest an invocation waits for an environment before a saturated CPU no
    longer holds a start back (and a spent budget throttles it); ``max_starting``: environments of one
    function starting at once; ``min_environments``: environments a function may have whatever the CPUs
    say (one per usable CPU).
    """

    cpu: CpuVerdict | None = None
    budget: MemoryBudget | None = None
    environment_wait: float = 1.0
    max_starting: int = 1_000_000
    min_environments: int = 1

    @classmethod
    def of_machine(
        cls, *, memory_mb: int | None, environment_wait: float, cpu_scaling: bool = True
    ) -> Capacity:
        """Scaling on this machine's CPUs (``cpu_scaling``; else one environment per concurrent
        invocation), with a memory budget of ``memory_mb`` (None: 75 % of the machine's or the router's
        cgroup's memory) that keeps 5 % of the machine available."""
        machine = machine_memory_mb()
        total = memory_mb if memory_mb is not None else machine * 3 // 4
        budget = MemoryBudget(total, floor_mb=machine // 20)
        if not cpu_scaling:
            return cls(budget=budget, environment_wait=environment_wait)
        cpu = CpuLoad()
        cpus = max(1, math.ceil(cpu.cpus))
        return cls(cpu=cpu, budget=budget, environment_wait=environment_wait, max_starting=cpus,
                   min_environments=cpus)
