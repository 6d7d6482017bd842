"""What the HTTP handlers need: the config, a dispatcher, metrics and readiness, behind typed app keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from router.config.diff import ReloadOutcome
from router.config.models import RouterConfig
from router.core.controls import Controls
from router.core.dispatcher import Dispatch
from router.core.history import HistoryRecorder
from router.core.versions import Versions
from router.metrics import Metrics
from router.readiness import Readiness


@dataclass(slots=True)
class HttpContext:
    """Everything the handlers of the aiohttp app need; one per app."""

    config: RouterConfig
    dispatcher: Dispatch
    metrics: Metrics
    readiness: Readiness = field(default_factory=Readiness)
    reload: Callable[[], Awaitable[ReloadOutcome]] | None = None  # the running router's, for /admin/reload
    controls: Controls | None = None  # run-time controls (pause, reserved concurrency): the control API
    history: HistoryRecorder | None = None  # invocation history and the status API (None: off)
    versions: Versions | None = None  # published versions and aliases (PublishVersion, ListAliases, ...)
    modified: dict[str, float] = field(default_factory=dict)  # function -> when a reload changed it (epoch s)


CTX = web.AppKey("router_http_context", HttpContext)
