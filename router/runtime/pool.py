"""The execution environments of one function: warm reuse (LIFO), cold starts, reaping, provisioned.

An environment takes ``per_environment_concurrency`` invocations at once (1, Lambda's default).
``invoke`` takes a slot of the most recently used environment that has one free, or starts a new one
(cold start), or waits. How many invocations run at once follows the machine, as Lambda Managed
Instances scale on CPU rather than one environment per request (``router.runtime.capacity``):

- the function runs at most ``_limit`` invocations at once, a limit that shrinks while the CPUs are
  saturated (another process would add no throughput, only memory and context switches: the
  invocation waits for a warm environment) and grows while they are idle and invocations wait
  (environments waiting on I/O leave the CPUs idle: more run, up to ``concurrency``); see
  ``_cpu_gate``;
- under that limit, a free slot of a warm environment is taken (most recently used first); with none,
  at the function's ``concurrency`` cap, wait (the dispatcher keeps callers under the cap: a safety
  net); while a starting environment has a free slot, or as many environments start as there are
  usable CPUs, wait for them (a start is CPU work: more at once only slows them all); reserve the
  function's ``memory`` in the router-wide budget (idle environments of any function are reaped to
  make room), else wait; otherwise start one.

Waiting invocations are served first come, first served: a slot an ending invocation frees goes
straight to the one waiting longest when the limit lets one more run (``_hand_over``), so under load the
environment stays busy and the waiter takes it without looking at the pool again. When the limit has
room for more than run and the environments sleep in their invocations, the one waiting longest is also
woken to start another (``_nudge``).

A wait is bounded by ``environment_wait`` (never past the function's timeout): after it, a saturated
CPU no longer holds the invocation back, and a spent memory budget throttles it (429, as Lambda's
account limits do). Every wait is counted in ``router_environment_waits_total{reason}``. Without a
``Capacity`` (tests, ``router invoke``) every concurrent invocation gets an environment, as on Lambda.

A maintenance task owned by the pool closes dead environments, reaps the ones idle for ``idle_timeout``
and keeps ``provisioned`` environments started (replacing those that die).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import Gauge

from router.config.models import AwsConfig, FunctionConfig
from router.errors import EnvironmentStartError
from router.invocation import ErrorType, Invocation, Outcome, Result
from router.metrics import Metrics
from router.runtime.api import RuntimeApiServer
from router.runtime.capacity import Capacity
from router.runtime.environment import TERM_GRACE, Environment, EnvState, init_timeout
from router.runtime.launch import LaunchSpec, resolve_launch
from router.runtime.memory import CgroupV2
from router.runtime.proctree import Watchdog
from router.runtime.template import TemplateManager

log = logging.getLogger("router.runtime")

UNDELIVERED_RETRIES = 3
"""Environments tried for one invocation when each dies before taking the event (it never ran)."""
REPLENISH_BACKOFF = 5.0
"""Wait between attempts to start provisioned environments whose init failed."""
RECHECK = 0.1
"""How often a waiting invocation looks again at the CPUs and the memory budget."""


class _Throttled(Exception):
    """No environment could be had within the wait (the memory budget stayed spent)."""


class EnvironmentPool:
    """Every execution environment of one local function."""

    def __init__(
        self,
        name: str,
        config: FunctionConfig,
        *,
        code_dir: Path,
        aws: AwsConfig,
        metrics: Metrics,
        runtime_api: RuntimeApiServer,
        arn: str,
        capacity: Capacity | None = None,
        templates: TemplateManager | None = None,
        watchdog: Watchdog | None = None,
        version: str = "$LATEST",
    ) -> None:
        self.name = name
        self.version = version  # a published version's pool: its own environments, code and config
        # A version's environments are counted apart (function="name:N"), so $LATEST's gauges stay true.
        label = name if version == "$LATEST" else f"{name}:{version}"
        self.watchdog = watchdog  # ends environments when the router dies (None: parent-death signal)
        self.capacity = capacity
        self.templates = templates  # fork-started environments (None: every environment is exec'd)
        self.config = config
        self.code_dir = code_dir
        self.aws = aws
        self.api = runtime_api
        self.arn = arn
        self._spec: LaunchSpec | None = None
        self._cgroup: CgroupV2 | None = None
        self._all: set[Environment] = set()  # not yet closed
        self._live: set[Environment] = set()  # starting, idle or busy
        self._available: list[Environment] = []  # ready, with a free slot; LIFO (last: most recent)
        self._dead: list[Environment] = []  # waiting for the maintenance task to close them
        self._starting = 0  # environments between spawn and ready
        self._in_flight = 0  # invocations running (slots taken) across the environments
        self._limit = float(capacity.min_environments if capacity is not None else 1)  # see _cpu_gate
        self._window: int | None = None  # the CPU sampling window the limit last followed
        self._held_back = False  # the last window's verdict: saturated CPUs, environments not asleep
        self._waiting_on_io_seen = False  # the last window's: the environments sleep in their invocations
        self._limit_reached = False  # an invocation found the limit reached since the last window
        self._sched: dict[Environment, tuple[int, int]] = {}  # last run/wait ns of busy environments
        self._sched_at = 0.0
        self._busy_time = 0.0  # seconds invocations held environments since the last look (ended ones)
        self._running_since: dict[object, float] = {}  # invocations running: when they started
        self._reserved: set[Environment] = set()  # holding memory in the capacity's budget
        # True: woken to look again (an environment freed but not handed over, a start ended, the pool
        # closes); False: the recheck timer fired; an environment: one of its slots, handed over by the
        # invocation that freed it (``_release``)
        self._waiters: collections.deque[asyncio.Future[bool | Environment]] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._next_replenish = 0.0
        self._label = label
        self._cold_starts = metrics.cold_starts.labels(label)
        self._init_duration = metrics.init_duration.labels(label)
        self._metrics = metrics
        self._wait_seconds = metrics.environment_wait.labels(label)
        self._gauges: dict[EnvState, Gauge] = {
            s: metrics.environments.labels(label, s.value)
            for s in (EnvState.STARTING, EnvState.IDLE, EnvState.BUSY)
        }
        for gauge in self._gauges.values():
            gauge.set(0)

    # --- lifecycle ------------------------------------------------------------------------------------

    async def _resolve(self) -> LaunchSpec:
        if self._spec is None:
            self._spec = await asyncio.to_thread(
                resolve_launch, self.name, self.config, self.code_dir, self.aws, self.version)
        return self._spec

    async def start(self) -> None:
        """Check the code and runtime (raises ``EnvironmentStartError``), start provisioned environments."""
        await self._resolve()
        self._cgroup = await asyncio.to_thread(CgroupV2.detect)
        if self._cgroup is not None:
            log.info("function '%s': memory limited by cgroup v2 under %s", self.name, self._cgroup.parent,
                     extra={"function": self.name})
        if self.capacity is not None and self.capacity.budget is not None:
            self.capacity.budget.add_reaper(self._oldest_idle)
        await self._replenish()
        self._task = asyncio.create_task(self._maintain(), name=f"environments:{self.name}")

    async def close(self) -> None:
        """Kill every environment (SIGTERM, then SIGKILL after a grace) and stop the maintenance task."""
        self._closing = True
        if self.capacity is not None and self.capacity.budget is not None:
            self.capacity.budget.remove_reaper(self._oldest_idle)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(True)
        for env in list(self._live):
            self._discard(env)
        envs = list(self._all)
        self._dead.clear()
        await asyncio.gather(*(self._close_env(env) for env in envs))

    async def _close_env(self, env: Environment) -> None:
        try:
            await env.close(TERM_GRACE)
        except Exception:
            log.exception("function '%s': closing environment pid %s failed", self.name, env.pid,
                          extra={"function": self.name})
        self._all.discard(env)

    # --- invoke ---------------------------------------------------------------------------------------

    async def invoke(self, invocation: Invocation) -> Result:
        try:
            await self._resolve()
        except EnvironmentStartError as exc:
            return Result.error("Runtime.InvalidEntrypoint", str(exc), error_type=ErrorType.CONFIG)
        for _ in range(UNDELIVERED_RETRIES):
            result = await self._invoke_once(invocation)
            if result is not None:
                return result
            log.info("function '%s': environment died before taking the event; running it in another",
                     self.name, extra={"function": self.name, "request_id": invocation.request_id})
        return Result.error(
            "Runtime.ExitError", f"RequestId: {invocation.request_id} Error: Runtime exited before taking "
            f"the event {UNDELIVERED_RETRIES} times")

    async def _invoke_once(self, invocation: Invocation) -> Result | None:
        try:
            env = await self._acquire()
        except _Throttled:
            return Result.error(
                "TooManyRequestsException",
                f"function '{self.name}': no room for another execution environment in the memory budget "
                "of all environments (limits.environment_memory); retry later, raise the budget or lower "
                "the memory of idle functions",
                outcome=Outcome.THROTTLED, error_type=ErrorType.THROTTLED, throttle=True, function_error=None,
            )
        if env is None:
            return Result.error(
                "Runtime.ExitError", f"function '{self.name}': the router is shutting down",
                error_type=ErrorType.CONNECTION)
        if env.state is EnvState.STARTING:
            self._starting += 1
            try:
                failure = await env.start(invocation.request_id, init_timeout(self.config.timeout))
            except BaseException:
                self._discard(env)
                raise
            finally:
                self._starting -= 1
                self._wake_waiter()  # a start slot is free
            if failure is not None:
                self._discard(env)
                self._log_failure(failure, invocation.request_id)
                return failure
            self._cold_starts.inc()
            self._observe_init(env)
            self._set_state(env, EnvState.BUSY)
            if env.in_flight < env.capacity:  # its other slots serve waiting invocations at once
                self._available.append(env)
                self._wake_waiter()
        token = object()
        self._running_since[token] = time.monotonic()
        result: Result | None = None
        try:
            result = await env.invoke(invocation, self.config.timeout)
            return result
        finally:
            held = time.monotonic() - max(self._running_since.pop(token), self._sched_at)
            if result is not None and result.runtime_duration is not None:
                # the runtime's own time: the router's includes the wait for its loop to read the result
                held = min(held, result.runtime_duration)
            self._busy_time += held
            self._release(env)

    async def _acquire(self) -> Environment | None:
        """An idle environment now BUSY, a new one STARTING (cold start), or None when closing; raises
        ``_Throttled`` when the memory budget stays spent for the whole wait (see the module doc)."""
        loop = asyncio.get_running_loop()
        waited_since: float | None = None
        while not self._closing:
            now = time.monotonic()
            bound_passed = waited_since is not None and now - waited_since >= self._wait_bound()
            reason = None if bound_passed else self._cpu_gate()
            if reason is None and waited_since is None and self._waiters:
                reason = "queued"  # first come, first served: behind the invocations already waiting
                self._nudge()  # the limit lets one more run: the one waiting longest may start it
            while reason is None and self._available:
                env = self._available[-1]
                if not env.alive:
                    self._discard(env)
                    continue
                env.in_flight += 1  # the slot is ours; the environment frees it when the invocation ends
                if env.in_flight >= env.capacity:
                    self._available.pop()
                elif waited_since is not None:
                    self._wake_waiter()  # more free slots here: pass the wake-up on
                self._set_state(env, EnvState.BUSY)
                self._in_flight += 1
                self._end_wait(waited_since)
                return env
            if reason is None:
                reason = self._must_wait()
            if reason is None:
                self._end_wait(waited_since)
                env = self._new_env(provisioned=False)
                env.in_flight += 1
                self._in_flight += 1
                return env
            if reason == "memory" and bound_passed:
                self._end_wait(waited_since)
                raise _Throttled
            if waited_since is None:
                waited_since = now
                self._metrics.child(self._metrics.environment_waits, self._label, reason).inc()
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                # Woken when an environment is released or a start ends; the CPUs and the budget are
                # looked at again every RECHECK, and once the wait's bound has passed.
                recheck = RECHECK if reason in ("cpu", "scaling", "memory", "queued") else None
                if recheck is not None and not bound_passed:
                    recheck = min(recheck, max(0.0, waited_since + self._wait_bound() - now) + 1e-3)
                # (a timer handle that settles the waiter costs less than a timeout scope: under load
                # most invocations wait here; measured ~3 % of the event loop's time)
                timer = None if recheck is None else loop.call_later(recheck, _settle_waiter, waiter)
                try:
                    got = await waiter
                finally:
                    if timer is not None:
                        timer.cancel()
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    got = waiter.result()
                    if isinstance(got, Environment):  # a slot handed over: pass it on
                        got.in_flight -= 1
                        self._release(got)
                    elif got:
                        self._wake_waiter()  # pass the wake-up on
                raise
            finally:
                # A waiter woken or handed a slot was popped already. (Not removing it again matters:
                # deque.remove's ValueError formats the missing future's repr, ~5 us under load.)
                if not waiter.done() or waiter.cancelled() or not waiter.result():
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
            if isinstance(got, Environment):
                self._end_wait(waited_since)
                return got
        return None

    def _wait_bound(self) -> float:
        wait = self.capacity.environment_wait if self.capacity is not None else self.config.timeout
        return min(wait, self.config.timeout)

    def _cpu_gate(self, *, for_waiter: bool = False) -> str | None:
        """Why this invocation must wait for the function's running invocations to stay within what the
        CPUs can serve (``_limit``): ``"cpu"`` (they are saturated) or ``"scaling"`` (the limit is
        still growing); None when it may run. ``for_waiter``: asked for the longest waiting invocation
        (an ending one hands its slot over), which ``_waiters`` counts already.

        The limit follows the CPU verdict once per sampling window, additive increase, multiplicative
        decrease. It shrinks (to no fewer than one invocation per usable CPU) while another process
        would add no throughput, only memory and context switches: while the router itself uses a
        whole CPU (it cannot hand events out any faster), or while the CPUs are saturated and the
        function's environments are not all kept busy by invocations that sleep (waiting on I/O). It
        grows, by as many environments as may start at once, while invocations wait, no environment
        is starting (a start's CPU work is not in the verdict yet) and the limit is what holds them:
        it was reached since the last window. A limit the invocations did not reach is not grown
        (a trivial handler's few environments, fed as fast as a busy router can, leave the CPUs a little
        under the threshold in some windows: the limit climbed there a step a window to ten times what
        was running, and the next burst of requests after a pause started that many environments at
        once, 20 for 32 connections on a Node handler that 2 serve). So environments that wait on I/O
        run up to ``concurrency`` even on a machine busy with other work; CPU-bound ones run about as
        many as the CPUs can serve."""
        capacity = self.capacity
        if capacity is None or capacity.cpu is None:
            return None
        cpu = capacity.cpu
        saturated = cpu.saturated()
        window = getattr(cpu, "generation", None)
        if window is None or window != self._window:
            self._window = window
            router_saturated = getattr(cpu, "router_saturated", False)
            # Whether the environments sleep in their invocations: read once a window (a verdict without
            # windows is followed on every call: read only when the CPUs are saturated, as it decides then)
            asleep = (not router_saturated and (saturated or window is not None)
                      and self._waiting_on_io())
            self._waiting_on_io_seen = asleep
            held_back = router_saturated or (saturated and not asleep)
            self._held_back = held_back
            reached, self._limit_reached = self._limit_reached, False
            if held_back:
                self._limit = max(float(capacity.min_environments), self._limit * 0.8)
            elif self._starting == 0 and (reached or self._in_flight >= self._limit):
                # running, waiting, and the one asking unless it is a waiter (counted already)
                demand = self._in_flight + len(self._waiters) + (0 if for_waiter else 1)
                if demand > self._limit:
                    self._limit = min(self._limit + capacity.max_starting, demand)
        if self._in_flight < self._limit:
            return None
        self._limit_reached = True
        return "cpu" if self._held_back else "scaling"

    def _waiting_on_io(self) -> bool:
        """Since the last look: were the ready environments kept busy by invocations (at least 80 % of
        the time) while their processes mostly slept (ran or waited for a CPU less than half of it),
        by the kernel's run and run-queue times? Then another environment adds throughput. An ended
        invocation's busy time is its runtime's own (``Result.runtime_duration``) where it says: by the
        router's clock a trivial handler's result that waits for a busy event loop to read it would look
        like a handler asleep on I/O, and the limit would grow by an environment a window."""
        now = time.monotonic()
        look = self._sched_at
        busy = self._busy_time + sum(now - max(since, look) for since in self._running_since.values())
        elapsed, self._sched_at, self._busy_time = now - self._sched_at, now, 0.0
        ready = ran = 0.0
        for env in self._live:
            if env.state is EnvState.STARTING:
                continue
            times = env.run_and_wait_ns()
            before = self._sched.get(env)
            if times is not None:
                self._sched[env] = times
            if times is not None and before is not None:
                ready += 1
                ran += (times[0] - before[0] + times[1] - before[1]) / 1e9
        return ready > 0 and elapsed > 0 and busy >= 0.8 * ready * elapsed and ran < busy / 2

    def _must_wait(self) -> str | None:
        """Why no environment may be started now (a reason label), or None to start one (its memory is
        then reserved in the budget)."""
        reason = self._start_held()
        if reason is not None:
            return reason
        budget = self.capacity.budget if self.capacity is not None else None
        if budget is not None and not budget.try_reserve(self.config.memory):
            return "memory"
        return None

    def _start_held(self) -> str | None:
        """Why no environment may be started now, the memory budget aside (which ``_must_wait`` asks, and
        which may reap to make room): ``concurrency``, ``starting``, or None. Changes nothing."""
        limit = self.config.concurrency
        if limit is not None and sum(env.capacity for env in self._live) >= limit:
            return "concurrency"
        if any(env.state is EnvState.STARTING and env.in_flight < env.capacity for env in self._live):
            return "starting"  # a starting environment has a slot for this invocation
        if self.capacity is not None and self._starting >= self.capacity.max_starting:
            return "starting"  # an ending start wakes a waiter itself
        return None

    def _end_wait(self, waited_since: float | None) -> None:
        if waited_since is not None:
            self._wait_seconds.observe(time.monotonic() - waited_since)

    def _release(self, env: Environment) -> None:
        """An invocation of ``env`` ended (or a timed-out one's handler returned at last): its slot is
        free again, unless ``env`` is done for."""
        self._in_flight = sum(e.in_flight for e in self._live)
        if not env.alive or self._closing or env.state is EnvState.DEAD:
            self._discard(env)
        elif (self._waiters and env.in_flight < env.capacity and self._cpu_gate(for_waiter=True) is None
              and self._hand_over(env)):
            self._nudge()
            return
        else:
            if env.in_flight == 0 and env.state is EnvState.BUSY:
                self._set_state(env, EnvState.IDLE)
                env.idle_since = asyncio.get_running_loop().time()
            if env.in_flight < env.capacity and env not in self._available:
                self._available.append(env)
        self._wake_waiter()

    def _hand_over(self, env: Environment) -> bool:
        """Give the slot ``env`` just freed to the invocation waiting longest, when the CPU gate lets one
        more run: it stays BUSY and the waiter takes it as it wakes, without looking at the pool again
        (what a woken waiter would do, for the same answer; under load most invocations wait here).
        False when no one waits any more."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                env.in_flight += 1
                self._in_flight += 1
                waiter.set_result(env)
                return True
        return False

    def _nudge(self) -> None:
        """Wake the invocation waiting longest to look at the pool again when it would start an
        environment: the environments sleep in their invocations (``_waiting_on_io``, the last window's
        verdict), the limit has room for more running invocations than run (it grew since they began to
        wait), and one may start now (``_start_held``; the budget looked at without reaping). Without
        this, waiters are handed the environments that free up before their recheck, and only an ending
        start wakes one: a function whose invocations sleep on I/O stayed at the environments it had when
        they began to queue (16 of 32 for 32 connections on a handler awaiting 50 ms, measured), however
        far the limit grew. Environments that do not sleep are not multiplied this way: the waiters being
        served by the ones there is what the CPUs allow (a trivial handler behind a saturated router: 18
        environments instead of 2 without that check)."""
        if (not self._waiters or not self._waiting_on_io_seen or self._in_flight >= self._limit
                or self._start_held() is not None):
            return
        budget = self.capacity.budget if self.capacity is not None else None
        if budget is not None and not budget.fits(self.config.memory):
            return  # room is made by reaping only for an invocation that asks (its recheck)
        self._wake_waiter()

    def _wake_waiter(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return

    # --- bookkeeping ----------------------------------------------------------------------------------

    def _new_env(self, *, provisioned: bool) -> Environment:
        """A new STARTING environment. An on-demand one has its memory reserved already (``_must_wait``);
        a provisioned one reserves it here, over the budget if need be (it is asked for explicitly)."""
        assert self._spec is not None
        templates = self.templates
        spawner = templates.spawner(self._spec, self.config) if templates is not None else None
        env = Environment(self._spec, self.api, arn=self.arn, provisioned=provisioned,
                          on_exit=self._on_exit, on_slot=self._release, cgroup=self._cgroup, spawner=spawner,
                          watchdog=self.watchdog)
        budget = self.capacity.budget if self.capacity is not None else None
        if budget is not None:
            if provisioned:
                budget.reserve(self.config.memory)
            self._reserved.add(env)
            self._metrics.environment_memory_reserved.set(budget.reserved * 1024 * 1024)
        self._all.add(env)
        self._live.add(env)
        self._gauges[EnvState.STARTING].inc()
        return env

    def _set_state(self, env: Environment, state: EnvState) -> None:
        old = self._gauges.get(env.state)
        if old is not None:
            old.dec()
        env.state = state
        new = self._gauges.get(state)
        if new is not None:
            new.inc()

    def _discard(self, env: Environment) -> None:
        """Take ``env`` out of service; the maintenance task (or close) closes it."""
        if env.state is EnvState.DEAD:
            return
        self._set_state(env, EnvState.DEAD)
        self._live.discard(env)
        self._sched.pop(env, None)
        with contextlib.suppress(ValueError):
            self._available.remove(env)
        if env in self._reserved:
            self._reserved.discard(env)
            budget = self.capacity.budget if self.capacity is not None else None
            assert budget is not None
            budget.release(self.config.memory)
            self._metrics.environment_memory_reserved.set(budget.reserved * 1024 * 1024)
        self._dead.append(env)
        self._wake.set()
        self._wake_waiter()

    def _oldest_idle(self) -> tuple[float, Callable[[], int]] | None:
        """For the memory budget: this pool's least recently used idle environment that may be reaped
        (not provisioned), as (idle since, reap); ``reap`` returns the MB it frees."""
        for env in self._available:  # a LIFO stack: the first is the least recently used
            if not env.provisioned and env.alive and env.state is EnvState.IDLE:
                def reap(env: Environment = env) -> int:
                    if env.state is not EnvState.IDLE:
                        return 0
                    log.info("function '%s': reaping idle environment pid %s to make room in the memory "
                             "budget", self.name, env.pid, extra={"function": self.name})
                    self._discard(env)
                    return self.config.memory
                return env.idle_since, reap
        return None

    def _on_exit(self, env: Environment) -> None:
        # A busy or starting environment's invocation learns of the exit through its reply; an idle one
        # is taken out of service here, before any invocation can pick it.
        if env.state is EnvState.IDLE:
            log.warning("function '%s': idle environment pid %s exited", self.name, env.pid,
                        extra={"function": self.name})
            self._discard(env)
        self._wake.set()

    def _observe_init(self, env: Environment) -> None:
        if env.init_duration is not None:
            self._init_duration.observe(env.init_duration)

    def _log_failure(self, failure: Result, request_id: str | None) -> None:
        message = failure.error_message(200)
        log.warning("function '%s': environment failed to start: %s", self.name, message,
                    extra={"function": self.name, "request_id": request_id,
                           "error_type": failure.error_type.value if failure.error_type else None})

    # --- maintenance ----------------------------------------------------------------------------------

    async def _maintain(self) -> None:
        loop = asyncio.get_running_loop()
        idle_timeout = self.config.idle_timeout
        while True:
            self._wake.clear()
            dead, self._dead = self._dead, []
            await asyncio.gather(*(self._close_env(env) for env in dead))
            now = loop.time()
            idle = [e for e in self._available if e.state is EnvState.IDLE and not e.provisioned]
            for env in [e for e in idle if now - e.idle_since >= idle_timeout]:
                log.info("function '%s': reaping environment pid %s, idle for %.0f s", self.name, env.pid,
                         now - env.idle_since, extra={"function": self.name})
                self._discard(env)
            if self._dead:
                continue
            await self._replenish()
            # An environment that becomes idle later expires after now + idle_timeout: no wake-up needed
            # on the hot path.
            wake_at = [e.idle_since + idle_timeout for e in self._available
                       if e.state is EnvState.IDLE and not e.provisioned]
            wake_at.append(now + idle_timeout)
            if self._provisioned_shortfall() > 0:
                wake_at.append(self._next_replenish)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(min(wake_at)):
                    await self._wake.wait()

    def _provisioned_shortfall(self) -> int:
        return self.config.provisioned - sum(1 for env in self._live if env.provisioned)

    async def _replenish(self) -> None:
        want = self._provisioned_shortfall()
        loop = asyncio.get_running_loop()
        if want <= 0 or self._closing or loop.time() < self._next_replenish:
            return
        envs = [self._new_env(provisioned=True) for _ in range(want)]
        started = await asyncio.gather(*(self._start_provisioned(env) for env in envs))
        if not all(started):
            self._next_replenish = loop.time() + REPLENISH_BACKOFF

    async def _start_provisioned(self, env: Environment) -> bool:
        try:
            failure = await env.start("", init_timeout(self.config.timeout))
        except BaseException:
            self._discard(env)
            raise
        if failure is not None:
            self._discard(env)
            self._log_failure(failure, None)
            return False
        self._observe_init(env)
        self._set_state(env, EnvState.IDLE)
        env.idle_since = asyncio.get_running_loop().time()
        self._available.append(env)
        self._wake_waiter()
        return True


def _settle_waiter(waiter: asyncio.Future[bool | Environment]) -> None:
    """The recheck timer of a waiting invocation: it looks again (not a wake-up to pass on)."""
    if not waiter.done():
        waiter.set_result(False)
