"""The execution environments of one function: warm reuse (LIFO), cold starts, reaping, provisioned.

One invocation per environment at a time. ``invoke`` takes the most recently used idle environment, or
starts a new one (cold start) while the function's ``concurrency`` allows, else waits for one to free
up (the dispatcher normally keeps callers under the cap, so this wait is a safety net). A maintenance
task owned by the pool closes dead environments, reaps the ones idle for ``idle_timeout`` and keeps
``provisioned`` environments started (replacing those that die).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from pathlib import Path

from prometheus_client import Gauge

from router.config.models import AwsConfig, FunctionConfig
from router.core.invocation import ErrorType, Invocation, Result
from router.errors import EnvironmentError_
from router.metrics import Metrics
from router.runtime.api import RuntimeApiServer
from router.runtime.environment import TERM_GRACE, Environment, EnvState, init_timeout
from router.runtime.launch import LaunchSpec, resolve_launch
from router.runtime.memory import CgroupV2

log = logging.getLogger("router.runtime")

UNDELIVERED_RETRIES = 3
"""Environments tried for one invocation when each dies before taking the event (it never ran)."""
REPLENISH_BACKOFF = 5.0
"""Wait between attempts to start provisioned environments whose init failed."""


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
    ) -> None:
        self.name = name
        self.config = config
        self.code_dir = code_dir
        self.aws = aws
        self.api = runtime_api
        self.arn = arn
        self._spec: LaunchSpec | None = None
        self._cgroup: CgroupV2 | None = None
        self._all: set[Environment] = set()  # not yet closed
        self._live: set[Environment] = set()  # starting, idle or busy
        self._idle: list[Environment] = []  # LIFO
        self._dead: list[Environment] = []  # waiting for the maintenance task to close them
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._next_replenish = 0.0
        self._cold_starts = metrics.cold_starts.labels(name)
        self._init_duration = metrics.init_duration.labels(name)
        self._gauges: dict[EnvState, Gauge] = {
            s: metrics.environments.labels(name, s.value)
            for s in (EnvState.STARTING, EnvState.IDLE, EnvState.BUSY)
        }
        for gauge in self._gauges.values():
            gauge.set(0)

    # --- lifecycle ------------------------------------------------------------------------------------

    async def _resolve(self) -> LaunchSpec:
        if self._spec is None:
            self._spec = await asyncio.to_thread(
                resolve_launch, self.name, self.config, self.code_dir, self.aws)
        return self._spec

    async def start(self) -> None:
        """Check the code and runtime (raises ``EnvironmentError_``), start provisioned environments."""
        await self._resolve()
        self._cgroup = await asyncio.to_thread(CgroupV2.detect)
        if self._cgroup is not None:
            log.info("function '%s': memory limited by cgroup v2 under %s", self.name, self._cgroup.parent,
                     extra={"function": self.name})
        await self._replenish()
        self._task = asyncio.create_task(self._maintain(), name=f"environments:{self.name}")

    async def close(self) -> None:
        """Kill every environment (SIGTERM, then SIGKILL after a grace) and stop the maintenance task."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
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
        except EnvironmentError_ as exc:
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
        env = await self._acquire()
        if env is None:
            return Result.error(
                "Runtime.ExitError", f"function '{self.name}': the router is shutting down",
                error_type=ErrorType.CONNECTION)
        if env.state is EnvState.STARTING:
            try:
                failure = await env.start(invocation.request_id, init_timeout(self.config.timeout))
            except BaseException:
                self._discard(env)
                raise
            if failure is not None:
                self._discard(env)
                self._log_failure(failure, invocation.request_id)
                return failure
            self._cold_starts.inc()
            self._observe_init(env)
            self._set_state(env, EnvState.BUSY)
        try:
            return await env.invoke(invocation, self.config.timeout)
        finally:
            self._release(env)

    async def _acquire(self) -> Environment | None:
        """An idle environment now BUSY, a new one STARTING (cold start), or None when closing."""
        limit = self.config.concurrency
        while not self._closing:
            while self._idle:
                env = self._idle.pop()
                if env.alive:
                    self._set_state(env, EnvState.BUSY)
                    return env
                self._discard(env)
            if limit is None or len(self._live) < limit:
                return self._new_env(provisioned=False)
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_waiter()  # pass the wake-up on
                raise
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
        return None

    def _release(self, env: Environment) -> None:
        if env.alive and not self._closing and env.state is EnvState.BUSY:
            self._set_state(env, EnvState.IDLE)
            env.idle_since = asyncio.get_running_loop().time()
            self._idle.append(env)
        else:
            self._discard(env)
        self._wake_waiter()

    def _wake_waiter(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # --- bookkeeping ----------------------------------------------------------------------------------

    def _new_env(self, *, provisioned: bool) -> Environment:
        assert self._spec is not None
        env = Environment(self._spec, self.api, arn=self.arn, provisioned=provisioned,
                          on_exit=self._on_exit, cgroup=self._cgroup)
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
        with contextlib.suppress(ValueError):
            self._idle.remove(env)
        self._dead.append(env)
        self._wake.set()
        self._wake_waiter()

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
        try:
            message = json.loads(failure.payload).get("errorMessage", "")
        except (ValueError, AttributeError):
            message = failure.payload[:200].decode("utf-8", "replace")
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
            for env in [e for e in self._idle if not e.provisioned and now - e.idle_since >= idle_timeout]:
                log.info("function '%s': reaping environment pid %s, idle for %.0f s", self.name, env.pid,
                         now - env.idle_since, extra={"function": self.name})
                self._discard(env)
            if self._dead:
                continue
            await self._replenish()
            # An environment that becomes idle later expires after now + idle_timeout: no wake-up needed
            # on the hot path.
            wake_at = [e.idle_since + idle_timeout for e in self._idle if not e.provisioned]
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
        self._idle.append(env)
        self._wake_waiter()
        return True
