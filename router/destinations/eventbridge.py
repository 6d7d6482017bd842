"""``eventbridge`` destination: PutEvents with the destination record as the event's detail, as Lambda's
EventBridge destination sends it (captured from AWS in LocalStack's validated snapshots): ``source``
``lambda``, ``detail-type`` ``Lambda Function Invocation Result - Success`` or ``- Failure``, ``resources``
the event bus's ARN and the function's. An entry PutEvents answers as failed is a failed delivery (kept
and retried, as for every destination). A client is opened per record.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from router.aws import create_client, describe_error
from router.config.models import AwsConfig
from router.errors import DestinationError

SOURCE = "lambda"
DETAIL_TYPE = "Lambda Function Invocation Result - "


class EventBridgeDestination:
    kind = "eventbridge"

    def __init__(self, event_bus_arn: str, *, aws: AwsConfig) -> None:
        self.event_bus_arn = event_bus_arn
        self._aws = aws
        self._where = f"eventbridge destination {event_bus_arn}"

    def entry(self, record: dict[str, Any]) -> dict[str, Any]:
        """The PutEvents entry for ``record``."""
        ctx = record.get("requestContext") or {}
        outcome = "Success" if ctx.get("condition") == "Success" else "Failure"
        resources = [self.event_bus_arn]
        if ctx.get("functionArn"):
            resources.append(str(ctx["functionArn"]))
        return {"Source": SOURCE, "DetailType": DETAIL_TYPE + outcome, "Detail": json.dumps(record),
                "EventBusName": self.event_bus_arn, "Resources": resources}

    async def send(self, record: dict[str, Any], trace: str | None = None) -> None:
        """Raises ``DestinationError`` when EventBridge does not take the event (the engine retries).
        ``trace`` is not passed on (a loop through EventBridge is not counted)."""
        try:
            async with create_client("events", self._aws) as client:
                answer = await client.put_events(Entries=[self.entry(record)])
        except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
            message, _ = describe_error(exc, what="event bus",
                                        hint_not_found="check its event_bus_arn and aws.region")
            raise DestinationError(f"{self._where}: {message}") from exc
        if answer.get("FailedEntryCount"):
            failed = (answer.get("Entries") or [{}])[0]
            raise DestinationError(f"{self._where}: the event was not put ({failed.get('ErrorCode')}: "
                                   f"{failed.get('ErrorMessage')})")
