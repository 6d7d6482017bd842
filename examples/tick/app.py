"""A scheduled handler: receives the EventBridge Scheduled Event, or the route's constant input."""

import logging

logger = logging.getLogger()
logger.setLevel(logging.INFO)


def handler(event, context):
    logger.info("tick at %s (%s)", event.get("time"), event.get("detail-type", "custom input"))
    return {"ok": True, "remaining_ms": context.get_remaining_time_in_millis()}
