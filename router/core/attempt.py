"""One attempt of an async event, the same over every transport: age check, invocation, the retry policy's
decision, logged and counted; and the destination record's delivery."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from router import compact_json
from router.clock import Clock
from router.config.models import AsyncConfig
from router.core.async_queue import AsyncEvent
from router.core.retry import Action, Decision, Uniform, decide, is_too_old
from router.destinations.base import Destination
from router.invocation import Invocation, Result
from router.metrics import Metrics

log = logging.getLogger("router.async")

DELIVERY_SOURCE = "destination"
"""``source`` of delivery events: a destination record waiting for its delivery, not an invocation."""

Execute = Callable[[Invocation], Awaitable[Result]]


@dataclass(slots=True)
class Attempted:
    """What one attempt of an async event came to. ``decision`` is None when the event was older than
    ``max_event_age`` and not invoked; ``at`` is the clock time of the decision (retries count from it)."""

    result: Result | None
    decision: Decision | None
    at: float
    trace: str | None = None  # the invocation's trace header (destination records carry it on)


async def run_attempt(ev: AsyncEvent, *, name: str, cfg: AsyncConfig, clock: Clock, execute: Execute,
                      uniform: Uniform, metrics: Metrics) -> Attempted:
    """One attempt of an async event, the same for every transport: the age check, the invocation, and
    the retry policy's decision (``core/retry.py``), logged and counted. Settling it is the caller's."""
    now = clock.time()
    if is_too_old(now, ev.enqueued_at, cfg.max_event_age):
        log.warning("async event is older than max_event_age (%gs): not invoked", cfg.max_event_age,
                    extra=event_extra(name, ev, ev.attempts))
        return Attempted(None, None, now, ev.trace)
    metrics.async_event_age.labels(name).observe(max(0.0, now - ev.enqueued_at))
    inv = Invocation(
        function=name, payload=ev.payload, source=ev.source, route=ev.route, request_id=ev.request_id,
        invocation_type="async", attempt=ev.attempts + 1, enqueued_at=ev.enqueued_at, trace_id=ev.trace,
        qualifier=ev.qualifier,
    )
    result = await execute(inv)
    now = clock.time()
    d = decide(
        result, attempts=ev.attempts, retries=cfg.retries, now=now, enqueued_at=ev.enqueued_at,
        max_event_age=cfg.max_event_age, initial=cfg.backoff.initial, maximum=cfg.backoff.max,
        uniform=uniform,
    )
    if d.action is Action.RETRY:
        if not d.throttled:
            metrics.retries.labels(name).inc()
        log.info(
            "async attempt %d failed (%s); %s in %.3fs", inv.attempt, result.error_summary(),
            "retrying (throttled, no retry used)" if d.throttled else "retrying", d.delay,
            extra=event_extra(name, ev, inv.attempt, result),
        )
    elif d.action is Action.FAIL:
        log.warning("async event failed for good (%s) after %d attempts: %s", d.condition, d.attempts,
                    result.error_summary(), extra=event_extra(name, ev, inv.attempt, result))
    return Attempted(result, d, now, inv.trace_id)


def event_extra(function: str, ev: AsyncEvent, attempt: int, result: Result | None = None) -> dict[str, Any]:
    """The log fields of an async event's attempt."""
    extra: dict[str, Any] = {
        "function": function, "route": ev.route, "request_id": ev.request_id, "attempt": attempt,
    }
    if result is not None and result.error_type is not None:
        extra["error_type"] = result.error_type.value
    return extra


def delivery_payload(which: str, record: dict[str, Any]) -> bytes:
    """The payload of a delivery event: the record and the destination (on_success / on_failure)."""
    return compact_json.dumpb({"destination": which, "record": record})


async def deliver_record(
    dest: Destination, record: dict[str, Any], *, metrics: Metrics, extra: dict[str, Any],
    trace: str | None = None,
) -> bool:
    """Send ``record`` (with ``trace``, the invocation's trace header); count and log the outcome. False
    when it failed (the caller keeps the record)."""
    function = str(extra["function"])
    try:
        await dest.send(record, trace=trace)
    except Exception as exc:
        metrics.destination_deliveries.labels(function, dest.kind, "error").inc()
        log.warning("%s destination failed, the record is kept and retried: %s", dest.kind, exc,
                    extra=extra)
        return False
    metrics.destination_deliveries.labels(function, dest.kind, "success").inc()
    return True
