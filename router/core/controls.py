"""Run-time controls: routes paused or enabled, functions' reserved concurrency (0 pauses) and their event
invoke overrides (retries, event age), as operators change them through the admin API, the CLI or
Lambda's control API.

``Controls`` holds the current state in memory, applies it (listeners: the dispatcher's limits), and
keeps it in the state store (``router_controls``): ``load`` at start, every change written before it is
applied, and ``run`` re-reads the table every ``poll_interval`` seconds so replicas sharing PostgreSQL
see each other's changes (a small table: one row per route or function changed). Without a store
(``router invoke``, unit tests) the state lives in memory only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from router.clock import Clock, SystemClock
from router.config.models import AsyncConfig, RouterConfig
from router.metrics import Metrics
from router.state.controls import FUNCTION, ROUTE, ControlRow
from router.state.store import StateStore

log = logging.getLogger("router.controls")

POLL_INTERVAL = 2.0
"""Seconds between two reads of the controls table (how soon a replica sees another's change)."""
LAMBDA_MIN_UNRESERVED = 100
"""Lambda keeps at least 100 concurrent executions of an account unreserved (PutFunctionConcurrency)."""

# What pausing held back, the ``what`` label of router_paused_held_total (a closed set).
HELD_WEBHOOK = "webhook_request"
HELD_SCHEDULE = "schedule_tick"
HELD_SYNC = "sync_invoke"

ReservedListener = Callable[[str, "int | None"], None]


class ControlError(ValueError):
    """Raised when a change cannot be made: an unknown name, or a value out of bounds; ``code`` is the
    Lambda error it answers as (``ResourceNotFoundException`` or ``InvalidParameterValueException``)."""

    def __init__(self, message: str, code: str = "InvalidParameterValueException") -> None:
        super().__init__(message)
        self.code = code


def minimum_unreserved(account: int) -> int:
    """The concurrency that must stay unreserved: Lambda's 100 of its default 1,000 (10 %), scaled to the
    router's account limit (at most 100)."""
    return min(LAMBDA_MIN_UNRESERVED, account // 10)


@dataclass(frozen=True, slots=True)
class FunctionState:
    """One function's run-time settings; None: as the config says."""

    reserved_concurrency: int | None = None
    maximum_retry_attempts: int | None = None
    maximum_event_age: float | None = None
    updated_at: float = 0.0


class Controls:
    """The run-time state of every route and function of ``config``, kept in ``store`` when given."""

    def __init__(self, config: RouterConfig, *, store: StateStore | None = None,
                 metrics: Metrics | None = None, clock: Clock | None = None,
                 poll_interval: float = POLL_INTERVAL, account_limit: int | None = None) -> None:
        self._config = config
        self._store = store
        self._metrics = metrics
        self._clock: Clock = clock or SystemClock()
        self._poll_interval = poll_interval
        self.account_limit = account_limit
        self._routes = {r.name: r for r in config.routes}
        self._enabled: dict[str, asyncio.Event] = {}  # set while the route is enabled (or shutting down)
        self._paused: set[str] = set()
        self._closing = False
        self._route_updated: dict[str, float] = {}
        self._functions: dict[str, FunctionState] = {name: FunctionState() for name in config.functions}
        self._listeners: list[ReservedListener] = []
        self._lock = asyncio.Lock()  # one change at a time: read, check, write, apply
        for name in self._routes:
            event = asyncio.Event()
            event.set()
            self._enabled[name] = event
        if metrics is not None:
            for name in self._routes:
                metrics.route_enabled.labels(route=name).set(1)
            for name in config.functions:
                self._show_function(name)

    # --- reading ----------------------------------------------------------------------------------------

    def route_names(self) -> list[str]:
        return list(self._routes)

    def route_enabled(self, route: str) -> bool:
        """Whether ``route`` runs (True for a name it does not know: nothing to hold back)."""
        return route not in self._paused

    def route_updated(self, route: str) -> float:
        """When ``route`` was last paused or resumed (epoch seconds; 0 when never)."""
        return self._route_updated.get(route, 0.0)

    async def wait_route_enabled(self, route: str) -> None:
        """Return once ``route`` is enabled (at once when it is), or the router is shutting down."""
        event = self._enabled.get(route)
        if event is not None and not event.is_set():
            await event.wait()

    def wake_for_shutdown(self) -> None:
        """Shutdown: pollers waiting for a paused route stop waiting (they see their stop and end at once,
        not after ``shutdown_timeout``); the routes stay paused for webhooks, schedules and the store."""
        self._closing = True
        for event in self._enabled.values():
            event.set()

    def function(self, name: str) -> FunctionState:
        return self._functions[name]

    def reserved(self, name: str) -> int | None:
        """The function's reserved concurrency: set at run time, else the config's ``concurrency``."""
        state = self._functions[name]
        if state.reserved_concurrency is not None:
            return state.reserved_concurrency
        return self._config.functions[name].concurrency

    def paused(self, name: str) -> bool:
        """Whether function ``name`` is paused (reserved concurrency 0)."""
        return self._functions[name].reserved_concurrency == 0

    def async_config(self, name: str) -> AsyncConfig:
        """The function's ``async`` settings with the run-time overrides applied."""
        base = self._config.functions[name].async_
        state = self._functions[name]
        update: dict[str, object] = {}
        if state.maximum_retry_attempts is not None:
            update["retries"] = state.maximum_retry_attempts
        if state.maximum_event_age is not None:
            update["max_event_age"] = state.maximum_event_age
        return base.model_copy(update=update) if update else base

    def on_reserved(self, listener: ReservedListener) -> None:
        """Call ``listener(function, reserved)`` now for every function, and at every change after."""
        self._listeners.append(listener)
        for name in self._functions:
            listener(name, self.reserved(name))

    def held(self, what: str, name: str) -> None:
        """Count one thing pausing held back (``HELD_*``) for route or function ``name``."""
        if self._metrics is not None:
            self._metrics.child(self._metrics.paused_held, what, name).inc()

    # --- changing ---------------------------------------------------------------------------------------

    async def set_route_enabled(self, route: str, enabled: bool) -> None:
        """Pause (False) or resume (True) ``route``; kept in the store before it applies."""
        if route not in self._routes:
            raise ControlError(f"route '{route}': no such route in the config", "ResourceNotFoundException")
        async with self._lock:
            now = self._clock.time()
            await self._save(ControlRow(ROUTE, route, enabled=enabled, updated_at=now))
            self._apply_route(route, enabled, now)

    async def set_reserved(self, function: str, reserved: int | None) -> None:
        """Set ``function``'s reserved concurrency (0 pauses it; None: the config's ``concurrency``).
        Raises ``ControlError`` when it would leave less than the minimum unreserved (Lambda's rule)."""
        self._known(function)
        if reserved is not None and reserved < 0:
            raise ControlError(f"function '{function}': ReservedConcurrentExecutions must be 0 or more, "
                               f"got {reserved}")
        async with self._lock:
            if reserved is not None and self.account_limit is not None:
                others = sum(self.reserved(n) or 0 for n in self._functions if n != function)
                minimum = minimum_unreserved(self.account_limit)
                if others + reserved > self.account_limit - minimum:
                    raise ControlError(
                        "Specified ReservedConcurrentExecutions for function decreases account's "
                        f"UnreservedConcurrentExecution below its minimum value of [{minimum}]: the router "
                        f"runs at most {self.account_limit} (limits.concurrent_executions) and other "
                        f"functions reserve {others}; ask for at most "
                        f"{max(0, self.account_limit - minimum - others)}")
            state = replace(self._functions[function], reserved_concurrency=reserved,
                            updated_at=self._clock.time())
            await self._save(_row(function, state))
            self._apply_function(function, state)

    async def set_invoke_config(self, function: str, *, retries: int | None, max_age: float | None) -> None:
        """Override ``function``'s async retries and event age (None: the config's)."""
        self._known(function)
        async with self._lock:
            state = replace(self._functions[function], maximum_retry_attempts=retries,
                            maximum_event_age=max_age, updated_at=self._clock.time())
            await self._save(_row(function, state))
            self._apply_function(function, state)

    # --- reload -----------------------------------------------------------------------------------------

    def wake_routes(self, routes: Iterable[str]) -> None:
        """A reload is about to stop these routes' pollers: those waiting while the route is paused stop
        waiting, so they see their stop (a receive they make meanwhile is handed back: still paused)."""
        for name in routes:
            event = self._enabled.get(name)
            if event is not None:
                event.set()

    def reconfigure(self, config: RouterConfig) -> None:
        """A reload: the routes and functions of ``config``. What was set at run time for those that stay
        is kept; new ones start as their config says (a stored row of a name that comes back applies at
        the next read of the store)."""
        self._config = config
        self._routes = {r.name: r for r in config.routes}
        for name in self._routes:
            event = asyncio.Event()
            if name not in self._paused or self._closing:
                event.set()
            self._enabled[name] = event
            if self._metrics is not None:
                self._metrics.route_enabled.labels(route=name).set(0 if name in self._paused else 1)
        for name in [n for n in self._enabled if n not in self._routes]:
            self._enabled.pop(name).set()
            self._paused.discard(name)
        self._functions = {name: self._functions.get(name, FunctionState()) for name in config.functions}
        for name in config.functions:
            self._show_function(name)

    # --- the store --------------------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the stored controls and apply them; rows of routes or functions no longer in the config
        are ignored (kept: they apply again if the name comes back)."""
        if self._store is None:
            return
        rows = await self._store.load_controls()
        for row in rows:
            if row.kind == ROUTE and row.name in self._routes and row.enabled is not None:
                if self.route_enabled(row.name) != row.enabled:
                    log.info("route '%s': %s (kept in the state store)", row.name,
                             "enabled" if row.enabled else "paused", extra={"route": row.name})
                self._apply_route(row.name, row.enabled, row.updated_at)
            elif row.kind == FUNCTION and row.name in self._functions:
                state = FunctionState(row.reserved_concurrency, row.maximum_retry_attempts,
                                      row.maximum_event_age, row.updated_at)
                if state != self._functions[row.name]:
                    self._apply_function(row.name, state)

    async def run(self) -> None:
        """Re-read the table every ``poll_interval`` seconds until cancelled (replicas' changes)."""
        if self._store is None:
            return
        while True:
            await self._clock.sleep(self._poll_interval)
            try:
                async with self._lock:
                    await self.load()
            except Exception as exc:
                log.warning("controls: cannot read the state store (%s); the last state read stays in "
                            "force", exc)

    async def _save(self, row: ControlRow) -> None:
        if self._store is not None:
            await self._store.save_control(row)

    # --- applying ---------------------------------------------------------------------------------------

    def _apply_route(self, route: str, enabled: bool, at: float) -> None:
        event = self._enabled[route]
        if enabled:
            self._paused.discard(route)
            event.set()
        else:
            self._paused.add(route)
            if not self._closing:
                event.clear()
        self._route_updated[route] = at
        if self._metrics is not None:
            self._metrics.route_enabled.labels(route=route).set(1 if enabled else 0)

    def _apply_function(self, name: str, state: FunctionState) -> None:
        before = self.reserved(name)
        self._functions[name] = state
        after = self.reserved(name)
        if before != after:
            log.info("function '%s': reserved concurrency %s", name, "as the config" if
                     state.reserved_concurrency is None else state.reserved_concurrency,
                     extra={"function": name})
            for listener in self._listeners:
                listener(name, after)
        self._show_function(name)

    def _show_function(self, name: str) -> None:
        if self._metrics is None:
            return
        reserved = self.reserved(name)
        self._metrics.function_reserved_concurrency.labels(function=name).set(-1 if reserved is None
                                                                              else reserved)
        self._metrics.function_paused.labels(function=name).set(1 if self.paused(name) else 0)

    def _known(self, function: str) -> None:
        if function not in self._functions:
            raise ControlError(f"function '{function}': no such function in the config",
                               "ResourceNotFoundException")


def _row(name: str, state: FunctionState) -> ControlRow:
    return ControlRow(FUNCTION, name, reserved_concurrency=state.reserved_concurrency,
                      maximum_retry_attempts=state.maximum_retry_attempts,
                      maximum_event_age=state.maximum_event_age, updated_at=state.updated_at)
