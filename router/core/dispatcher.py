"""The Dispatcher: concurrency caps, the sync path (429 at the cap), and the async path (persist, deliver).

Sources, the HTTP layer and the CLI call ``invoke`` / ``invoke_waiting`` / ``submit``; ``run`` owns one
``AsyncWorker`` per function; ``drain`` is the graceful half of shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol

import aiohttp

from router.clock import Clock, SystemClock
from router.config.models import DestinationConfig, RouterConfig
from router.core.async_queue import AsyncQueue
from router.core.async_worker import AsyncWorker
from router.core.limits import DEFAULT_ASYNC_PARALLELISM, FunctionLimit, Limits
from router.core.retry import Uniform
from router.destinations.base import Destination
from router.destinations.factory import DestinationBuilder, build_destinations
from router.errors import FunctionNotFound, PayloadTooLarge, Throttled
from router.invocation import ErrorType, Invocation, Outcome, Result
from router.invokers.base import Invoker
from router.metrics import Metrics
from router.queues.sql import SqlQueue
from router.suggest import did_you_mean

if TYPE_CHECKING:
    from router.queues.amqp import AmqpQueue
    from router.state.store import StateStore

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

    def slot(self, function: str, source: str) -> AbstractAsyncContextManager[None]:
        """Hold one concurrency slot of ``function`` (pollers: take it before they receive)."""
        ...

    async def invoke_in_slot(self, inv: Invocation) -> Result:
        """Run ``inv`` in a slot the caller holds through ``slot()``."""
        ...

    async def submit(self, inv: Invocation) -> str:
        """Async path: persists the event (raises FunctionNotFound, PayloadTooLarge), returns its id."""
        ...



class Dispatcher:
    """Routes invocations to invokers under each function's concurrency cap.

    ``poll_interval``: how often idle async workers look for events of other replicas; ``depth_interval``:
    how often ``router_async_queue_depth`` is refreshed. Functions without a ``concurrency`` cap run sync
    invocations unbounded and at most ``DEFAULT_ASYNC_PARALLELISM`` (64) async events at once.
    """

    def __init__(
        self,
        *,
        config: RouterConfig,
        invokers: Mapping[str, Invoker],
        store: StateStore,
        metrics: Metrics,
        http_session: aiohttp.ClientSession,
        clock: Clock | None = None,
        uniform: Uniform = random.uniform,
        poll_interval: float = 1.0,
        depth_interval: float = 5.0,
        account_limit: int | None = None,
    ) -> None:
        missing = sorted(set(config.functions) - set(invokers))
        if missing:
            raise ValueError(f"Dispatcher: no invoker for function(s) {', '.join(missing)}")
        self._config = config
        self._invokers = dict(invokers)
        self._store = store
        self._metrics = metrics
        self._clock: Clock = clock or SystemClock()
        self._depth_interval = depth_interval
        self._limits = Limits({name: fn.concurrency for name, fn in config.functions.items()}, account_limit)
        metrics.account_concurrent_executions.set_function(lambda: self._limits.account.in_use)
        self._destination_builder = DestinationBuilder(config, session=http_session, submit=self.submit)
        destinations = build_destinations(config, session=http_session, submit=self.submit,
                                          builder=self._destination_builder)
        store_queue = SqlQueue(store, clock=self._clock, poll_interval=poll_interval)
        # async_queue: async events go through RabbitMQ; the state store's workers still deliver the
        # destination records kept there (and events accepted before async_queue was set).
        self.amqp_queue: AmqpQueue | None = None
        queues: list[tuple[str, AsyncQueue]] = [("async-worker", store_queue)]
        if config.async_queue:
            from router.queues.amqp import AmqpQueue

            self.amqp_queue = AmqpQueue(config.async_queue, list(config.functions), clock=self._clock,
                                        publish_timeout=config.state.write_timeout)
            queues.append(("async-amqp-worker", self.amqp_queue))
        self._queues = [queue for _, queue in queues]
        self._queue = self._queues[-1]  # where new events go
        self._workers: dict[str, AsyncWorker] = {}
        for name, fn in config.functions.items():
            shared = self._limits[name]
            limit = (shared if shared.cap is not None
                     else FunctionLimit(DEFAULT_ASYNC_PARALLELISM, self._limits.account))
            for kind, queue in queues:
                self._workers[f"{kind}:{name}"] = AsyncWorker(
                    name=name, config=fn, arn=self.arn(name), queue=queue, keep=store_queue, limit=limit,
                    execute=self._execute, destinations=destinations[name], metrics=metrics,
                    clock=self._clock, uniform=uniform,
                )
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False
        self._drained = asyncio.Event()

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
        self._check(inv.function)
        limit = self._limits[inv.function]
        if not limit.try_acquire():
            self._count_throttle(inv)
            self._metrics.invocations.labels(inv.function, inv.source, Outcome.THROTTLED.value).inc()
            if limit.full():
                assert limit.cap is not None
                raise Throttled(inv.function, limit.cap)
            assert self._limits.account.cap is not None
            raise Throttled(inv.function, self._limits.account.cap, Throttled.ACCOUNT)
        try:
            return await self._execute(inv)
        finally:
            limit.release()

    async def invoke_waiting(self, inv: Invocation) -> Result:
        """Run ``inv``, waiting for a free slot at the cap (backpressure for pollers and schedules)."""
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
    async def slot(self, function: str, source: str) -> AsyncIterator[None]:
        """Hold one concurrency slot of ``function`` for the block, waiting while all are busy.

        For pollers (STYLE: capacity before work): take the slot, then receive, then
        ``invoke_in_slot``; while the function is at its cap no receive happens at all.
        """
        self._check(function)
        limit = self._limits[function]
        if not limit.try_acquire():
            self._metrics.throttles.labels(function, source).inc()
            await limit.acquire()
        try:
            yield
        finally:
            limit.release()

    async def invoke_in_slot(self, inv: Invocation) -> Result:
        """Run ``inv`` in a slot the caller holds through ``slot()``; never raises for function errors."""
        self._check(inv.function)
        return await self._execute(inv)

    def _count_throttle(self, inv: Invocation) -> None:
        self._metrics.throttles.labels(inv.function, inv.source).inc()

    async def _execute(self, inv: Invocation) -> Result:
        """Run the invoker (the caller holds a slot) and count the attempt. Never raises but cancellation."""
        fn = inv.function
        metrics = self._metrics
        gauge = metrics.child(metrics.concurrent_executions, fn)
        gauge.inc()
        started = self._clock.monotonic()
        try:
            result = await self._invokers[fn].invoke(inv)
        except Exception as exc:
            log.exception("invoker failed", extra={"function": fn, "route": inv.route,
                                                   "request_id": inv.request_id, "attempt": inv.attempt})
            result = Result.error(
                "Router.InvokerError", f"function '{fn}': the invoker failed: {type(exc).__name__}: {exc}",
                error_type=ErrorType.CONNECTION, throttle=True,
            )
        finally:
            gauge.dec()
        duration = self._clock.monotonic() - started
        metrics.child(metrics.invocations, fn, inv.source, result.outcome.value).inc()
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
        self._check(inv.function)
        limit = self._config.server.max_async_body
        if len(inv.payload) > limit:
            raise PayloadTooLarge(f"function '{inv.function}': async event", len(inv.payload), limit)
        await self._queue.publish(inv.function, request_id=inv.request_id, payload=inv.payload,
                                  source=inv.source, route=inv.route, now=self._clock.time())
        self._metrics.async_events_received.labels(inv.function).inc()
        return inv.request_id

    async def run(self) -> None:
        """Run every function's async workers until cancelled or drained; then hand back unfinished events."""
        try:
            async with asyncio.TaskGroup() as tg:
                if self._stopping:
                    return
                if self.amqp_queue is not None:  # connects, retrying; its workers wait for it
                    self._loops.append(tg.create_task(self.amqp_queue.run(), name="async-queue-amqp"))
                for task_name, worker in self._workers.items():
                    self._loops.append(tg.create_task(worker.run(), name=task_name))
                self._loops.append(tg.create_task(self._depth_loop(), name="async-queue-depth"))
            if self._stopping:
                await self._drained.wait()  # drain() is finishing the in-flight events
        finally:
            await self._cancel_inflight()
            if self.amqp_queue is not None:
                await self.amqp_queue.close()  # what is still unacked goes back to the broker's queues

    def extra_destinations(self, configs: dict[str, DestinationConfig]) -> dict[str, Destination]:
        """Destinations beside the functions' own (``config path -> config``, e.g. the stream routes'
        ``source.on_failure``), sharing their connections and closed with them by ``close``.
        Raises ``ConfigError`` listing every unusable one."""
        built = {where: self._destination_builder.build(where, cfg) for where, cfg in configs.items()}
        self._destination_builder.check()
        return {where: dest for where, dest in built.items() if dest is not None}

    async def close(self) -> None:
        """Close what the destinations opened (amqp connections); after ``run`` has ended."""
        await self._destination_builder.close()

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
        return {t for w in self._workers.values() for t in w.inflight}

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
