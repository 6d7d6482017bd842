"""One shard of a stream route: a reader that polls GetRecords and lanes that invoke the function.

The reader hands each record to the lane of its ordering key (``parallelization`` lanes, one by
default), so the records of one partition key (DynamoDB: item key) are invoked in order while up to N
batches of the shard run at once. The reader reads one page ahead: it asks for the next page as soon as
at most one page of records waits in the lanes (not yet in a batch), so GetRecords runs while the
previous page is invoked; at most two pages wait per shard (``read_ahead``). A lane gathers a batch
(``batch_size``, ``batch_window``, 6 MB), runs it through Lambda's failure handling (retries, bisection,
record age, partial batch responses, on-failure record), then marks its records done; the shard's
checkpoint advances to the highest sequence number at or below which everything is done. A checkpointer
task saves it in the state store, one write at a time: advances made during a write are saved together by
the next one, so a lane never waits for the database (a crash may repeat a few more batches; stop saves
the last one). A closed shard read to its end is checkpointed ``SHARD_END`` once all its records are
done, so its children may start.

Every checkpoint write carries the shard's lease token (``router.state.leases``): when the store refuses it
(another replica holds the lease now), or the route learns the lease was lost (``lose``), the worker
stops at once and writes nothing more; the new owner resumes after the last checkpoint written.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import uuid

from router.aws import error_code
from router.errors import StateStoreError
from router.invocation import PAYLOAD_LIMIT, Invocation, Result
from router.sources.stream.api import IteratorType, StreamApi, StreamRecord, seq_key
from router.sources.stream.batch import (
    AGE_EXCEEDED,
    ENVELOPE,
    RETRIES_EXHAUSTED,
    WINDOW_ENVELOPE,
    WINDOW_STATE_LIMIT,
    Attempt,
    BatchResponseError,
    CheckpointTracker,
    Window,
    bisect,
    failure_record,
    first_failed,
    lane_of,
    payload,
    record_bytes,
    state_size,
    window_payload,
    window_start,
    window_state,
)
from router.sources.stream.context import AWS_FAULTS, ShardContext
from router.state.checkpoints import SHARD_END
from router.state.leases import LeaseLost, LeaseToken

log = logging.getLogger("router.sources.stream")

PAUSED_CHECK = 1.0
"""Seconds between looks at a paused route's state by its shard readers (no GetRecords meanwhile)."""

MAX_PER_CALL = {"kinesis": 10000, "dynamodb_stream": 1000}
"""GetRecords' own maximum per call (DynamoDB Streams: 1,000; larger batches are gathered)."""
FINAL_SAVE_TIMEOUT = 10.0
"""How long a stopping shard waits for its last checkpoint write (a state store that hangs)."""
WINDOW_CHECK = 0.25
"""Seconds between looks, by a lane with an open tumbling window and no records, at whether the window is
over (its end passed and the shard read past it)."""
WINDOW_GRACE = 1.0
"""Seconds past a tumbling window's end (by this host's clock) before a caught-up read counts as having
read all of it: a record's arrival time is the stream service's clock, and a record is readable a moment
after it arrived."""


class _Abandoned(Exception):
    """Raised inside a lane when it stops before its batch is settled: nothing more is marked done."""


class ShardWorker:
    """Reads one shard and runs its batches; ``run`` ends at the shard's end or when the route stops."""

    def __init__(self, ctx: ShardContext, api: StreamApi, shard_id: str, iterator: str,
                 position: tuple[IteratorType, str | None, float | None], *,
                 lease: LeaseToken | None = None) -> None:
        self.ctx = ctx
        self.lease = lease  # fences every checkpoint write (None: unfenced)
        self.lost = False  # the lease was lost: nothing more is checkpointed
        self._stopping = False  # ``stop``: the route stops, or the shard is handed over
        self._gate = ctx.gate
        self.api = api
        self.shard_id = shard_id
        self._iterator = iterator
        self._position = position  # how ``iterator`` was obtained: for an iterator that expires unused
        self._tracker = CheckpointTracker()
        self._saved: str | None = None  # last checkpoint written
        self._unsaved: str | None = None  # checkpoint reached and not written yet
        self._advanced = asyncio.Event()  # wakes the checkpointer
        self._save_lock = asyncio.Lock()
        self._drained = asyncio.Event()
        self._drained.set()
        cfg = ctx.cfg
        # GetRecords' Limit: a batch for every lane. ``read_ahead``: records read and waiting in the lanes
        # (not in a batch yet) at most, the page being batched and the next one; the reader reads only
        # when a whole page fits, so a lane queue never fills.
        self.limit = min(MAX_PER_CALL.get(ctx.type, 1000), max(cfg.batch_size * cfg.parallelization, 500))
        self.read_ahead = 2 * self.limit
        self._waiting = 0  # records in the lane queues
        self._room = asyncio.Event()  # set when a page fits in ``read_ahead``
        self._room.set()
        self._lanes = [_Lane(self, i, self.read_ahead) for i in range(cfg.parallelization)]
        self._reader: asyncio.Task[None] | None = None
        self.ending_sequence: str | None = None  # set once the service lists the shard as closed
        self.finished = False  # read to its end and checkpointed SHARD_END
        # Tumbling windows: when the last GetRecords that found the shard caught up was asked (epoch
        # seconds; every record that arrived before is in the lanes), and whether the shard was read to
        # its end (a closed shard ends its lanes' windows)
        self.caught_up_at = -math.inf
        self.read_to_end = False
        self._extra = {**ctx.extra, "shard": shard_id}

    async def run(self) -> None:
        async with asyncio.TaskGroup() as outer:
            saver = outer.create_task(self._checkpointer(), name=f"stream-checkpoint:{self.shard_id}")
            try:
                async with asyncio.TaskGroup() as tg:
                    for lane in self._lanes:
                        lane.task = tg.create_task(lane.run(), name=f"stream-lane:{self.ctx.route_name}")
                    self._reader = tg.create_task(self._read(), name=f"stream-shard:{self.shard_id}")
            finally:
                saver.cancel()
        try:  # what the lanes finished last (stop, hand-over): saved before ``run`` returns
            async with asyncio.timeout(FINAL_SAVE_TIMEOUT):
                if not self.lost:
                    await self._flush()
        except TimeoutError:
            log.warning("route '%s': shard %s: the last checkpoint (%s) was not saved within %gs; a restart "
                        "repeats the records after the one saved before", self.ctx.route_name, self.shard_id,
                        self._unsaved, FINAL_SAVE_TIMEOUT, extra=self._extra)
        if self.finished:  # a closed shard's gauge goes away with it: the label set stays bounded
            with contextlib.suppress(KeyError):
                self.ctx.metrics.iterator_age.remove(self.ctx.route_name, self.shard_id)

    @property
    def stopping(self) -> bool:
        """The shard stops (``stop``, or the route stops): no new batch starts."""
        return self._stopping or self._gate.stopping

    def stop(self) -> None:
        """Stop reading; lanes not running a batch end now, the others after their batch."""
        self._stopping = True
        if self._reader is not None:
            self._reader.cancel()
        for lane in self._lanes:
            if not lane.busy and lane.task is not None:
                lane.task.cancel()

    def cancel(self) -> None:
        """Stop at once (shutdown timeout): unfinished batches are not checkpointed."""
        if self._reader is not None:
            self._reader.cancel()
        for lane in self._lanes:
            if lane.task is not None:
                lane.task.cancel()

    def lose(self) -> None:
        """The lease is lost: stop at once, checkpoint nothing more (batches running are abandoned)."""
        self.lost = True
        self.cancel()

    def _fenced(self, exc: LeaseLost) -> None:
        log.warning("route '%s': shard %s: a checkpoint write was refused: %s; the shard stops here",
                    self.ctx.route_name, self.shard_id, exc, extra=self._extra)
        self.lose()

    @property
    def busy_batches(self) -> int:
        return sum(lane.busy for lane in self._lanes)

    @property
    def waiting(self) -> int:
        """Records read and waiting in the lanes (not in a batch yet); at most ``read_ahead``."""
        return self._waiting

    # --- the reader ----------------------------------------------------------------------------------

    async def _read(self) -> None:
        ctx, gate = self.ctx, self._gate
        clock = ctx.clock
        limit = self.limit
        last_read: str | None = self._position[1]  # the checkpoint we start after, if any
        failures = 0
        next_call = 0.0
        while not gate.stopping:
            delay = next_call - clock.monotonic()
            if delay > 0 and not await gate.pause(delay):
                return
            await self._wait_room()
            if not ctx.dispatcher.route_enabled(ctx.route_name):  # paused: no GetRecords until resumed
                if not await gate.pause(PAUSED_CHECK):
                    return
                continue
            next_call = clock.monotonic() + ctx.min_call_interval
            asked_at = clock.time()
            try:
                page = await self.api.get_records(self._iterator, limit)
            except Exception as exc:
                if error_code(exc) == "ExpiredIteratorException":
                    log.info("route '%s': shard %s: the iterator expired; getting a new one",
                             ctx.route_name, self.shard_id, extra=self._extra)
                    with contextlib.suppress(*AWS_FAULTS):
                        await self._renew_iterator(last_read)
                        continue
                if not isinstance(exc, AWS_FAULTS):
                    raise
                failures += 1
                ctx.fault(exc, shard=self.shard_id)
                if not await ctx.health.backoff_pause(failures):
                    return
                continue
            failures = 0
            ctx.health.healthy()
            self._iterator_age(page.millis_behind, page.records)
            if page.records:
                last_read = page.records[-1].sequence_number
                await self._dispatch(page.records)
            if len(page.records) < limit and page.millis_behind in (0, None):
                self.caught_up_at = asked_at  # after the page's records are in their lanes
            if page.next_iterator is None or (not page.records and self._at_end(last_read)):
                await self._finish_shard()
                return
            self._iterator = page.next_iterator
            if not page.records:
                next_call = clock.monotonic() + ctx.poll_interval

    def _at_end(self, last_read: str | None) -> bool:
        """A closed shard read up to its ending sequence number (for services that keep handing out
        iterators there, as moto does, instead of ending with no NextShardIterator)."""
        end = self.ending_sequence
        return end is not None and last_read is not None and seq_key(last_read) >= seq_key(end)

    async def _renew_iterator(self, last_read: str | None) -> None:
        if last_read is not None:
            self._position = ("AFTER_SEQUENCE_NUMBER", last_read, None)
        kind, seq, ts = self._position
        self._iterator = await self.api.shard_iterator(self.shard_id, kind, sequence_number=seq, timestamp=ts)

    def _iterator_age(self, millis_behind: int | None, records: list[StreamRecord]) -> None:
        if millis_behind is not None:
            age = millis_behind / 1000
        elif records:
            age = max(0.0, self.ctx.clock.time() - records[-1].arrival)
        else:
            age = 0.0
        self.ctx.metrics.iterator_age.labels(self.ctx.route_name, self.shard_id).set(age)

    async def _dispatch(self, records: list[StreamRecord]) -> None:
        """Track every record; filtered-out ones are done at once, the others go to their lane."""
        ctx = self.ctx
        ctx.metrics.source_events.labels(route=ctx.route_name, type=ctx.type).inc(len(records))
        self._drained.clear()
        self._tracker.read([r.sequence_number for r in records])
        kept: list[StreamRecord] = records
        if ctx.filter:
            kept = []
            dropped: list[StreamRecord] = []
            for r in records:
                (kept if ctx.filter.matches(r.filter_data) else dropped).append(r)
            if dropped:
                ctx.filtered += len(dropped)
                ctx.metrics.source_events_filtered.labels(route=ctx.route_name, type=ctx.type).inc(
                    len(dropped))
                self.done([r.sequence_number for r in dropped])
        lanes = len(self._lanes)
        self._waiting += len(kept)
        if self._waiting > self.read_ahead - self.limit:
            self._room.clear()
        for record in kept:  # never waits: ``_wait_room`` made room for a whole page
            await self._lanes[lane_of(record.key, lanes)].queue.put(record)

    async def _wait_room(self) -> None:
        """Wait until the next page fits in ``read_ahead`` (the lanes have taken the page before it)."""
        while self._waiting > self.read_ahead - self.limit:
            self._room.clear()
            await self._room.wait()

    def took(self) -> None:
        """A lane took a record from its queue into a batch."""
        self._waiting -= 1
        if self._waiting <= self.read_ahead - self.limit:
            self._room.set()

    async def _finish_shard(self) -> None:
        """The shard is closed and read to its end: once every record is done, checkpoint SHARD_END."""
        ctx = self.ctx
        self.read_to_end = True  # the lanes' tumbling windows end (Lambda: a shard's end closes its window)
        await self._drained.wait()
        failures = 0
        async with self._save_lock:
            while True:
                if self.lost:
                    return
                try:
                    await ctx.store.save_checkpoint(ctx.route_name, self.shard_id, SHARD_END,
                                                    now=ctx.clock.time(), lease=self.lease)
                    break
                except LeaseLost as exc:
                    self._fenced(exc)
                    return
                except StateStoreError as exc:
                    failures += 1
                    ctx.store_fault(exc)
                    if not await ctx.health.backoff_pause(failures):
                        return
            self._saved = SHARD_END
        self.finished = True
        log.info("route '%s': shard %s is closed and processed to its end", ctx.route_name, self.shard_id,
                 extra=self._extra)
        for lane in self._lanes:
            if lane.task is not None:
                lane.task.cancel()

    # --- checkpoints ---------------------------------------------------------------------------------

    def done(self, sequence_numbers: list[str]) -> None:
        """Records settled (succeeded, filtered, or given up after their failure record): advance the
        checkpoint as far as everything below is done; the checkpointer saves it."""
        checkpoint = self._tracker.finish(sequence_numbers)
        if checkpoint is not None:
            self._unsaved = checkpoint
            self._advanced.set()
        if self._tracker.in_flight == 0:
            self._drained.set()  # ``_save`` never writes a checkpoint over SHARD_END

    async def _checkpointer(self) -> None:
        """Save the checkpoint whenever it advanced, one write at a time (cancelled by ``run``)."""
        while True:
            await self._advanced.wait()
            self._advanced.clear()
            await asyncio.shield(self._flush())

    async def _flush(self) -> None:
        """Save the checkpoint reached, if it is not saved yet (a failed write is retried by the next)."""
        checkpoint = self._unsaved
        if checkpoint is not None and await self._save(checkpoint) and self._unsaved == checkpoint:
            self._unsaved = None

    async def _save(self, checkpoint: str) -> bool:
        """Write ``checkpoint`` unless a later one (or SHARD_END) is written; False when the store
        failed (logged and counted)."""
        ctx = self.ctx
        async with self._save_lock:
            if self.lost:
                return True  # nothing more is written; the new owner resumes after the last one
            if self._saved is not None and (
                    self._saved == SHARD_END or seq_key(checkpoint) <= seq_key(self._saved)):
                return True  # a later one is saved already
            try:
                await ctx.store.save_checkpoint(ctx.route_name, self.shard_id, checkpoint,
                                                now=ctx.clock.time(), lease=self.lease)
            except LeaseLost as exc:
                self._fenced(exc)
                return True
            except StateStoreError as exc:  # a later save covers it; a restart repeats a little
                ctx.store_fault(exc)
                return False
            self._saved = checkpoint
            return True


class _Lane:
    """Batches of the records whose keys map to this lane, one batch at a time, in order."""

    def __init__(self, shard: ShardWorker, index: int, capacity: int) -> None:
        self.shard = shard
        self.index = index
        self.queue: asyncio.Queue[StreamRecord] = asyncio.Queue(maxsize=capacity)
        self._carry: collections.deque[StreamRecord] = collections.deque()
        self.busy = False
        self.task: asyncio.Task[None] | None = None
        self._failures = 0
        self._size = shard.ctx.cfg.tumbling_window  # seconds; 0: no tumbling windows
        self._window: Window | None = None  # the open tumbling window

    async def run(self) -> None:
        while not self.shard.stopping:
            batch = await self._gather()
            self.busy = True
            try:
                if self._size:
                    await self._windowed(batch)
                else:
                    await self._process(batch)
            except _Abandoned:
                return
            finally:
                self.busy = False

    async def _gather(self) -> list[StreamRecord]:
        """The next batch: at least one record, up to ``batch_size`` and 6 MB, waiting up to
        ``batch_window`` for more once the first record is there. With tumbling windows: the records of
        one window (a later window's record starts the next batch; 1 MB of the 6 is the state's), and
        none when a window is open and no record came within ``WINDOW_CHECK``."""
        cfg = self.shard.ctx.cfg
        clock = self.shard.ctx.clock
        batch: list[StreamRecord] = []
        size = ENVELOPE
        limit = PAYLOAD_LIMIT - (WINDOW_STATE_LIMIT + WINDOW_ENVELOPE if self._size else 0)
        first_window = 0.0
        deadline: float | None = None
        while len(batch) < cfg.batch_size:
            if self._carry:
                record = self._carry.popleft()
            else:
                try:
                    record = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    if deadline is None and self._window is not None:
                        try:  # or look whether the open window is over
                            async with asyncio.timeout(WINDOW_CHECK):
                                record = await self.queue.get()
                        except TimeoutError:
                            return batch
                    elif deadline is None:
                        record = await self.queue.get()
                    else:
                        remaining = deadline - clock.monotonic()
                        if remaining <= 0:
                            break
                        try:
                            async with asyncio.timeout(remaining):
                                record = await self.queue.get()
                        except TimeoutError:
                            break
                self.shard.took()
            if self._size:
                start = window_start(record.arrival, self._size)
                if batch and start > first_window:
                    self._carry.appendleft(record)  # a later window's: starts the next batch
                    break
                if not batch:
                    first_window = start
            if deadline is None:
                deadline = clock.monotonic() + cfg.batch_window
            if batch and size + record_bytes(record) > limit:
                self._carry.appendleft(record)  # starts the next batch
                break
            batch.append(record)
            size += record_bytes(record)
        return batch

    async def _windowed(self, records: list[StreamRecord]) -> None:
        """One batch in its tumbling window (Lambda's stateful stream processing): a record of a later
        window than the open one ends that one first (its final invocation); a state over 1 MB ends the
        window early (a final invocation with ``isWindowTerminatedEarly``; the rest of the window starts
        from a fresh state). No records: the open window's final invocation once it is over."""
        window = self._window
        if not records:
            if window is not None and self._window_over(window):
                await self._final(window)
            return
        start = window_start(records[0].arrival, self._size)
        if window is not None and start > window.start:
            await self._final(window)
            window = None
        if window is None:
            window = self._window = Window(start, start + self._size)
        await self._process(records)
        if state_size(window.state) > WINDOW_STATE_LIMIT:
            await self._final(window, early=True)
            self._window = Window(window.start, window.end)

    def _window_over(self, window: Window) -> bool:
        """Whether ``window`` is over: no record waits for this lane, and the shard was read past the
        window's end (a GetRecords asked ``WINDOW_GRACE`` after it found the shard caught up) or to its
        own end."""
        shard = self.shard
        return (not self._carry and self.queue.empty()
                and (shard.read_to_end or shard.caught_up_at >= window.end + WINDOW_GRACE))

    async def _final(self, window: Window, *, early: bool = False) -> None:
        """The window's final invocation (no records, its state), retried until it succeeds: as on Lambda,
        the shard waits for it (no retry limit, no record age). Then the window's records are done."""
        ctx, shard = self.shard.ctx, self.shard
        event = window_payload([], window, shard_id=shard.shard_id, stream_arn=ctx.cfg.stream_arn, final=True,
                               early=early)
        failures = 0
        while True:
            inv, result = await self._invoke(event, failures + 1)
            if result.ok:
                break
            failures += 1
            log.warning("route '%s': shard %s: the final invocation of the tumbling window %s failed (%s); "
                        "retrying, the shard waits for it", ctx.route_name, shard.shard_id,
                        window.span(), result.outcome.value,
                        extra={**shard._extra, "request_id": inv.request_id, "attempt": inv.attempt})
            if not await ctx.gate.pause(ctx.retry_delay(failures)):
                raise _Abandoned
        self._failures = 0
        if self._window is window:
            self._window = None
        shard.done(window.settled)

    async def _invoke(self, event: bytes, attempt: int) -> tuple[Invocation, Result]:
        """Invoke the function with ``event`` in a concurrency slot; ``_Abandoned`` when the shard stops
        first (also while it waited for the slot: nothing new starts then)."""
        ctx, shard = self.shard.ctx, self.shard
        if shard.stopping:
            raise _Abandoned
        inv = Invocation(function=ctx.function, payload=event, source=ctx.type, route=ctx.route_name,
                         attempt=attempt)
        async with ctx.dispatcher.slot(ctx.function, ctx.type, ctx.route_name):
            if shard.stopping:
                raise _Abandoned
            return inv, await ctx.dispatcher.invoke_in_slot(inv)

    def _settle(self, sequence_numbers: list[str]) -> None:
        """Records this lane is through with: done now, or, in a tumbling window, when it ends."""
        if self._window is not None:
            self._window.settled += sequence_numbers
        else:
            self.shard.done(sequence_numbers)

    def _event(self, records: list[StreamRecord]) -> bytes:
        window = self._window
        if window is None:
            return payload(records)
        return window_payload(records, window, shard_id=self.shard.shard_id,
                              stream_arn=self.shard.ctx.cfg.stream_arn)

    async def _process(self, records: list[StreamRecord]) -> None:
        """Lambda's failure handling for one batch; its records are done when this returns."""
        ctx = self.shard.ctx
        cfg = ctx.cfg
        work: collections.deque[Attempt] = collections.deque([Attempt(records)])
        while work:
            attempt = work.popleft()
            if cfg.max_record_age != -1:
                now = ctx.clock.time()
                old = [r for r in attempt.records if now - r.arrival > cfg.max_record_age]
                if old:
                    young = [r for r in attempt.records if now - r.arrival <= cfg.max_record_age]
                    await self._give_up(attempt.part(old), AGE_EXCEEDED)
                    if not young:
                        continue
                    attempt = attempt.part(young)
            inv, result = await self._invoke(self._event(attempt.records), attempt.invokes + 1)
            attempt.invokes += 1
            attempt.result, attempt.request_id = result, inv.request_id
            if result.ok:
                window = self._window
                try:
                    state = None if window is None else window_state(result)
                    index = first_failed(result, attempt.records) if cfg.report_batch_item_failures else None
                except BatchResponseError as exc:
                    self._log_failure(inv, attempt, f"invalid response: {exc}; the whole batch failed")
                    await self._function_failed(attempt, work)
                    continue
                if window is not None:  # what the function made of the records it took: all, or those
                    window.state = state  # before the one it reported failed
                if index is None:
                    self._failures = 0
                    self._settle([r.sequence_number for r in attempt.records])
                    continue
                if index:
                    self._settle([r.sequence_number for r in attempt.records[:index]])
                rest = attempt.part(attempt.records[index:])
                self._log_failure(inv, rest, f"the function reported sequence number "
                                             f"{rest.records[0].sequence_number} failed; retrying from it")
                await self._retry_or_give_up(rest, work)
            elif result.throttle:  # not the function's fault: retry until the records age out
                self._log_failure(inv, attempt, f"the invocation failed ({result.outcome.value}) before the "
                                                "function ran; retrying")
                self._failures += 1
                if not await ctx.gate.pause(ctx.retry_delay(self._failures)):
                    raise _Abandoned
                work.appendleft(attempt)
            else:
                self._log_failure(inv, attempt, f"the function failed ({result.outcome.value})")
                await self._function_failed(attempt, work)

    async def _function_failed(self, attempt: Attempt, work: collections.deque[Attempt]) -> None:
        if self.shard.ctx.cfg.bisect_on_error and len(attempt.records) > 1:
            first, second = bisect(attempt.records)  # does not use the retry quota (Lambda's rule)
            self.shard.ctx.metrics.batch_bisections.labels(route=self.shard.ctx.route_name).inc()
            work.appendleft(attempt.part(second))
            work.appendleft(attempt.part(first))
            return
        await self._retry_or_give_up(attempt, work)

    async def _retry_or_give_up(self, attempt: Attempt, work: collections.deque[Attempt]) -> None:
        ctx = self.shard.ctx
        limit = ctx.cfg.max_retry_attempts
        if limit != -1 and attempt.retries >= limit:
            await self._give_up(attempt, RETRIES_EXHAUSTED)
            return
        attempt.retries += 1
        self._failures += 1
        if not await ctx.gate.pause(ctx.retry_delay(self._failures)):
            raise _Abandoned
        work.appendleft(attempt)

    async def _give_up(self, attempt: Attempt, condition: str) -> None:
        """Send the failure record (until delivered), then the records are done: the shard moves on."""
        ctx, shard = self.shard.ctx, self.shard
        records = attempt.records
        discarded = ctx.metrics.stream_records_discarded.labels(route=ctx.route_name, condition=condition)
        discarded.inc(len(records))
        record = failure_record(
            attempt, condition=condition, function_arn=ctx.function_arn, shard_id=shard.shard_id,
            stream_arn=ctx.cfg.stream_arn, batch_info_key=ctx.batch_info_key, request_id=str(uuid.uuid4()),
            now=ctx.clock.time(),
        )
        where = (f"route '{ctx.route_name}': shard {shard.shard_id}: {len(records)} records "
                 f"{records[0].sequence_number}..{records[-1].sequence_number} given up ({condition}, "
                 f"{attempt.invokes} invocations)")
        if ctx.failures is not None:  # kept for `router failures`; a redrive invokes the batch's event (in a
            # tumbling window: with the window's keys and state, as the function was given it)
            await ctx.failures.keep(
                function=ctx.function, route=ctx.route_name, source=ctx.type,
                request_id=attempt.request_id or "", condition=condition, record=record,
                payload=self._event(records), attempts=attempt.invokes, result=attempt.result)
        if ctx.on_failure is None:
            log.error("%s; no source.on_failure destination: they are skipped", where,
                      extra={**shard._extra, "request_id": attempt.request_id})
        else:
            log.warning("%s; sending the failure record to source.on_failure (%s)", where,
                        ctx.on_failure.kind, extra={**shard._extra, "request_id": attempt.request_id})
            if not await ctx.deliver_failure(record, records):
                raise _Abandoned  # stopping: not checkpointed, so the records come back after a restart
        self._failures = 0
        self._settle([r.sequence_number for r in records])

    def _log_failure(self, inv: Invocation, attempt: Attempt, why: str) -> None:
        ctx = self.shard.ctx
        result = attempt.result
        log.warning("route '%s': shard %s: batch of %d records from %s: %s", ctx.route_name,
                    self.shard.shard_id, len(attempt.records), attempt.records[0].sequence_number, why,
                    extra={**self.shard._extra, "request_id": inv.request_id, "attempt": inv.attempt,
                           "error_type": result.error_type.value if result and result.error_type else None})
