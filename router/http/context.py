"""What the HTTP handlers need: the config, a dispatcher, metrics and readiness, behind typed app keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from router.config.models import RouterConfig
from router.core.invocation import Invocation, Result
from router.http.readiness import Readiness
from router.metrics import Metrics


class DispatcherLike(Protocol):
    """The part of ``router.core.dispatcher.Dispatcher`` that sources and the HTTP layer use."""

    def has_function(self, name: str) -> bool: ...

    def function_names(self) -> list[str]: ...

    def arn(self, name: str) -> str: ...

    async def invoke(self, inv: Invocation) -> Result:
        """Sync path: raises FunctionNotFound, or Throttled at once at the concurrency cap."""
        ...

    async def invoke_waiting(self, inv: Invocation) -> Result:
        """Sync path that waits for a concurrency slot instead of raising Throttled."""
        ...

    async def submit(self, inv: Invocation) -> str:
        """Async path: persists the event (raises FunctionNotFound, PayloadTooLarge), returns its id."""
        ...


@dataclass(slots=True)
class HttpContext:
    """Everything the handlers of the aiohttp app need; one per app."""

    config: RouterConfig
    dispatcher: DispatcherLike
    metrics: Metrics
    readiness: Readiness = field(default_factory=Readiness)


CTX = web.AppKey("router_http_context", HttpContext)
