"""A handler waiting 50 ms on I/O the way a synchronous database client does: a blocking wait."""

import time
from typing import Any


def handler(event: Any, context: Any) -> dict[str, Any]:
    time.sleep(0.05)
    return {"statusCode": 200, "body": "ok"}
