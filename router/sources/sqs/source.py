"""The sqs source: Lambda's SQS event source mapping (long polling, batches, delete on success).

Each poller takes a concurrency slot of the function *before* it receives (no receive while the function
is at its cap), long-polls up to ``batch_size`` messages (gathering across receives for up to
``batch_window``), invokes the function once with ``{"Records": [...]}``, then deletes what succeeded.
Failed messages stay on the queue and come back after their visibility timeout, so the queue's own
redrive policy moves poison messages to its DLQ. Visibility is extended while a batch runs. With
``bisect_on_error`` a batch whose invocation failed as a whole is split in halves within the same
receive (``batch_bisect``), so only the messages that fail alone stay on the queue.
Pollers start at 2 and scale up to ``max_concurrency`` while receives come back full, down when empty.

Faults (queue not found, credentials, throttling, network) are logged, counted in
``router_source_errors_total``, mark the route not ready in ``/readyz``, and are retried with
exponential backoff (capped at 30 s) until the queue answers again; the source never crashes the app.
``stop`` lets in-flight receives (each up to ``wait_time``) and batches finish (an abandoned long poll
would still hide messages), hands back what was received but not started (visibility 0) and acknowledges
nothing that did not succeed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from router import lineage
from router.aws import create_client, describe_error, is_not_found, region_of
from router.clock import Clock
from router.config.models import AwsConfig, RouteConfig, SqsSourceConfig
from router.core.dispatcher import Dispatch
from router.filters import compile_filters, sqs_filter_data
from router.invocation import PAYLOAD_LIMIT, Invocation, Result
from router.metrics import Metrics
from router.readiness import Readiness
from router.sources.batch_bisect import Bisection
from router.sources.lifecycle import BACKOFF, RouteHealth, StopGate
from router.sources.sqs.event import (
    batch_payload,
    batch_verdict,
    fit_batch,
    to_record,
)
from router.sources.sqs.queue import MAX_BATCH, QueueInfo, SqsQueue, kept_visible

log = logging.getLogger("router.sources.sqs")

TYPE = "sqs"
MIN_POLLERS = 2
AWS_FAULTS = (ClientError, BotoCoreError, OSError, TimeoutError)


class Phase(enum.Enum):
    IDLE = "idle"  # waiting for a slot, reading attributes or backing off: safe to cancel
    RECEIVING = "receiving"  # a long poll is in flight: let it finish, hand back what it brings
    BUSY = "busy"  # a batch is with the function or being acknowledged


class SqsSource:
    """One ``type: sqs`` route; implements ``router.sources.base.Poller``.

    The long-poll wait is the route's ``wait_time`` (default 20 s: SQS's maximum and Lambda's); ``backoff``
    the first and largest delay after a fault; ``clock`` the time of batch windows, backoff and the fault log.
    """

    def __init__(
        self,
        route: RouteConfig,
        *,
        dispatcher: Dispatch,
        metrics: Metrics,
        readiness: Readiness,
        aws: AwsConfig,
        backoff: tuple[float, float] = BACKOFF,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(route.source, SqsSourceConfig):
            raise TypeError(f"SqsSource: route '{route.name}' is not an sqs route")
        self.route = route
        self._cfg: SqsSourceConfig = route.source
        self._dispatcher = dispatcher
        self._aws = aws
        self._wait = int(self._cfg.wait_time)  # whole seconds, 1..20: the loader has checked
        self._filter = compile_filters(route.filters)  # the loader has checked the patterns
        self._gate = StopGate(clock)
        self._clock = self._gate.clock
        self._health = RouteHealth(route, TYPE, service="queue", connecting="connecting to the queue",
                                   metrics=metrics, readiness=readiness, logger=log, gate=self._gate,
                                   backoff=backoff)
        self._extra = self._health.extra

        self._queue: SqsQueue | None = None
        self._info: QueueInfo | None = None
        self._region = aws.region
        self._info_lock = asyncio.Lock()
        self._tg: asyncio.TaskGroup | None = None
        self._phase: dict[asyncio.Task[None], Phase] = {}
        self._acks: set[asyncio.Task[dict[str, str]]] = set()
        self.filtered = 0  # messages deleted because no filter matched
        self._received = metrics.source_events.labels(route=route.name, type=TYPE)  # per batch: resolved once
        self._filtered = metrics.source_events_filtered.labels(route=route.name, type=TYPE)
        self._bisections = metrics.batch_bisections.labels(route=route.name)
        self._reported = self._cfg.report_batch_item_failures

    # --- lifecycle ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until ``stop``; faults are retried with backoff, never raised."""
        with self._gate.run():
            try:
                while not self._gate.stopping:
                    try:
                        async with create_client(
                            "sqs", self._aws, max_pool_connections=self._cfg.max_concurrency + 5,
                            read_timeout=self._wait + 40, validate_params=False,  # our own fixed calls
                        ) as client:
                            self._queue = SqsQueue(client, self._cfg.queue_url, clock=self._clock)
                            try:
                                async with asyncio.TaskGroup() as tg:
                                    self._tg = tg
                                    for _ in range(min(MIN_POLLERS, self._cfg.max_concurrency)):
                                        self._spawn()
                            finally:
                                self._tg = None
                                if self._acks:  # deletes in flight finish before the client closes
                                    await asyncio.wait(set(self._acks))
                    except Exception as exc:  # a client that cannot be built (bad endpoint_url), or a bug
                        self._fault(exc)
                        await self._health.backoff_pause()
            finally:
                self._queue = None

    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109 (the Poller contract)
        """No new receives; in-flight receives and batches get ``timeout`` to finish; then ``run`` ends."""

        def cancel_idle() -> None:
            for task, phase in list(self._phase.items()):
                if phase is Phase.IDLE:
                    task.cancel()

        def timed_out() -> None:
            phases = list(self._phase.values())
            log.warning("route '%s': %d batches and %d long polls did not finish within %gs: cancelled; "
                        "their messages come back after the visibility timeout", self.route.name,
                        phases.count(Phase.BUSY), phases.count(Phase.RECEIVING), timeout, extra=self._extra)

        def cancel_all() -> None:
            for poller in list(self._phase):
                poller.cancel()
            for ack in list(self._acks):
                ack.cancel()

        await self._gate.stop(timeout, cancel_idle=cancel_idle, cancel_all=cancel_all, timed_out=timed_out)

    # --- pollers -----------------------------------------------------------------------------------

    def _spawn(self) -> None:
        if self._tg is None or self._gate.stopping or len(self._phase) >= self._cfg.max_concurrency:
            return
        task = self._tg.create_task(self._poll(), name=f"sqs:{self.route.name}")
        self._phase[task] = Phase.IDLE

    async def _poll(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        gate = self._gate
        try:
            while not gate.stopping:
                self._phase[me] = Phase.IDLE
                try:
                    info = await self._ensure_info()
                    async with self._dispatcher.slot(self.route.function, TYPE, self.route.name):
                        if gate.stopping:
                            return
                        self._phase[me] = Phase.RECEIVING
                        got = await self._cycle(me, info)
                    if got == 0 and len(self._phase) > MIN_POLLERS:
                        return  # the queue is empty: scale down
                except Exception as exc:  # AWS faults; anything else is a bug, logged with its traceback
                    self._fault(exc)
                    self._phase[me] = Phase.IDLE
                    await self._health.backoff_pause()
        finally:
            self._phase.pop(me, None)

    async def _ensure_info(self) -> QueueInfo:
        async with self._info_lock:
            if self._info is None:
                assert self._queue is not None
                info = await self._queue.info()
                self._info, self._region = info, region_of(info.arn, self._aws.region)
                log.info("route '%s': polling %s (visibility timeout %ds%s)", self.route.name, info.arn,
                         info.visibility_timeout, ", FIFO" if info.fifo else "", extra=self._extra)
                self._health.healthy()
            return self._info

    async def _cycle(self, me: asyncio.Task[None], info: QueueInfo) -> int:
        """Receive one batch (in the caller's slot), run it, acknowledge it. Returns messages received."""
        assert self._queue is not None
        queue = self._queue
        ask = min(MAX_BATCH, self._cfg.batch_size)
        first = await queue.receive(ask, self._wait)
        self._health.healthy()
        if not first:
            return 0
        if not self._dispatcher.route_enabled(self.route.name):  # paused during the long poll
            await self._hand_back({m["MessageId"]: m["ReceiptHandle"] for m in first}, why="(route paused)")
            return 0
        batch: dict[str, dict[str, Any]] = {}  # message id -> message (a duplicate keeps its last receipt)
        held: dict[str, str] = {}  # message id -> receipt handle, kept visible while the batch runs
        self._take(first, batch, held)
        if len(first) >= ask:
            self._spawn()  # full: scale up
        async with kept_visible(queue, held, info.visibility_timeout):
            await self._gather(batch, held)
            if self._gate.stopping:
                await self._hand_back(held)
                return len(batch)
            self._phase[me] = Phase.BUSY
            records = [to_record(m, arn=info.arn, region=self._region) for m in batch.values()]
            records, overflow, payload = fit_batch(records)
            if overflow:  # over Lambda's 6 MB payload: the rest goes back to the queue at once
                await self._hand_back({r["messageId"]: held.pop(r["messageId"]) for r in overflow},
                                      why="over the 6 MB payload limit of one batch")
            delete = await self._run_batch(records, info, payload, held)
        await self._acknowledge({mid: held[mid] for mid in delete})
        return len(batch)

    def _take(self, messages: list[dict[str, Any]], batch: dict[str, dict[str, Any]],
              held: dict[str, str]) -> None:
        self._received.inc(len(messages))
        for m in messages:
            batch[m["MessageId"]] = m
            held[m["MessageId"]] = m["ReceiptHandle"]

    async def _gather(self, batch: dict[str, dict[str, Any]], held: dict[str, str]) -> None:
        """With ``batch_window``: receive more until the window ends or ``batch_size`` is reached."""
        assert self._queue is not None
        size, window = self._cfg.batch_size, self._cfg.batch_window
        if window <= 0:
            return
        deadline = self._clock.monotonic() + window
        gathered = sum(_approx_size(m) for m in batch.values())
        while len(batch) < size and gathered < PAYLOAD_LIMIT and not self._gate.stopping:
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                break
            try:
                more = await self._queue.receive(min(MAX_BATCH, size - len(batch)),
                                                 min(self._wait, math.ceil(remaining)))
            except AWS_FAULTS as exc:
                self._fault(exc)  # run what was gathered; the next receive backs off if it persists
                break
            self._take(more, batch, held)
            gathered += sum(_approx_size(m) for m in more)

    async def _run_batch(self, records: list[dict[str, Any]], info: QueueInfo, payload: bytes,
                         held: dict[str, str]) -> list[str]:
        """Invoke the function with the records that pass the filters; the message ids to delete.
        ``payload`` is the event of all ``records`` (encoded once), re-encoded only if filters drop some.
        With ``bisect_on_error``, a batch whose invocation failed as a whole is bisected (``_bisect``)."""
        delete: list[str] = []
        if self._filter:
            kept: list[dict[str, Any]] = []
            for record in records:
                if self._filter.matches(sqs_filter_data(record)):
                    kept.append(record)
                else:
                    delete.append(record["messageId"])
            self.filtered += len(delete)
            self._filtered.inc(len(delete))
            if delete and kept:
                payload = batch_payload(kept)
            records = kept
        if not records:
            return delete
        inv = Invocation(function=self.route.function, payload=payload, source=TYPE, route=self.route.name,
                         trace_id=_trace(records))
        result = await self._dispatcher.invoke_in_slot(inv)
        verdict = batch_verdict(result, records, report_batch_item_failures=self._reported, fifo=info.fifo)
        if verdict.whole and self._cfg.bisect_on_error and len(records) > 1:
            await self._bisect(records, info, held, inv, result, verdict.why)
            return delete
        if verdict.why is not None:
            self._log_failed(inv, result, verdict.why, len(verdict.failed))
        delete.extend(r["messageId"] for r in records if r["messageId"] not in verdict.failed)
        return delete

    async def _bisect(self, records: list[dict[str, Any]], info: QueueInfo, held: dict[str, str],
                      inv: Invocation, result: Result, why: str | None) -> None:
        """``bisect_on_error``: the invocation of ``records`` failed as a whole. Its halves run next, then
        theirs, first half first, in this receive (no receive is counted, and the visibility of what is
        held stays extended), down to the messages that fail alone. Each part that succeeds is deleted at
        once; the messages that failed alone, or that the function reported failed, stay on the queue
        until their visibility timeout (then the redrive policy counts them). On a FIFO queue the later
        messages of a failed message's group are not run (they stay too, behind it). A throttle ends the
        bisection (the rest stays on the queue, as a throttled batch does); a stop hands the rest back."""
        parts = Bisection(records, enabled=True)
        whole = parts.next()
        assert whole is not None
        parts.failed(whole)
        self._bisections.inc()
        log.warning("route '%s': %s on a batch of %d messages; bisect_on_error: retrying its halves",
                    self.route.name, why, len(records), extra=self._log_extra(inv, result))
        blocked: set[str] = set()  # FIFO: groups with a failed message
        while (part := parts.next()) is not None:
            if self._gate.stopping:
                rest = part + parts.rest()
                await self._hand_back({r["messageId"]: held.pop(r["messageId"]) for r in rest},
                                      why="at shutdown (not yet run while bisecting a failed batch)")
                return
            if blocked:
                kept = [r for r in part if _group(r) not in blocked]
                if len(kept) < len(part):
                    log.info("route '%s': %d later messages of a failed message group stay on the queue "
                             "behind it (FIFO)", self.route.name, len(part) - len(kept), extra=self._extra)
                part = kept
                if not part:
                    continue
            inv = Invocation(function=self.route.function, payload=batch_payload(part), source=TYPE,
                             route=self.route.name, trace_id=_trace(part))
            result = await self._dispatcher.invoke_in_slot(inv)
            verdict = batch_verdict(result, part, report_batch_item_failures=self._reported, fifo=info.fifo)
            if result.throttle:
                self._log_failed(inv, result, f"{verdict.why}; bisection stopped",
                                 len(verdict.failed) + len(parts.rest()))
                return
            if verdict.whole and parts.failed(part):
                self._bisections.inc()
                log.info("route '%s': %s on %d messages; bisect_on_error: retrying its halves",
                         self.route.name, verdict.why, len(part), extra=self._log_extra(inv, result))
                continue
            if verdict.why is not None:
                self._log_failed(inv, result, verdict.why + (" (alone, after bisecting the batch)"
                                                             if verdict.whole else ""), len(verdict.failed))
                if info.fifo:
                    blocked.update(_group(r) for r in part if r["messageId"] in verdict.failed)
            done = {r["messageId"]: held.pop(r["messageId"]) for r in part
                    if r["messageId"] not in verdict.failed}
            await self._acknowledge(done)

    def _log_failed(self, inv: Invocation, result: Result, why: str, count: int) -> None:
        log.warning("route '%s': %s; %d messages stay on the queue until their visibility timeout",
                    self.route.name, why, count, extra=self._log_extra(inv, result))

    def _log_extra(self, inv: Invocation, result: Result) -> dict[str, Any]:
        return {**self._extra, "request_id": inv.request_id,
                "error_type": result.error_type.value if result.error_type else None}

    async def _acknowledge(self, handles: dict[str, str]) -> None:
        """Delete what succeeded. Shielded: a stop that cancels the poller does not cut a delete short."""
        if not handles:
            return
        assert self._queue is not None
        task = asyncio.create_task(self._queue.delete(handles), name=f"sqs-delete:{self.route.name}")
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)
        failed = await asyncio.shield(task)
        if failed:
            self._health.errors.inc()
            log.error("route '%s': could not delete %d processed messages (%s); they come back after "
                      "the visibility timeout and run again (at-least-once)", self.route.name, len(failed),
                      next(iter(failed.values())), extra={**self._extra, "error_type": "connection"})

    async def _hand_back(self, held: dict[str, str], why: str = "at shutdown") -> None:
        """Messages received but not started become visible again at once (stopping, or a batch cut)."""
        if not held or self._queue is None:
            return
        failed = await self._queue.change_visibility(held, 0)
        log.info("route '%s': handed back %d messages %s", self.route.name, len(held) - len(failed), why,
                 extra=self._extra)

    # --- faults ------------------------------------------------------------------------------------

    def _fault(self, exc: BaseException) -> None:
        message, error_type = describe_error(exc, what="queue",
                                             hint_not_found="check source.queue_url and aws.region")
        if is_not_found(exc):
            self._info = None  # read the attributes again once it exists
        unexpected = not isinstance(exc, AWS_FAULTS)
        self._health.fault(message, error_type.value, exc_info=exc if unexpected else None)


def _approx_size(message: dict[str, Any]) -> int:
    """About the bytes ``message`` adds to the event (its record is the message renamed, plus a few keys)."""
    return len(message.get("Body", "")) + 512 + sum(
        len(str(k)) + len(str(v)) for k, v in (message.get("MessageAttributes") or {}).items())


def _group(record: dict[str, Any]) -> str:
    group: str = record["attributes"].get("MessageGroupId", "")
    return group


def _trace(records: list[dict[str, Any]]) -> str | None:
    """The trace header the batch carries (``AWSTraceHeader``: the recursive loop count, ``lineage``)."""
    return lineage.deepest([r["attributes"].get(lineage.SQS_ATTRIBUTE) for r in records])
