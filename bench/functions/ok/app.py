"""The trivial handler every benchmark invokes."""

from typing import Any


def handler(event: Any, context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "body": "ok"}
