"""The Destination protocol: where async invocation records go (on_success / on_failure)."""

from __future__ import annotations

from typing import Any, Protocol


class Destination(Protocol):
    """Delivers one destination record; raises (``DestinationError`` or another error) on failure.

    ``kind`` is the config ``type`` and the ``kind`` metric label: file, http, function, sqs, sns,
    eventbridge, s3, amqp.
    ``trace`` is the X-Ray trace header of the invocation the record is about: the destinations that
    lead to another invocation (function, sqs, amqp, http) pass it on, so that a loop's hops are counted
    (``router.lineage``).
    """

    kind: str

    async def send(self, record: dict[str, Any], trace: str | None = None) -> None: ...
