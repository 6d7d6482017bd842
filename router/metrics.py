"""Every Prometheus metric of DESIGN §5, declared once; one ``Metrics`` per app (fresh registry per test).

The registry also carries prometheus_client's process, platform and GC collectors (``process_*``: open
fds, resident memory, CPU seconds; ``python_info``; ``python_gc_*``) and ``router_asyncio_tasks``, so a
leak of memory, descriptors or tasks shows on ``/metrics``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_M = TypeVar("_M", Counter, Gauge, Histogram)

# Invocation durations reach 900 s, the longest function timeout.
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900,
)
AGE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 10800, 21600)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 60)


class LoopTasksCollector(Collector):
    """``router_asyncio_tasks``: the tasks not yet done on the event loop that scrapes, counted at scrape
    time. ``/metrics`` is served on the router's loop, so that is the router's; a collect made off any
    loop (a test reading a sample from a thread) yields nothing rather than guess."""

    NAME = "router_asyncio_tasks"
    HELP = "asyncio tasks not yet done on the router's event loop, counted when scraped"

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [GaugeMetricFamily(self.NAME, self.HELP)]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return []
        return [GaugeMetricFamily(self.NAME, self.HELP, value=len(asyncio.all_tasks(loop)))]


class Metrics:
    """The router's metrics. Labels never carry request ids, message ids or user data."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._children: dict[tuple[Any, ...], Any] = {}
        r = self.registry
        # The process of the router (RSS, open fds, CPU), Python's version and GC, and the loop's tasks.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        r.register(LoopTasksCollector())
        self.invocations = Counter(
            "router_invocations_total", "Invocations by final outcome of each attempt",
            ["function", "source", "outcome"], registry=r)
        self.version_invocations = Counter(
            "router_version_invocations_total",
            "Invocations of published versions (Lambda's ExecutedVersion) by final outcome of each attempt; "
            "version is the number when an alias of the config names it, else 'other' (a bounded set)",
            ["function", "version", "outcome"], registry=r)
        self.invocation_duration = Histogram(
            "router_invocation_duration_seconds", "Invocation duration", ["function"],
            buckets=DURATION_BUCKETS, registry=r)
        self.concurrent_executions = Gauge(
            "router_concurrent_executions", "Invocations running now", ["function"], registry=r)
        self.throttles = Counter(
            "router_throttles_total", "Invocations refused or delayed at the concurrency cap",
            ["function", "source"], registry=r)
        self.retries = Counter("router_retries_total", "Async retries scheduled", ["function"], registry=r)
        self.async_events_received = Counter(
            "router_async_events_received_total", "Async events persisted", ["function"], registry=r)
        self.async_event_age = Histogram(
            "router_async_event_age_seconds", "Age of async events when an attempt starts", ["function"],
            buckets=AGE_BUCKETS, registry=r)
        self.async_events_dropped = Counter(
            "router_async_events_dropped_total", "Async events dropped without a destination",
            ["function", "reason"], registry=r)
        self.dead_letter_errors = Counter(
            "router_dead_letter_errors_total",
            "Failed async events a dead-letter queue did not take (Lambda's DeadLetterErrors)", ["function"],
            registry=r)
        self.async_queue_depth = Gauge(
            "router_async_queue_depth",
            "Async events waiting: in the state store, and with async_queue also ready in RabbitMQ",
            ["function"], registry=r)
        self.destination_deliveries = Counter(
            "router_destination_deliveries_total", "Destination records delivered",
            ["function", "kind", "outcome"], registry=r)
        self.cold_starts = Counter(
            "router_cold_starts_total", "Execution environments started for an invocation", ["function"],
            registry=r)
        self.init_duration = Histogram(
            "router_init_duration_seconds", "Environment init duration", ["function"],
            buckets=DURATION_BUCKETS, registry=r)
        self.environments = Gauge(
            "router_environments", "Execution environments by state (idle, busy, starting)",
            ["function", "state"], registry=r)
        self.environment_waits = Counter(
            "router_environment_waits_total",
            "Invocations that waited for an execution environment instead of starting one, by reason "
            "(cpu: the CPUs were saturated; scaling: the number of invocations run at once was still "
            "growing; starting: enough environments were starting; memory: the environment memory "
            "budget was spent; concurrency: the function's cap; queued: behind invocations already "
            "waiting)",
            ["function", "reason"], registry=r)
        self.environment_wait = Histogram(
            "router_environment_wait_seconds", "Time an invocation waited for an execution environment",
            ["function"], buckets=DURATION_BUCKETS, registry=r)
        self.environment_memory_reserved = Gauge(
            "router_environment_memory_reserved_bytes",
            "Memory reserved by all execution environments (each its function's memory)", registry=r)
        self.environment_memory_budget = Gauge(
            "router_environment_memory_budget_bytes",
            "Memory all execution environments may reserve together (limits.environment_memory)", registry=r)
        self.account_concurrent_executions = Gauge(
            "router_account_concurrent_executions",
            "Invocations running now across all functions (limits.concurrent_executions caps it)", registry=r)
        self.recursive_loops = Counter(
            "router_recursive_loops_total",
            "Invocations not run because their chain of events had already invoked the function 16 "
            "times (recursive loop detection, recursive_loop: Terminate)", ["function"], registry=r)
        self.source_events = Counter(
            "router_source_events_total", "Events received from sources", ["route", "type"], registry=r)
        self.source_events_filtered = Counter(
            "router_source_events_filtered_total", "Records acked without invoking: no filter matched",
            ["route", "type"], registry=r)
        self.source_errors = Counter(
            "router_source_errors_total", "Errors of sources", ["route", "type"], registry=r)
        self.iterator_age = Gauge(
            "router_iterator_age_seconds", "Age of the last record read", ["route", "shard"], registry=r)
        self.schedule_runs = Counter(
            "router_schedule_runs_total", "Schedule fires by outcome (fired, missed, error, paused)",
            ["route", "outcome"], registry=r)
        self.schedule_lag = Histogram(
            "router_schedule_lag_seconds", "Delay between nominal and actual fire time", ["route"],
            buckets=LAG_BUCKETS, registry=r)
        self.webhook_requests = Counter(
            "router_webhook_requests_total", "Webhook requests by HTTP status", ["route", "status"],
            registry=r)
        self.webhook_fast_path = Counter(
            "router_webhook_fast_path_requests_total",
            "Webhook requests answered on the fast path (whole in one read, to a route already routed by "
            "aiohttp once); the others are aiohttp's", registry=r)
        self.build_info = Gauge("router_build_info", "Build information", ["version"], registry=r)
        # hot reload (SIGHUP, `router reload`)
        self.config_generation = Gauge(
            "router_config_generation", "The config being served: 1 at start, +1 at every reload applied",
            registry=r)
        self.config_reloads = Counter(
            "router_config_reloads_total",
            "Config reloads by result (applied, unchanged, refused: a bad file or a setting only a restart "
            "changes; the running config is kept)", ["result"], registry=r)
        # amqp source: what became of each delivered message, and reconnections
        self.amqp_messages = Counter(
            "router_amqp_messages_total",
            "AMQP messages by outcome (acked, rejected, requeued, returned, redelivered)",
            ["route", "outcome"], registry=r)
        self.amqp_reconnects = Counter(
            "router_amqp_reconnects_total", "Robust AMQP connections re-established", ["route"],
            registry=r)
        # stream sources (kinesis, dynamodb_stream): records given up, with or without an on_failure
        self.stream_records_discarded = Counter(
            "router_stream_records_discarded_total",
            "Stream records given up after retries or age (condition: RetryAttemptsExhausted, "
            "RecordAgeExceeded); their failure record went to source.on_failure when set",
            ["route", "condition"], registry=r)
        # stream sources with several replicas: the shard leases this replica holds
        self.shard_leases = Gauge(
            "router_shard_leases", "Shard leases this replica holds (the shards it reads), by stream route",
            ["route"], registry=r)
        # bisect_on_error (sqs, amqp): failed batches split in halves to find the failing messages
        self.batch_bisections = Counter(
            "router_batch_bisections_total",
            "Failed invocations of a batch split in halves and retried (bisect_on_error)",
            ["route"], registry=r)
        # the HTTP front: connections, their cap and timeouts, the request-body budget
        self.http_connections = Gauge(
            "router_http_connections", "Client connections open now, by listener (main, metrics)",
            ["listener"], registry=r)
        self.http_connections_limit = Gauge(
            "router_http_connections_limit",
            "Most client connections open at once, by listener (server.max_connections, lowered to fit "
            "the open-file limit)", ["listener"], registry=r)
        self.http_connections_closed = Counter(
            "router_http_connections_closed_total",
            "Client connections closed by the router, by reason (over_cap: refused with 503 at the cap; "
            "evicted: an idle or header-reading connection closed to make room at the cap; header_timeout; "
            "headers_too_large: over 64 KiB of request line and headers; send_timeout: a response not "
            "taken within server.body_timeout; malformed: a request that could not be parsed, answered 400)",
            ["listener", "reason"], registry=r)
        self.http_requests_refused = Counter(
            "router_http_requests_refused_total",
            "Requests refused while reading their body, by reason (body_timeout: 408; body_budget: 503, "
            "server.max_body_buffer was full)", ["reason"], registry=r)
        self.http_body_buffer = Gauge(
            "router_http_body_buffer_bytes",
            "Request-body bytes held in memory now across all requests (server.max_body_buffer caps it)",
            registry=r)
        self.http_accept_errors = Counter(
            "router_http_accept_errors_total",
            "Failed accepts of new connections, by errno name (EMFILE: out of file descriptors)",
            ["error"], registry=r)
        # Failed events kept for inspection and redrive (issue 12, ``router failures``).
        self.failed_events_kept = Counter(
            "router_failed_events_kept_total",
            "Failed events kept in the state store (async events given up, stream batches given up)",
            ["function", "condition"], registry=r)
        self.failed_events_unkept = Counter(
            "router_failed_events_unkept_total",
            "Failed events that could not be kept (state store unavailable); their settlement went on",
            ["function"], registry=r)
        self.failed_events_redriven = Counter(
            "router_failed_events_redriven_total",
            "Failed events redriven: submitted again as a new async invocation", ["function"], registry=r)
        self.failed_events_pruned = Counter(
            "router_failed_events_pruned_total",
            "Failed events deleted by retention (state.failures max_age, max_count)", registry=r)
        # --- pause and resume (issue 12): run-time controls (``router.core.controls``) ---
        self.route_enabled = Gauge(
            "router_route_enabled", "1 while a route runs, 0 while it is paused", ["route"], registry=r)
        self.function_reserved_concurrency = Gauge(
            "router_function_reserved_concurrency",
            "A function's reserved concurrency now (set at run time, else its config's concurrency; "
            "-1: none, 0: paused)", ["function"], registry=r)
        self.function_paused = Gauge(
            "router_function_paused", "1 while a function is paused (reserved concurrency 0)", ["function"],
            registry=r)
        self.paused_held = Counter(
            "router_paused_held_total",
            "What pausing held back, by what (webhook_request: answered 503; schedule_tick: skipped; "
            "sync_invoke: answered 429) and the paused route or function", ["what", "name"], registry=r)
        # --- invocation history (issue 12, part h1) ---
        self.history_dropped = Counter(
            "router_history_dropped_total",
            "Invocation history changes not recorded: buffer_full (oldest dropped), store_error, shutdown",
            ["reason"], registry=r)

    def child(self, metric: _M, *values: str) -> _M:
        """``metric.labels(*values)``, remembered: the hot path asks for the same few children per
        invocation, and ``labels`` validates and locks on every call. Label sets are bounded (DESIGN §5),
        so is this."""
        key = (metric, *values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found
