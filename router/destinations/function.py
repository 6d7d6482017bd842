"""``function`` destination: the record becomes the event of a new async invocation of another function."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from router import compact_json
from router.invocation import Invocation

Submit = Callable[[Invocation], Awaitable[str]]
"""``Dispatcher.submit``: persists an async invocation, returns its request id."""


class FunctionDestination:
    kind = "function"

    def __init__(self, function: str, submit: Submit) -> None:
        self.function = function
        self._submit = submit

    async def send(self, record: dict[str, Any], trace: str | None = None) -> None:
        payload = compact_json.dumpb(record)
        await self._submit(Invocation(function=self.function, payload=payload, source="function",
                                      invocation_type="async", trace_id=trace))
