"""The Dispatcher: concurrency caps, the sync path (429 at the cap), and the async path (persist, deliver).

Sources, the HTTP layer and the CLI call ``invoke`` / ``invoke_waiting`` / ``submit``; ``run`` runs the
async queues and workers the app hands in (``add_workers``); ``drain`` is the graceful half of shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from router.clock import Clock, SystemClock
from router.config.models import RouterConfig
from router.core.async_queue import AsyncQueue
from router.core.async_worker import AsyncWorker
from router.core.controls import HELD_SYNC, Controls
from router.core.history import HistoryRecorder
from router.core.limits import DEFAULT_ASYNC_PARALLELISM, FunctionLimit, Limits
from router.core.recursion import LoopGuard
from router.core.versions import Versions
from router.errors import FunctionNotFound, PayloadTooLarge, QualifierNotFound, Throttled, VersionError
from router.invocation import ErrorType, Invocation, Outcome, Result
from router.invokers.base import Invoker
from router.metrics import Metrics
from router.suggest import did_you_mean

log = logging.getLogger("router.dispatcher")


class Dispatch(Protocol):
    """What sources and the HTTP layer may ask of the dispatcher; ``Dispatcher`` is the one implementation."""

    def has_function(self, name: str) -> bool: ...

    def function_names(self) -> list[str]: ...

    def arn(self, name: str) -> str: ...

    async def invoke(self, inv: Invocation) -> Result:
        """Sync path: raises FunctionNotFound, or Throttled at once at the concurrency cap."""
        ...

    async def invoke_waiting(self, inv: Invocation) -> Result:
        """Sync path that waits for a concurrency slot instead of raising Throttled."""
        ...

    def slot(self, function: str, source: str, route: str | None = None) -> AbstractAsyncContextManager[None]:
        """Hold one concurrency slot of ``function`` (pollers: take it before they receive); with
        ``route``, first wait while that route is paused."""
        ...

    def route_enabled(self, route: str) -> bool:
        """Whether ``route`` runs (False while paused: webhooks answer 503, schedules skip the tick)."""
        ...

    def held(self, what: str, name: str) -> None:
        """Count one thing pausing held back (``router.core.controls.HELD_*``)."""
        ...

    async def invoke_in_slot(self, inv: Invocation) -> Result:
        """Run ``inv`` in a slot the caller holds through ``slot()``."""
        ...

    async def submit(self, inv: Invocation) -> str:
        """Async path: persists the event (raises FunctionNotFound, PayloadTooLarge), returns its id."""
        ...



class Dispatcher:
    """Routes invocations to invokers under each function's concurrency cap; runs the async workers it is
    handed (``add_workers``) over their queues.

    ``queue``: where ``submit`` puts async events; ``depth_interval``: how often
    ``router_async_queue_depth`` is refreshed. Functions without a ``concurrency`` cap run sync
    invocations unbounded and at most ``DEFAULT_ASYNC_PARALLELISM`` (64) async events at once.
    """

    def __init__(
        self,
        *,
        config: RouterConfig,
        invokers: Mapping[str, Invoker],
        metrics: Metrics,
        queue: AsyncQueue,
        clock: Clock | None = None,
        depth_interval: float = 5.0,
        account_limit: int | None = None,
        controls: Controls | None = None,
    ) -> None:
        missing = sorted(set(config.functions) - set(invokers))
        if missing:
            raise ValueError(f"Dispatcher: no invoker for function(s) {', '.join(missing)}")
        self._config = config
        self._invokers = dict(invokers)
        self._metrics = metrics
        self.queue = queue
        self._clock: Clock = clock or SystemClock()
        self._depth_interval = depth_interval
        self._limits = Limits({name: fn.concurrency for name, fn in config.functions.items()}, account_limit)
        metrics.account_concurrent_executions.set_function(lambda: self._limits.account.in_use)
        self._async_limits = {name: self._async_limit_of(self._limits[name]) for name in config.functions}
        self.controls = controls or Controls(config, metrics=metrics, account_limit=account_limit)
        self._loops_guard = LoopGuard(config, metrics)  # recursive loop detection (router.lineage)
        self.controls.on_reserved(self._set_reserved)
        self._queues: list[AsyncQueue] = [queue]
        self._workers: dict[str, AsyncWorker] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._worker_loops: dict[str, asyncio.Task[None]] = {}  # worker key -> its taking loop
        self._retired_workers: set[AsyncWorker] = set()  # replaced by a reload, events still in flight
        self._tg: asyncio.TaskGroup | None = None  # ``run``'s: where workers added by a reload run
        self._calls: dict[Invoker, int] = {}  # invocations in flight per invoker (for a reload's drain)
        self._idle: dict[Invoker, asyncio.Event] = {}  # set when a retired invoker's last call ends
        self._stopping = False
        self._drained = asyncio.Event()
        self.history: HistoryRecorder | None = None  # set by the app: invocations are recorded there
        self.versions: Versions | None = None  # set by the app: published versions and aliases

    @staticmethod
    def _async_limit_of(shared: FunctionLimit) -> FunctionLimit:
        # Under the function's own limit (which is under the account's), so a reserved concurrency set
        # at run time (0: paused) caps async events too.
        return shared if shared.cap is not None else FunctionLimit(DEFAULT_ASYNC_PARALLELISM, shared)

    def async_limit(self, function: str) -> FunctionLimit:
        """The slots ``function``'s async events run in: its ``concurrency`` cap (shared with its sync
        callers and pollers), or at most ``DEFAULT_ASYNC_PARALLELISM`` under the account limit."""
        return self._async_limits[function]

    def add_workers(self, workers: Iterable[AsyncWorker]) -> None:
        """The async workers ``run`` runs, each taking one function's events from one queue (and the
        queues they take from); before ``run``."""
        for worker in workers:
            self._workers[_worker_key(worker)] = worker
            if worker.queue not in self._queues:
                self._queues.append(worker.queue)

    @property
    def queues(self) -> list[AsyncQueue]:
        """Every queue the workers take from (the state store's first)."""
        return list(self._queues)

    # --- reload -----------------------------------------------------------------------------------------

    def reconfigure(self, config: RouterConfig, invokers: Mapping[str, Invoker], *,
                    removed: Iterable[str]) -> dict[str, Invoker]:
        """Switch to ``config`` while running (a reload): ``invokers`` serve the functions added or changed,
        ``removed`` functions are gone. Invocations already running finish on the invoker they started
        on; new ones use the new. The async workers of those functions stop taking at once (their events
        in flight finish); ``start_workers`` then starts the new ones, with no await in between. Returns
        the invokers replaced or removed: the caller closes each once ``retire`` says it is idle.
        Unchanged functions are not touched."""
        removed = set(removed)
        retired = {name: self._invokers[name] for name in [*invokers, *removed] if name in self._invokers}
        self._config = config
        if self.versions is not None:
            self.versions.reconfigure(config)
        for name in removed:
            self._invokers.pop(name, None)
        self._invokers.update(invokers)
        self.controls.reconfigure(config)  # before the caps: a run-time reservation outlives the reload
        self._loops_guard.reconfigure(config)
        for name in [*invokers, *removed]:
            if name not in config.functions:
                self._limits.remove(name)
                self._async_limits.pop(name, None)
                continue
            cap = self.controls.reserved(name)
            limit = self._limits.get(name)
            if limit is None:
                self._async_limits[name] = self._async_limit_of(self._limits.set(name, cap))
            elif limit.cap != cap:  # the same limit: slots held and waiters stay counted
                limit.set_cap(cap)
        for key in [k for k, w in self._workers.items() if w.name in invokers or w.name in removed]:
            worker = self._workers.pop(key)
            self._retired_workers.add(worker)
            task = self._worker_loops.pop(key, None)
            if task is not None:
                task.cancel()  # stops taking; its events in flight go on (``_inflight`` still sees them)
        return retired

    def start_workers(self, workers: Iterable[AsyncWorker]) -> None:
        """Add ``workers`` (over queues already running) and start them now, when ``run`` is running."""
        self.add_workers(workers)
        if self._tg is not None and not self._stopping:
            for key, worker in self._workers.items():
                if key not in self._worker_loops:
                    self._start_worker(self._tg, key, worker)

    async def retire(self, invoker: Invoker, timeout: float) -> bool:  # noqa: ASYNC109 (a drain bound)
        """Wait until no invocation runs on ``invoker`` (one ``reconfigure`` replaced), at most
        ``timeout``; False when some were still running then."""
        if self._calls.get(invoker, 0) == 0:
            return True
        idle = self._idle.setdefault(invoker, asyncio.Event())
        try:
            async with asyncio.timeout(timeout):
                await idle.wait()
        except TimeoutError:
            return False
        finally:
            self._idle.pop(invoker, None)
        return True

    def _start_worker(self, tg: asyncio.TaskGroup, key: str, worker: AsyncWorker) -> None:
        task = tg.create_task(worker.run(), name=key)
        self._worker_loops[key] = task
        self._loops.append(task)
    def _set_reserved(self, function: str, reserved: int | None) -> None:
        """A function's reserved concurrency changed at run time: its limit's cap follows (0: paused)."""
        self._limits[function].set_cap(reserved)

    def route_enabled(self, route: str) -> bool:
        return self.controls.route_enabled(route)

    def held(self, what: str, name: str) -> None:
        self.controls.held(what, name)

    # --- lookups ----------------------------------------------------------------------------------------

    def has_function(self, name: str) -> bool:
        return name in self._config.functions

    def function_names(self) -> list[str]:
        return list(self._config.functions)

    def arn(self, name: str) -> str:
        return self._config.aws.function_arn(name)

    def _check(self, name: str) -> None:
        if name not in self._config.functions:
            raise FunctionNotFound(name, did_you_mean(name, self._config.functions))

    # --- sync path --------------------------------------------------------------------------------------

    async def invoke(self, inv: Invocation) -> Result:
        """Run ``inv`` now. Raises ``FunctionNotFound``, or ``Throttled`` at once at the cap."""
        if inv.qualifier is not None or ":" in inv.function:
            await self._qualify(inv)
        self._check(inv.function)
        limit = self._limits[inv.function]
        if not limit.try_acquire():
            self._count_throttle(inv)
            self._metrics.invocations.labels(inv.function, inv.source, Outcome.THROTTLED.value).inc()
            if limit.full():
                assert limit.cap is not None
                if limit.cap == 0:
                    self.controls.held(HELD_SYNC, inv.function)
                raise Throttled(inv.function, limit.cap)
            assert self._limits.account.cap is not None
            raise Throttled(inv.function, self._limits.account.cap, Throttled.ACCOUNT)
        try:
            return await self._execute(inv)
        finally:
            limit.release()

    async def invoke_waiting(self, inv: Invocation) -> Result:
        """Run ``inv``, waiting for a free slot at the cap (backpressure for pollers and schedules)."""
        if inv.qualifier is not None or ":" in inv.function:
            await self._qualify(inv)
        self._check(inv.function)
        limit = self._limits[inv.function]
        if not limit.try_acquire():
            self._count_throttle(inv)
            await limit.acquire()
        try:
            return await self._execute(inv)
        finally:
            limit.release()

    @contextlib.asynccontextmanager
    async def slot(self, function: str, source: str, route: str | None = None) -> AsyncIterator[None]:
        """Hold one concurrency slot of ``function`` for the block, waiting while all are busy.

        For pollers (STYLE: capacity before work): take the slot, then receive, then
        ``invoke_in_slot``; while the function is at its cap (or paused) no receive happens at all. With
        ``route``, first wait while the route is paused: the one gate of every poller.
        """
        function = function.partition(":")[0]  # a route's name:qualifier shares the function's slots
        self._check(function)
        if route is not None:
            await self.controls.wait_route_enabled(route)
        limit = self._limits[function]
        if not limit.try_acquire():
            self._metrics.throttles.labels(function, source).inc()
            await limit.acquire()
        try:
            yield
        finally:
            limit.release()

    async def invoke_in_slot(self, inv: Invocation) -> Result:
        """Run ``inv`` in a slot the caller holds through ``slot()``; never raises for function errors.
        A version or alias that is gone (a reload removed the alias) or whose environments cannot start
        is an error result that no retry mends (the async worker sends it to on_failure)."""
        if inv.qualifier is not None or ":" in inv.function:
            try:
                await self._qualify(inv)
            except (QualifierNotFound, VersionError) as exc:
                log.warning("%s", exc, extra={"function": inv.function, "route": inv.route,
                                              "request_id": inv.request_id, "error_type": "config"})
                gone = isinstance(exc, QualifierNotFound)
                kind = "ResourceNotFoundException" if gone else "Router.VersionError"
                return Result.error(kind, str(exc), error_type=ErrorType.CONFIG, retryable=False)
        self._check(inv.function)
        return await self._execute(inv)

    async def _qualify(self, inv: Invocation) -> None:
        """Resolve ``inv``'s qualifier (``name:qualifier`` of a route, or ``inv.qualifier``) to the version
        that runs (``inv.version``, None for $LATEST) and make that version's invoker ready. Raises
        ``QualifierNotFound``."""
        name, _, derived = inv.function.partition(":")
        if derived:
            inv.function = name
            inv.qualifier = derived
        qualifier = inv.qualifier
        if qualifier is None or qualifier == "$LATEST":
            inv.qualifier = None
            return
        self._check(name)
        versions = self.versions
        if versions is None:
            raise QualifierNotFound(name, qualifier, "this router runs no versions")
        version = versions.resolve(name, qualifier)
        if version is None:
            inv.qualifier = None
            return
        if not versions.ready(name, version):  # only the first invocation of a version on this replica
            await versions.invoker(name, version)
        inv.version = version
        inv.invoked_arn = versions.arn(name, qualifier)

    async def _check_qualifier(self, inv: Invocation) -> None:
        """For an async event: split a route's ``name:qualifier`` and check that the alias or version
        exists (``QualifierNotFound`` otherwise, before the event is accepted, as Lambda answers); each
        attempt resolves the qualifier again (a weighted alias draws per attempt)."""
        name, _, derived = inv.function.partition(":")
        if derived:
            inv.function, inv.qualifier = name, derived
        if inv.qualifier in (None, "$LATEST"):
            inv.qualifier = None
            return
        qualifier = inv.qualifier
        self._check(name)
        versions = self.versions
        if versions is None:
            raise QualifierNotFound(name, qualifier, "this router runs no versions")
        version = versions.resolve(name, qualifier)  # an alias: known from the config
        if (version is not None and qualifier.isdigit() and not versions.ready(name, version)
                and await versions.get(name, int(version)) is None):  # read once a version runs here
            raise QualifierNotFound(name, qualifier)

    def _count_throttle(self, inv: Invocation) -> None:
        self._metrics.throttles.labels(inv.function, inv.source).inc()

    async def _execute(self, inv: Invocation) -> Result:
        """Run the invoker (the caller holds a slot) and count the attempt. Never raises but cancellation."""
        refused = self._loops_guard.admit(inv)
        if refused is not None:
            return refused
        fn = inv.function
        metrics = self._metrics
        gauge = metrics.child(metrics.concurrent_executions, fn)
        gauge.inc()
        history = self.history
        if history is not None and inv.invocation_type == "async":
            history.attempt_started(inv)
        started = self._clock.monotonic()
        version = inv.version
        if version is None:
            invoker = self._invokers[fn]
        else:
            assert self.versions is not None
            invoker = self.versions.invoker_now(fn, version)
        calls = self._calls
        calls[invoker] = calls.get(invoker, 0) + 1
        try:
            result = await invoker.invoke(inv)
        except Exception as exc:
            log.exception("invoker failed", extra={"function": fn, "route": inv.route,
                                                   "request_id": inv.request_id, "attempt": inv.attempt})
            result = Result.error(
                "Router.InvokerError", f"function '{fn}': the invoker failed: {type(exc).__name__}: {exc}",
                error_type=ErrorType.CONNECTION, throttle=True,
            )
        finally:
            gauge.dec()
            left = calls[invoker] - 1
            if left:
                calls[invoker] = left
            else:
                del calls[invoker]
                idle = self._idle.get(invoker)
                if idle is not None:
                    idle.set()
        duration = self._clock.monotonic() - started
        if history is not None:
            if inv.invocation_type == "sync":
                # In the loop turn after the caller's answer, with the invocation's END and REPORT, which
                # its environment writes then (Result.logs); queued after theirs, so it reads them done.
                asyncio.get_running_loop().call_soon(history.sync_done, inv, result, duration)
            else:
                history.attempt_ended(inv, result, duration)
        metrics.child(metrics.invocations, fn, inv.source, result.outcome.value).inc()
        if version is not None:
            assert self.versions is not None
            result.executed_version = version
            metrics.child(metrics.version_invocations, fn, self.versions.metric_label(fn, version),
                          result.outcome.value).inc()
        metrics.child(metrics.invocation_duration, fn).observe(duration)
        if not result.ok and inv.invocation_type == "sync":
            log.info("sync invocation ended with %s", result.outcome.value, extra={
                "function": fn, "route": inv.route, "request_id": inv.request_id, "source": inv.source,
                "error_type": result.error_type.value if result.error_type else None})
        return result

    # --- async path -------------------------------------------------------------------------------------

    async def submit(self, inv: Invocation) -> str:
        """Persist ``inv`` for async delivery; durable when this returns. Returns its request id.

        Raises ``FunctionNotFound`` or ``PayloadTooLarge`` (over ``server.max_async_body``).
        """
        if inv.qualifier is not None or ":" in inv.function:
            await self._check_qualifier(inv)
        self._check(inv.function)
        limit = self._config.server.max_async_body
        if len(inv.payload) > limit:
            raise PayloadTooLarge(f"function '{inv.function}': async event", len(inv.payload), limit)
        await self.queue.publish(inv.function, request_id=inv.request_id, payload=inv.payload,
                                 source=inv.source, route=inv.route, now=self._clock.time(),
                                 trace=inv.trace_id, qualifier=inv.qualifier)
        if self.history is not None:
            self.history.accepted(inv)
        self._metrics.async_events_received.labels(inv.function).inc()
        return inv.request_id

    async def run(self) -> None:
        """Run the queues and every async worker until cancelled or drained; then hand back unfinished
        events and close the queues (what is still unacked goes back to the broker's queues)."""
        try:
            async with asyncio.TaskGroup() as tg:
                if self._stopping:
                    return
                for queue in self._queues:  # connects, retrying; the workers of a queue wait for it
                    self._loops.append(tg.create_task(queue.run(), name=f"async-queue-{queue.kind}"))
                for key, worker in self._workers.items():
                    self._start_worker(tg, key, worker)
                self._loops.append(tg.create_task(self._depth_loop(), name="async-queue-depth"))
                self._tg = tg
            if self._stopping:
                await self._drained.wait()  # drain() is finishing the in-flight events
        finally:
            self._tg = None
            await self._cancel_inflight()
            for queue in self._queues:
                await queue.close()

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 (the app's shutdown contract)
        """Stop claiming; let in-flight events finish within ``timeout``; hand back the rest."""
        self._stopping = True
        for task in self._loops:
            task.cancel()
        if self._loops:
            await asyncio.wait(self._loops)
        inflight = self._inflight()
        if inflight:
            log.info("draining %d in-flight async events (up to %gs)", len(inflight), timeout)
            _, pending = await asyncio.wait(inflight, timeout=timeout)
            if pending:
                log.warning("%d async events did not finish in time: handed back to the queue", len(pending))
        try:
            await self._cancel_inflight()
        finally:
            self._drained.set()

    def _inflight(self) -> set[asyncio.Task[None]]:
        self._retired_workers = {w for w in self._retired_workers if w.inflight}
        return {t for w in (*self._workers.values(), *self._retired_workers) for t in w.inflight}

    async def _cancel_inflight(self) -> None:
        tasks = self._inflight()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _depth_loop(self) -> None:
        gauge = self._metrics.async_queue_depth
        while True:
            try:
                depth: dict[str, int] = {}
                for queue in self._queues:
                    for name, n in (await queue.depth()).items():
                        depth[name] = depth.get(name, 0) + n
            except Exception as exc:
                log.warning("cannot read the async queue depth: %s: %s", type(exc).__name__, exc)
            else:
                for name in self._config.functions:
                    gauge.labels(name).set(depth.get(name, 0))
            await self._clock.sleep(self._depth_interval)


def _worker_key(worker: AsyncWorker) -> str:
    return f"async-{worker.queue.kind}:{worker.name}"
