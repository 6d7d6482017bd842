"""One SQS queue through an aiobotocore client: attributes, receive, and batched delete / visibility.

Batch calls are split into chunks of 10 (the SQS limit); entries SQS reports failed are retried a few
times with a short backoff, and what still failed is returned for the caller to log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from router.clock import Clock, SystemClock
from router.config.checks import is_fifo
from router.config.models import SQS_MAX_WAIT

log = logging.getLogger("router.sources.sqs")

MAX_BATCH = 10  # entries per DeleteMessageBatch / ChangeMessageVisibilityBatch / ReceiveMessage
ATTEMPTS = 4
RETRY_BASE = 0.2  # seconds: 0.2, 0.4, 0.8 between attempts


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """What the source reads once from GetQueueAttributes."""

    arn: str
    visibility_timeout: int
    fifo: bool


class SqsQueue:
    """``client`` is an open aiobotocore SQS client; ``url`` the queue URL; ``clock`` sleeps between
    retries of a delete or visibility change."""

    def __init__(self, client: Any, url: str, *, clock: Clock | None = None) -> None:
        self.client = client
        self.url = url
        self._clock = clock or SystemClock()

    async def info(self) -> QueueInfo:
        """QueueArn and VisibilityTimeout. Raises botocore errors (queue not found, access denied, ...)."""
        resp = await self.client.get_queue_attributes(
            QueueUrl=self.url, AttributeNames=["QueueArn", "VisibilityTimeout"]
        )
        attrs = resp.get("Attributes", {})
        return QueueInfo(
            arn=attrs["QueueArn"],
            visibility_timeout=int(attrs.get("VisibilityTimeout", 30)),
            fifo=is_fifo(self.url),
        )

    async def receive(self, max_messages: int, wait_seconds: int) -> list[dict[str, Any]]:
        """One ReceiveMessage with every system and message attribute. Raises botocore errors."""
        resp = await self.client.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=max(1, min(MAX_BATCH, max_messages)),
            WaitTimeSeconds=max(0, min(SQS_MAX_WAIT, wait_seconds)),
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = resp.get("Messages") or []
        return messages

    async def delete(self, handles: Mapping[str, str]) -> dict[str, str]:
        """Delete the messages ``{message_id: receipt_handle}``; returns ``{message_id: why}`` of those
        still not deleted after the retries (they come back after their visibility timeout)."""
        return await self._batched(handles, self._delete_chunk)

    async def change_visibility(self, handles: Mapping[str, str], seconds: int) -> dict[str, str]:
        """Set the visibility timeout of ``{message_id: receipt_handle}`` to ``seconds`` from now;
        returns ``{message_id: why}`` of the entries that failed."""

        async def chunk(entries: list[dict[str, Any]]) -> dict[str, Any]:
            resp: dict[str, Any] = await self.client.change_message_visibility_batch(
                QueueUrl=self.url,
                Entries=[{**e, "VisibilityTimeout": seconds} for e in entries],
            )
            return resp

        return await self._batched(handles, chunk)

    async def _delete_chunk(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        resp: dict[str, Any] = await self.client.delete_message_batch(QueueUrl=self.url, Entries=entries)
        return resp

    async def _batched(
        self,
        handles: Mapping[str, str],
        call: Callable[[list[dict[str, Any]]], Awaitable[dict[str, Any]]],
    ) -> dict[str, str]:
        items = list(handles.items())
        if not items:
            return {}
        if len(items) <= MAX_BATCH:  # one call (a batch of up to 10): no task to gather
            return await self._chunk_with_retries(items, call)
        chunks = [items[i:i + MAX_BATCH] for i in range(0, len(items), MAX_BATCH)]
        results = await asyncio.gather(*(self._chunk_with_retries(c, call) for c in chunks))
        out: dict[str, str] = {}
        for failed in results:
            out.update(failed)
        return out

    async def _chunk_with_retries(
        self,
        items: list[tuple[str, str]],
        call: Callable[[list[dict[str, Any]]], Awaitable[dict[str, Any]]],
    ) -> dict[str, str]:
        pending = dict(items)  # message id -> receipt handle
        permanent: dict[str, str] = {}  # entries SQS refused for good (SenderFault)
        failed: dict[str, str] = {}  # entries of the last attempt worth another try
        for attempt in range(ATTEMPTS):
            if attempt:
                await self._clock.sleep(RETRY_BASE * 2 ** (attempt - 1))
            ids = list(pending)
            entries = [{"Id": str(i), "ReceiptHandle": pending[mid]} for i, mid in enumerate(ids)]
            try:
                resp = await call(entries)
            except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
                failed = {mid: f"{type(exc).__name__}: {exc}" for mid in ids}
                continue
            failed = {}
            for entry in resp.get("Failed") or []:
                with contextlib.suppress(ValueError, IndexError, KeyError):
                    mid = ids[int(entry["Id"])]
                    why = f"{entry.get('Code', 'error')}: {entry.get('Message', '')}".strip()
                    (permanent if entry.get("SenderFault", False) else failed)[mid] = why
            if not failed:
                break
            pending = {mid: pending[mid] for mid in failed}
        return {**permanent, **failed}


@contextlib.asynccontextmanager
async def kept_visible(queue: SqsQueue, held: Mapping[str, str], seconds: int) -> AsyncIterator[None]:
    """For the block, extend the visibility of the messages in ``held`` (``{message_id: receipt}``,
    which may grow meanwhile) by ``seconds`` (the queue's visibility timeout) every two thirds of it,
    so a slow batch is not delivered twice.
    The extending task starts only when the first extension is due (most batches end long before: a timer
    costs less than a task per batch); it is cancelled and awaited when the block ends."""
    if seconds < 1:
        yield
        return

    async def extend() -> None:
        while True:
            if held:
                failed = await queue.change_visibility(dict(held), seconds)
                if failed:
                    log.warning("sqs: could not extend the visibility of %d messages (%s)",
                                len(failed), next(iter(failed.values())))
            await asyncio.sleep(seconds * 2 / 3)

    task: asyncio.Task[None] | None = None

    def start() -> None:
        nonlocal task
        task = asyncio.create_task(extend(), name="sqs-visibility")

    timer = asyncio.get_running_loop().call_later(seconds * 2 / 3, start)
    try:
        yield
    finally:
        timer.cancel()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # an outer cancellation still propagates
