"""Composition root: config -> components, one TaskGroup, signals, ordered shutdown (DESIGN §6)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import logging
import math
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from router import __version__
from router.clock import Clock, SystemClock
from router.config.models import (
    DynamodbStreamSourceConfig,
    FunctionConfig,
    KinesisSourceConfig,
    RouterConfig,
)
from router.errors import ConfigError, RouterError
from router.invokers.base import Invoker
from router.invokers.factory import InvokerParts, build_invoker
from router.logs import setup_logging
from router.metrics import Metrics

if TYPE_CHECKING:
    from router.config.diff import ReloadOutcome
    from router.config.watch import Stamp
    from router.core.async_queue import AsyncQueue
    from router.core.controls import Controls
    from router.core.dispatcher import Dispatcher
    from router.core.failures import FailedEvents
    from router.core.history import HistoryRecorder
    from router.core.retry import Uniform
    from router.destinations.base import Destination
    from router.destinations.factory import DestinationBuilder
    from router.http.context import HttpContext
    from router.http.webhook import WebhookTable
    from router.readiness import Readiness
    from router.sources.registry import SourceParts, Sources
    from router.state.store import StateStore

log = logging.getLogger("router")


DESTINATION_CONNECTIONS = 100
"""Connections of the shared HTTP pool kept for http destinations, beyond one per running invocation."""
QUEUE_POLL_INTERVAL = 1.0
"""Seconds between two looks of an idle async worker at the state store's queue for events other replicas
published (this one's wake it at once; retries and leases are waited for until due)."""
ALONE_POLL_INTERVAL = 30.0
"""The same, and between two reads of the controls table, on a store no other router writes (SQLite)."""


def poll_intervals(store: StateStore) -> tuple[float, float]:
    """Seconds between two re-reads of ``store`` for what other replicas wrote: (the controls table, an
    idle async worker's queue). A store no other router writes (SQLite) has nothing of theirs to read:
    every change there is this process's own and wakes its waiters at once, so the re-read is only a
    safety net (``ALONE_POLL_INTERVAL``; an idle router then costs ~0 CPU instead of ~1.5 ms a second)."""
    from router.core.controls import POLL_INTERVAL

    if store.shared:
        return POLL_INTERVAL, QUEUE_POLL_INTERVAL
    return ALONE_POLL_INTERVAL, ALONE_POLL_INTERVAL


def account_concurrency(config: RouterConfig) -> int:
    """``limits.concurrent_executions``, or its default: 64 per usable CPU, at most Lambda's 1,000."""
    if config.limits.concurrent_executions is not None:
        return config.limits.concurrent_executions
    from router.runtime.capacity import usable_cpus

    return min(1000, 64 * max(1, math.ceil(usable_cpus())))


def machine_capacity(config: RouterConfig, metrics: Metrics) -> Any:
    """How local functions' environments are sized on this machine (``limits``)."""
    from router.runtime.capacity import Capacity

    limits = config.limits
    capacity = Capacity.of_machine(
        memory_mb=None if limits.environment_memory is None else limits.environment_memory // (1024 * 1024),
        environment_wait=limits.environment_wait, cpu_scaling=limits.cpu_scaling,
    )
    assert capacity.budget is not None
    metrics.environment_memory_budget.set(capacity.budget.total * 1024 * 1024)
    sizing = (f"sized to {capacity.min_environments} CPUs" if capacity.cpu is not None
              else "one per concurrent invocation (limits.cpu_scaling: false)")
    log.info("execution environments: %s, memory budget %d MB; at most %d concurrent executions",
             sizing, capacity.budget.total, account_concurrency(config))
    return capacity


def build_dispatcher(
    config: RouterConfig, invokers: Mapping[str, Invoker], *, store: StateStore, metrics: Metrics,
    session: aiohttp.ClientSession, clock: Clock | None = None, uniform: Uniform = random.uniform,
    poll_interval: float = QUEUE_POLL_INTERVAL, depth_interval: float = 5.0, account_limit: int | None = None,
    failures: FailedEvents | None = None,
    controls: Controls | None = None,
    history: HistoryRecorder | None = None,
) -> tuple[Dispatcher, DestinationBuilder]:
    """The dispatcher, its async queue, the functions' destinations and one async worker per function and
    queue; and the destination builder (``close`` it after the dispatcher has stopped).

    Async events go to the state store, or to RabbitMQ with ``async_queue``: the state store then still
    keeps the destination records not delivered yet, and the events accepted before ``async_queue`` was
    set, each function with a worker over either queue. Raises ``ConfigError`` listing every unusable
    destination.
    """
    from router.core.async_worker import AsyncWorker
    from router.core.dispatcher import Dispatcher
    from router.destinations.factory import DestinationBuilder, build_destinations
    from router.queues.sql import SqlQueue

    clock = clock or SystemClock()
    kept = SqlQueue(store, clock=clock, poll_interval=poll_interval)
    queues: list[AsyncQueue] = [kept]
    if config.async_queue:
        from router.queues.amqp import AmqpQueue

        queues.append(AmqpQueue(config.async_queue, list(config.functions), clock=clock,
                                publish_timeout=config.state.write_timeout))
    dispatcher = Dispatcher(config=config, invokers=invokers, metrics=metrics, queue=queues[-1], clock=clock,
                            depth_interval=depth_interval, account_limit=account_limit, controls=controls)
    dispatcher.history = history
    builder = DestinationBuilder(config, session=session, submit=dispatcher.submit)
    destinations = build_destinations(config, session=session, submit=dispatcher.submit, builder=builder)
    dispatcher.add_workers(
        AsyncWorker(name=name, config=fn, arn=dispatcher.arn(name), queue=queue, keep=kept,
                    limit=dispatcher.async_limit(name), execute=dispatcher.invoke_in_slot,
                    destinations=destinations[name], metrics=metrics, clock=clock, uniform=uniform,
                    failures=failures, history=history,
                    settings=functools.partial(dispatcher.controls.async_config, name))
        for name, fn in config.functions.items() for queue in queues
    )
    if failures is not None:  # redrives are new async invocations
        failures.set_submit(dispatcher.submit)
    return dispatcher, builder


def failed_events(config: RouterConfig, store: StateStore, metrics: Metrics,
                  clock: Clock | None = None) -> FailedEvents:
    """Where failed events are kept (``state.failures``), pruned and redriven from."""
    from router.core.failures import FailedEvents

    kept = config.state.failures
    return FailedEvents(store, metrics=metrics, clock=clock or SystemClock(), max_age=kept.max_age,
                        max_count=kept.max_count, timeout=config.state.write_timeout)


def stream_failure_destinations(config: RouterConfig, builder: DestinationBuilder) -> dict[str, Destination]:
    """The stream routes' ``source.on_failure`` destinations by route name, built (or refused, raising
    ``ConfigError`` with every problem) before anything starts."""
    from router.destinations.factory import mapping_prefix
    from router.mappings import mapping_uuid

    built: dict[str, Destination] = {}
    for i, route in enumerate(config.routes):
        source = route.source
        if not isinstance(source, KinesisSourceConfig | DynamodbStreamSourceConfig):
            continue
        if source.on_failure is not None:
            dest = builder.build(f"routes[{i}].source.on_failure", source.on_failure,
                                 s3_prefix=mapping_prefix(mapping_uuid(route.name)))
            if dest is not None:
                built[route.name] = dest
    builder.check()
    return built



def _start(tg: asyncio.TaskGroup, name: str, source: Any) -> None:
    tg.create_task(source.run(), name=name)


RETIRE_MARGIN = 5.0
"""Seconds beyond a replaced function's timeout its old environments get to finish after a reload."""


@dataclass(slots=True)
class _Running:
    """The components of a serving router that a reload changes (``Router.reload``)."""

    parts: InvokerParts
    invokers: dict[str, Invoker]  # the exit stack closes these: a reload keeps it current
    dispatcher: Dispatcher
    session: aiohttp.ClientSession
    ctx: HttpContext
    webhooks: WebhookTable
    sources: Sources
    tg: asyncio.TaskGroup  # where the sources run
    source_parts: SourceParts
    failures: FailedEvents | None
    builders: list[DestinationBuilder] = field(default_factory=list)  # of reloads, closed at the end


def once(close: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """``close`` made safe to call twice: the graceful shutdown calls it early, the exit stack again."""
    done = False

    async def close_once() -> None:
        nonlocal done
        if not done:
            done = True
            await close()

    return close_once


async def close_invokers(invokers: Mapping[str, Invoker]) -> None:
    """Close every invoker (their environments end); one that fails to close does not keep the others."""
    for invoker in invokers.values():
        with contextlib.suppress(Exception):
            await invoker.close()


class Router:
    """One running router: owns every component and shuts them down in order. ``path``: the config file
    it was loaded from, which ``reload`` reads again (None: no reload); ``stamp``: that file's stamp taken
    before it was read (``config.watch.initial_stamp``), what ``server.watch_config`` compares with (None:
    taken when ``serve`` begins)."""

    def __init__(self, config: RouterConfig, path: str | None = None, stamp: Stamp | None = None) -> None:
        self.config = config
        self.path = path
        self._stamp = stamp
        self.metrics = Metrics()
        self.metrics.build_info.labels(__version__).set(1)
        self.metrics.config_generation.set(1)
        self.generation = 1
        self.stopping = asyncio.Event()  # the first SIGTERM/SIGINT: shutdown begins
        self.cut_drain = asyncio.Event()  # a second one: the drain delay ends at once
        self._stop_requests = 0
        self._running: _Running | None = None  # the components a reload changes, while serving
        self._reload_lock = asyncio.Lock()
        self._reloads: set[asyncio.Task[Any]] = set()  # SIGHUP reloads and invoker retirements in flight

    async def serve(self) -> None:
        from router.config.watch import initial_stamp, watch
        from router.http.admin_failures import FAILED_EVENTS
        from router.http.nofile import connection_cap, raise_nofile_limit
        from router.http.server import (
            METRICS_LISTENER_CAP,
            HttpContext,
            Readiness,
            build_app,
            build_metrics_app,
            build_runner,
            exposure,
            in_container,
        )
        from router.http.webhook import WEBHOOKS
        from router.runtime.api import RuntimeApiServer
        from router.runtime.proctree import Watchdog
        from router.runtime.template import TemplateManager
        from router.sources.registry import SourceParts, build_sources
        from router.state.replica_lock import ReplicaLock
        from router.state.store import StateStore
        from router.state.url import engine_url, redact

        config = self.config
        server = config.server
        watched = self.path if server.watch_config else None  # no path (a config built in code): no watch
        first = self._stamp
        if watched is not None and first is None:
            first = await asyncio.to_thread(initial_stamp, watched)
        if server.invoke_api_exposed:  # load_config refuses it with file:line; a config built in code too
            raise RouterError(
                f"server.host: the Invoke API would run any function for anyone who can reach {server.host}; "
                "set server.invoke_token or server.invoke_keys, listen on 127.0.0.1, set invoke_api: false, "
                "or accept the risk with allow_unauthenticated_invoke: true")
        # Descriptors: as many as allowed, and client connections capped at half of them.
        nofile_before, nofile, nofile_hard = raise_nofile_limit()
        cap = connection_cap(server.max_connections, nofile)
        log.info("open-file limit %s (was %s, hard limit %s): at most %d client connections at once%s",
                 nofile, nofile_before, nofile_hard, cap,
                 "" if cap == server.max_connections else
                 f" (server.max_connections {server.max_connections} lowered to half the limit; raise it "
                 "with ulimit -n, systemd LimitNOFILE= or docker --ulimit nofile=)")

        # Every component is closed by the exit stack, in the reverse order of its start: the shutdown
        # order is written once, here, as it is built (aiohttp's runner cleanup is the model).
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(log.info, "router stopped")
            state = config.state
            store = StateStore.from_url(state.url, config.config_dir, durability=state.durability,
                                        write_timeout=state.write_timeout)
            if store.dialect == "sqlite":
                replica_lock = ReplicaLock(Path(engine_url(state.url, config.config_dir).database or ""),
                                           redact(state.url))
                replica_lock.acquire()
                stack.callback(replica_lock.release)
            await store.open()
            stack.push_async_callback(store.close)
            if store.dialect == "sqlite":
                # A single replica owns its SQLite file: leases of a crashed run are free at once.
                released = await store.release_all_leases()
                if released:
                    log.info("re-queued %d async events left in flight by the previous run", released)
            from router.core.history import HistoryRecorder

            history = HistoryRecorder(store, config, self.metrics)  # closed before the store: flushed
            history.start()
            stack.push_async_callback(history.close)
            # HTTP functions and http destinations share one pool; its cap must not be a hidden limit
            # below the ones users set: every invocation may hold a connection (the account-wide limit
            # bounds them), and destinations get room of their own.
            http_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                limit=account_concurrency(config) + DESTINATION_CONNECTIONS, limit_per_host=0))
            stack.push_async_callback(http_session.close)
            runtime_api = RuntimeApiServer()
            stack.push_async_callback(runtime_api.close)
            await runtime_api.start()
            watchdog = Watchdog()
            stack.push_async_callback(watchdog.close)
            if any(fn.kind == "local" for fn in config.functions.values()):
                await watchdog.start()
            templates = TemplateManager()
            stack.push_async_callback(templates.close)
            capacity = machine_capacity(config, self.metrics)
            parts = InvokerParts(
                config=config, metrics=self.metrics, http_session=http_session, runtime_api=runtime_api,
                capacity=capacity, templates=templates, watchdog=watchdog,
            )
            invokers: dict[str, Invoker] = {name: build_invoker(name, parts) for name in config.functions}
            stack.push_async_callback(close_invokers, invokers)
            failures = failed_events(config, store, self.metrics)
            # Routes paused and reserved concurrency set at run time, kept in the state store (issue 12).
            from router.core.controls import Controls

            controls_poll, queue_poll = poll_intervals(store)
            controls = Controls(config, store=store, metrics=self.metrics,
                                account_limit=account_concurrency(config), poll_interval=controls_poll)
            await controls.load()
            dispatcher, destinations = build_dispatcher(
                config, invokers, store=store, metrics=self.metrics, session=http_session,
                account_limit=account_concurrency(config), failures=failures, controls=controls,
                history=history, poll_interval=queue_poll,
            )
            stack.push_async_callback(destinations.close)  # amqp destination connections
            from router.core.versions import Versions
            from router.invokers.factory import build_version_invoker

            def build_version(name: str, fn: FunctionConfig, code_dir: Path, version: str) -> Invoker:
                return build_version_invoker(name, fn, code_dir, version, parts)

            versions = Versions(config, store, build=build_version)
            await versions.check_aliases()  # an alias naming a version never published: a start error
            stack.push_async_callback(versions.close)
            dispatcher.versions = versions
            stream_failures = stream_failure_destinations(config, destinations)
            readiness = Readiness()
            readiness.add_check("state_store", store.ping)
            if config.async_queue:
                readiness.add_check("async_queue", dispatcher.queue.ping)
            ctx = HttpContext(config=config, dispatcher=dispatcher, metrics=self.metrics, readiness=readiness,
                              reload=self.reload if self.path is not None else None, controls=controls,
                              history=history, versions=versions)

            app = build_app(ctx)
            app[FAILED_EVENTS] = failures  # the admin API's /admin/failures
            runner = build_runner(app, ctx, listener="main", cap=cap)
            stop_listening = once(runner.cleanup)
            stack.push_async_callback(stop_listening)
            await runner.setup()
            await web.TCPSite(runner, server.host, server.port, reuse_address=True).start()
            log.log(*exposure(config, server.port, in_container=in_container()))
            if server.metrics_port is not None:
                mrunner = build_runner(build_metrics_app(ctx), ctx, listener="metrics",
                                       cap=min(cap, METRICS_LISTENER_CAP))
                stack.push_async_callback(mrunner.cleanup)
                await mrunner.setup()
                await web.TCPSite(mrunner, server.host, server.metrics_port, reuse_address=True).start()
                log.log(*exposure(config, server.metrics_port, metrics_only=True,
                                 in_container=in_container()))

            async with asyncio.TaskGroup() as tg:
                dispatcher_task = tg.create_task(dispatcher.run(), name="dispatcher")
                failures_task = tg.create_task(failures.run(), name="failures")  # prune, redrives
                controls_task = tg.create_task(controls.run(), name="controls")  # replicas' changes
                for invoker in invokers.values():
                    await invoker.start()
                # Every source runs the same way (sources/registry.py imports each type only when used).
                source_parts = SourceParts(
                    config=config, dispatcher=dispatcher, metrics=self.metrics, readiness=readiness,
                    store=store, on_failure=stream_failures, failures=failures)
                sources = build_sources(source_parts)
                for name, source in sources.all():
                    tg.create_task(source.run(), name=name)
                self._running = _Running(
                    parts=parts, invokers=invokers, dispatcher=dispatcher, session=http_session, ctx=ctx,
                    webhooks=app[WEBHOOKS], sources=sources, tg=tg, source_parts=source_parts,
                    failures=failures)
                stack.push_async_callback(self._close_reloaded)  # before the components it uses close
                _return_free_memory()
                readiness.set_started()
                log.info(
                    "router %s listening on http://%s:%d (%d functions, %d routes)",
                    __version__, server.host, server.port, len(config.functions), len(config.routes),
                )
                watch_task = None
                if watched is not None:  # server.watch_config: a changed file is reloaded as SIGHUP does
                    log.info("watching %s for changes (server.watch_config)", watched)
                    watch_task = tg.create_task(
                        watch(watched, self._reload_for_watch, first=first), name="watch_config")
                await self.stopping.wait()

                # The graceful half: not ready at once, keep serving for the drain delay, stop sources,
                # finish in-flight work; the exit stack then closes the rest.
                if watch_task is not None:  # no reload starts from a change made during shutdown
                    watch_task.cancel()
                    await asyncio.wait([watch_task])
                await self._drain_delay(readiness)
                async with self._reload_lock:  # a reload in progress finishes first; none starts after
                    self._running = None
                log.info("shutting down: finishing in-flight work (up to %gs)", server.shutdown_timeout)
                controls.wake_for_shutdown()  # pollers of paused routes end at once
                await sources.stop(server.shutdown_timeout)  # the schedule, then the pollers
                # Stops listening, then waits up to shutdown_timeout for in-flight HTTP requests.
                await stop_listening()
                failures_task.cancel()  # redrives not submitted yet are handed back
                await asyncio.wait([failures_task])
                await dispatcher.drain(server.shutdown_timeout)
                dispatcher_task.cancel()
                controls_task.cancel()

    # --- hot reload -------------------------------------------------------------------------------------

    def request_reload(self) -> asyncio.Task[ReloadOutcome]:
        """SIGHUP (and ``server.watch_config``): reload in the background (one at a time; the outcome is
        logged). The task is the router's: at shutdown a reload in progress finishes before anything
        stops."""
        task = asyncio.get_running_loop().create_task(self.reload(), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)
        return task

    async def _reload_for_watch(self) -> None:
        """The file watch's reload: SIGHUP's, waited for, so that the watch looks again once it is done.
        Cancelling the watch does not cancel the reload (shutdown waits for it, as for SIGHUP's)."""
        await asyncio.shield(self.request_reload())

    async def reload(self) -> ReloadOutcome:
        """Read the config file again and apply what changed: functions and routes that changed are
        drained and restarted, the others are not touched. A file with errors, or a change only a restart
        applies, is refused and the running config kept. Never raises for a bad file."""
        from router.config.diff import ReloadOutcome

        async with self._reload_lock:
            try:
                outcome = await self._reload()
            except Exception as exc:  # a component failed to build or start: the running config stays
                log.exception("reload refused: %s", exc)
                outcome = ReloadOutcome("refused", self.generation,
                                        problems=(f"{type(exc).__name__}: {exc}",))
            self.metrics.config_reloads.labels(outcome.result).inc()
            if outcome.result == "refused":
                for line in outcome.problems:
                    log.error("reload refused: %s", line)
            elif outcome.result == "applied":
                log.info("reload applied, config generation %d: %s", outcome.generation, outcome.summary)
            else:
                log.info("reload: the config file has not changed")
            return outcome

    async def _reload(self) -> ReloadOutcome:
        from dataclasses import replace

        from router.config.diff import ReloadOutcome, diff
        from router.config.loader import load_config
        from router.core.async_worker import AsyncWorker
        from router.destinations.factory import DestinationBuilder, build_destinations
        from router.redaction import install

        running = self._running
        if running is None or self.path is None:
            return ReloadOutcome("refused", self.generation, problems=("the router is not serving",))
        try:
            new = await asyncio.to_thread(load_config, self.path)  # file I/O and checks off the loop
        except ConfigError as exc:
            return ReloadOutcome("refused", self.generation, problems=tuple(exc.problems))
        change = diff(self.config, new)
        if not change.applicable:
            return ReloadOutcome("refused", self.generation, problems=(change.refusal(),))
        if change.empty:
            return ReloadOutcome("unchanged", self.generation)
        versions = running.dispatcher.versions
        if versions is not None:  # aliases must name published versions, as at start
            try:
                await versions.check_aliases(new)
            except RouterError as exc:
                return ReloadOutcome("refused", self.generation, problems=(str(exc),))
        install(new.secrets)
        # Everything new is built before anything is switched: a failure leaves the running config whole.
        webhooks = running.webhooks.build(new)
        functions = [*change.functions_added, *change.functions_changed]
        parts = replace(running.parts, config=new)
        invokers: dict[str, Invoker] = {}
        builder = DestinationBuilder(new, session=running.session, submit=running.dispatcher.submit)
        try:
            for name in functions:
                invokers[name] = build_invoker(name, parts)
                await invokers[name].start()
            destinations = build_destinations(new, session=running.session, submit=running.dispatcher.submit,
                                              builder=builder, functions=functions)
            routes = {*change.routes_added, *change.routes_changed, *change.routes_removed}
            on_failure = {name: dest for name, dest in stream_failure_destinations(new, builder).items()
                          if name in routes}
        except BaseException:
            await close_invokers(invokers)
            await builder.close()
            raise
        # Routes that changed or went: their pollers stop gracefully first (what they took finishes on
        # the functions it was taken for).
        sources = running.sources
        running.dispatcher.controls.wake_routes(routes)  # pollers waiting on a paused route see their stop
        await sources.stop_routes(routes, new, new.server.shutdown_timeout)
        # The switch: no await from here on, so no request or event sees half of it.
        dispatcher = running.dispatcher
        retired = dispatcher.reconfigure(new, invokers, removed=change.functions_removed)
        kept = dispatcher.queues[0]  # the state store's: keeps undelivered destination records
        dispatcher.start_workers(
            AsyncWorker(name=name, config=new.functions[name], arn=dispatcher.arn(name), queue=queue,
                        keep=kept, limit=dispatcher.async_limit(name), execute=dispatcher.invoke_in_slot,
                        destinations=destinations[name], metrics=self.metrics, clock=SystemClock(),
                        failures=running.failures, history=dispatcher.history,
                        settings=functools.partial(dispatcher.controls.async_config, name))
            for name in functions for queue in dispatcher.queues)
        if dispatcher.history is not None:
            dispatcher.history.reconfigure(new)
        running.webhooks.install(webhooks)
        running.ctx.config = new
        changed_at = time.time()  # the functions' LastModified in the control API
        running.ctx.modified.update(dict.fromkeys(functions, changed_at))
        for name in change.functions_removed:
            running.ctx.modified.pop(name, None)
        running.parts = parts
        running.builders.append(builder)
        for name in functions:
            running.invokers[name] = invokers[name]
        for name in change.functions_removed:
            running.invokers.pop(name, None)
        for name, old in retired.items():
            self._own(self._retire(dispatcher, name, old), f"retire:{name}")
        self.config = new
        if change.logging_changed:
            setup_logging(new.logging.level, new.logging.format)
        running.source_parts = replace(
            running.source_parts, config=new, on_failure={**running.source_parts.on_failure, **on_failure})
        sources.start_routes(running.source_parts, routes,
                             lambda task, poller: _start(running.tg, task, poller))
        self.generation += 1
        self.metrics.config_generation.set(self.generation)
        return ReloadOutcome("applied", self.generation, summary=change.summary())

    def _own(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _retire(self, dispatcher: Dispatcher, name: str, invoker: Invoker) -> None:
        """Close a replaced invoker once its invocations have finished (at most its timeout + a margin)."""
        try:
            timeout = (self._function_timeout(name) or 900.0) + RETIRE_MARGIN
            if not await dispatcher.retire(invoker, timeout):
                log.warning("reload: function '%s' still had invocations running after %gs; its old "
                            "environments are stopped now", name, timeout)
        finally:
            await asyncio.shield(invoker.close())

    def _function_timeout(self, name: str) -> float | None:
        fn = self.config.functions.get(name)
        return fn.timeout if fn is not None else None

    async def _close_reloaded(self) -> None:
        """At shutdown: the reload and retirements in flight end (retired invokers closed), then the
        destination builders reloads made."""
        tasks = list(self._reloads)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        running = self._running
        if running is not None:
            for builder in running.builders:
                await builder.close()

    async def _drain_delay(self, readiness: Readiness) -> None:
        """Not ready at once; then, for ``server.drain_delay``, still serve webhooks and the Invoke API and
        run the sources, while load balancers (Kubernetes' endpoint update) stop sending requests here.
        A second SIGTERM/SIGINT ends the wait at once."""
        delay = self.config.server.drain_delay
        if delay <= 0 or self.cut_drain.is_set():
            readiness.begin_shutdown()
            return
        readiness.begin_shutdown(f"shutting down: still serving for server.drain_delay ({delay:g}s)")
        log.info("shutting down: /readyz answers 503; still serving for %gs (server.drain_delay) while load "
                 "balancers stop routing here; a second SIGTERM or SIGINT stops at once", delay)
        try:
            async with asyncio.timeout(delay):
                await self.cut_drain.wait()
        except TimeoutError:
            return
        log.info("shutting down: drain delay cut short by a second signal")

    def request_stop(self) -> None:
        """SIGTERM/SIGINT: the first begins the shutdown, a second one ends its drain delay."""
        self._stop_requests += 1
        self.stopping.set()
        if self._stop_requests > 1:
            self.cut_drain.set()


async def _main(config: RouterConfig, path: str | None = None, stamp: Stamp | None = None) -> int:
    router = Router(config, path, stamp)
    loop = asyncio.get_running_loop()
    from router.http.nofile import FaultLog

    loop.set_exception_handler(FaultLog(router.metrics))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, router.request_stop)
    loop.add_signal_handler(signal.SIGHUP, router.request_reload)
    try:
        await router.serve()
    except ConfigError as exc:
        for line in exc.problems:
            log.error(line)
        return 1
    except RouterError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        server = config.server
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = "; another process listens there: stop it or change server.port / server.metrics_port"
        log.error("cannot start on %s:%s: %s%s", server.host, server.port, exc.strerror or exc, hint)
        return 1
    return 0


def run(path: str) -> int:
    """``router run``: load, validate and serve ``path`` until SIGTERM/SIGINT."""
    from router.config.loader import load_config
    from router.config.watch import initial_stamp
    from router.redaction import install
    from router.runtime.secrecy import protect_router_process
    from router.runtime.spawn import EXEC, LOW_DESCRIPTORS

    protect_router_process()  # the environment holds the secrets the config interpolates
    # Imported first, so that the exec spawner reserves its low descriptor while few are open (a Node
    # environment's Runtime API socket goes there: ``ExecSpawner``); it says so if none was free.
    if EXEC.low_fd < 0:
        print(f"router: no descriptor below {LOW_DESCRIPTORS} free at start; a Node function's child "
              "processes started without a template inherit its Runtime API socket", file=sys.stderr)
    stamp = initial_stamp(path)  # before reading it: server.watch_config reloads a change made meanwhile
    try:
        config = load_config(path)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 1
    install(config.secrets)  # before anything can log or answer: secrets are redacted everywhere
    setup_logging(config.logging.level, config.logging.format)
    with asyncio.Runner(loop_factory=loop_factory(config.server.event_loop)) as runner:
        return runner.run(_main(config, path, stamp))


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``server.event_loop`` asks for: ``uvloop`` (libuv; ``auto`` when it is installed)
    or ``asyncio``'s own (None: ``asyncio.Runner``'s default)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise RouterError(
                "server.event_loop: uvloop is not installed; pip install uvloop, or set event_loop: asyncio"
            ) from None
        return None
    return uvloop.new_event_loop


def _return_free_memory() -> None:
    """Give the C heap's free pages back to the system once start-up is done: glibc keeps what the
    imports and the config's loading freed (~1 MB of the idle router's resident memory, measured). A
    no-op where the C library has no ``malloc_trim``."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)
