"""Readiness for ``/readyz``: started, not shutting down, named checks and flags all fine."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from router.redaction import redact

log = logging.getLogger("router.readiness")

Check = Callable[[], Awaitable[object]]
"""An async check: ready unless it raises or returns ``False``."""


class Readiness:
    """Collects what ``/readyz`` reports.

    Not ready until ``set_started()``; not ready from ``begin_shutdown()`` on, at once and for good (the
    router may still serve for ``server.drain_delay`` then, while load balancers take it out).
    ``add_check(name, fn)`` registers an async check (e.g. ``"state_store"`` pinging the store) that is
    run on every ``/readyz`` with a timeout; ``set_flag(name, ok, reason)`` records a state pushed by a
    component (e.g. ``"route:uploads"`` while a source reconnects).
    """

    def __init__(self, check_timeout: float = 2.0) -> None:
        self._check_timeout = check_timeout
        self._started = False
        self._shutting_down = False
        self._shutdown_reason = "shutting down"
        self._checks: dict[str, Check] = {}
        self._flags: dict[str, str | None] = {}  # name -> None when ok, else the reason

    def set_started(self) -> None:
        self._started = True

    def begin_shutdown(self, reason: str = "shutting down") -> None:
        """Not ready from now on; ``reason`` (it should start with "shutting down") is what /readyz says."""
        self._shutting_down = True
        self._shutdown_reason = reason

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def add_check(self, name: str, check: Check) -> None:
        self._checks[name] = check

    def set_flag(self, name: str, ok: bool, reason: str = "") -> None:
        self._flags[name] = None if ok else (reason or "not ready")

    def clear_flag(self, name: str) -> None:
        self._flags.pop(name, None)

    async def reasons(self) -> list[str]:
        """Why the router is not ready; an empty list means ready."""
        if self._shutting_down:
            return [self._shutdown_reason]
        out: list[str] = []
        if not self._started:
            out.append("starting")
        out.extend(f"{name}: {reason}" for name, reason in self._flags.items() if reason is not None)
        if self._checks:
            names = list(self._checks)
            results = await asyncio.gather(*(self._run(name) for name in names))
            out.extend(r for r in results if r is not None)
        return [redact(reason) for reason in out]  # /readyz answers anyone: no secret in a reason

    async def _run(self, name: str) -> str | None:
        try:
            async with asyncio.timeout(self._check_timeout):
                ok = await self._checks[name]()
        except TimeoutError:
            return f"{name}: no answer within {self._check_timeout:g}s"
        except Exception as exc:  # a failing check is a reason, not a 500
            log.warning("readiness check failed", extra={"event": name, "error_type": "connection"})
            return f"{name}: {type(exc).__name__}"
        return None if ok is not False else f"{name}: not ready"
