"""The contract of a source the app runs (schedule, sqs, kinesis, dynamodb_stream, amqp): run, then stop
gracefully.

A poller turns what it receives into invocations and owns what acknowledging means (SQS: delete or leave
to the visibility timeout; Kinesis: advance the checkpoint; AMQP: ack or reject). It takes capacity
before work: ``async with dispatcher.slot(function, type)`` before each receive, then
``dispatcher.invoke_in_slot(inv)`` with the batch event, then acknowledges by the result. The schedule
source fires its routes' ticks under the same run/stop contract. Their shared lifecycle (health,
backoff, stop) is ``router.sources.lifecycle``.
"""

from __future__ import annotations

from typing import Protocol


class Poller(Protocol):
    """One running source. ``run`` is owned by the app's TaskGroup; ``stop`` is the graceful half.

    ``run`` keeps going through errors of its source (logs, counts ``router_source_errors_total``,
    marks the route not ready in ``/readyz``, backs off, recovers by itself) until ``stop`` asks it to end.
    ``stop(timeout)`` stops receiving, lets in-flight batches finish within ``timeout``, hands back what
    has not started (SQS: visibility 0; AMQP: nack with requeue), then returns once ``run`` has ended.
    """

    async def run(self) -> None: ...

    async def stop(self, timeout: float) -> None: ...  # noqa: ASYNC109 (the shutdown contract)
