"""Support for the schedule source tests: a dispatcher double that records what a schedule sends, and
routes built from config."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from router.config.models import AwsConfig, RouteConfig, RouterConfig
from router.errors import StateStoreError
from router.invocation import Invocation, Result

AWS = AwsConfig(region="eu-central-1", account_id="123456789012")


class Dispatcher:
    """Just the calls a schedule makes; ``hold`` keeps sync runs busy until set."""

    def __init__(self) -> None:
        self.invoked: list[Invocation] = []
        self.submitted: list[Invocation] = []
        self.hold: asyncio.Event | None = None
        self.result: Callable[[Invocation], Result] = lambda inv: Result(payload=b"null")
        self.fail_submit = False
        self.changed = asyncio.Condition()
        self.paused_routes: set[str] = set()
        self.held_back: list[tuple[str, str]] = []

    def has_function(self, name: str) -> bool:
        return True

    def route_enabled(self, route: str) -> bool:
        return route not in self.paused_routes

    def held(self, what: str, name: str) -> None:
        self.held_back.append((what, name))

    def function_names(self) -> list[str]:
        return ["job"]

    def arn(self, name: str) -> str:
        return f"arn:aws:lambda:eu-central-1:123456789012:function:{name}"

    async def _note(self, bucket: list[Invocation], inv: Invocation) -> None:
        async with self.changed:
            bucket.append(inv)
            self.changed.notify_all()

    async def invoke(self, inv: Invocation) -> Result:
        raise AssertionError("schedules must use invoke_waiting")

    async def invoke_waiting(self, inv: Invocation) -> Result:
        await self._note(self.invoked, inv)
        if self.hold is not None:
            await self.hold.wait()
        return self.result(inv)

    async def submit(self, inv: Invocation) -> str:
        if self.fail_submit:
            raise StateStoreError("state store: database is locked")
        await self._note(self.submitted, inv)
        return inv.request_id


def routes(*items: dict[str, Any]) -> list[RouteConfig]:
    return RouterConfig.model_validate({
        "functions": {"job": {"http": {"url": "http://127.0.0.1:9/"}}},
        "routes": [{"function": "job", **i} for i in items],
    }).routes


async def dispatched(cond: Callable[[], bool], d: Dispatcher, deadline: float = 10.0) -> None:
    """Wait until ``cond`` holds after a run reached ``d`` (no polling: ``d`` notifies)."""
    async with asyncio.timeout(deadline), d.changed:
        await d.changed.wait_for(cond)
