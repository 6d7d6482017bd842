"""The queue of async invocations as the async worker sees it: publish, take deliveries, settle each one.

Two transports implement it (``router/queues/``): the SQL state store (``queues.sql``, the default) and
RabbitMQ (``queues.amqp``, ``async_queue: amqp://``). The worker (``core/async_worker.py``) runs attempts,
retries and destinations the same way over either: it waits for a delivery without holding a slot, takes
as many as it holds slots for, and settles each delivery with exactly one of ``complete`` (done: its
destination record was sent, kept or dropped), ``retry_later`` (a new attempt after ``delay``) or
``release`` (handed back untouched, e.g. on shutdown).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class AsyncEvent(Protocol):
    """One async event as a transport carries it."""

    @property
    def payload(self) -> bytes: ...
    @property
    def source(self) -> str: ...
    @property
    def route(self) -> str | None: ...
    @property
    def qualifier(self) -> str | None:
        """The version or alias the event was invoked with (None: $LATEST)."""
        ...
    @property
    def request_id(self) -> str: ...
    @property
    def attempts(self) -> int:
        """Attempts already made (0 when new)."""
        ...
    @property
    def enqueued_at(self) -> float:
        """Epoch seconds of first acceptance (for ``max_event_age``)."""
        ...
    @property
    def trace(self) -> str | None:
        """The X-Ray trace header the event came with (``router.lineage``: a chain's hop count)."""
        ...


class Delivery(Protocol):
    """One event taken from the queue by this worker, until it is settled."""

    @property
    def event(self) -> AsyncEvent: ...

    async def complete(self) -> None:
        """The event is done: remove it from the queue."""
        ...

    async def retry_later(self, delay: float, attempts: int) -> None:
        """Deliver the event again after ``delay`` seconds with ``attempts`` made. Raises
        ``Unavailable`` when the queue cannot take the retry (the event is then not settled)."""
        ...

    async def release(self) -> None:
        """Hand the event back untouched (attempts unchanged) for another delivery."""
        ...


class Deliveries(Protocol):
    """The deliveries of one function's queue, taken by its worker."""

    batch: int
    """Most deliveries taken at once (the worker holds that many slots before taking)."""

    async def wait(self) -> None:
        """Return once a delivery may be there to take (holding nothing meanwhile)."""
        ...

    async def take(self, n: int) -> Sequence[Delivery]:
        """Up to ``n`` deliveries now (maybe none). Cancel-safe: what is taken then is handed back."""
        ...

    async def close(self) -> None:
        """Stop taking; hand back what arrived but was not taken. Taken deliveries stay the taker's."""
        ...


class AsyncQueue(Protocol):
    """A transport of async invocations: a queue per function."""

    kind: str
    """The transport's name in task names and logs: ``sql`` or ``amqp``."""

    async def publish(
        self, function: str, *, request_id: str, payload: bytes, source: str, route: str | None, now: float,
        trace: str | None = None,
        qualifier: str | None = None,
    ) -> None:
        """Accept a new event for ``function``; durable when this returns. Raises ``Unavailable`` when it
        was not accepted. ``trace``: the X-Ray trace header it came with, kept with it."""
        ...

    async def deliveries(self, function: str, *, prefetch: int, lease: float) -> Deliveries:
        """Start taking ``function``'s events: at most ``prefetch`` held at once by this replica, each for
        at most ``lease`` seconds before another replica may take it (where the transport has leases)."""
        ...

    async def depth(self) -> dict[str, int]:
        """Events waiting per function (functions with none may be left out)."""
        ...

    async def ping(self) -> bool:
        """Whether the transport is reachable now (``/readyz``)."""
        ...

    async def run(self) -> None:
        """Connect, retrying while the transport is away; returns once connected (takers wait for it)."""
        ...

    async def close(self) -> None:
        """Disconnect; what was taken and not settled goes back to the queue."""
        ...
