"""File descriptors: the open-file limit raised at start, the connection cap sized below it, and
descriptor faults (EMFILE...) logged once per interval instead of once per failed attempt.

Under systemd's default soft limit (1,024) a thousand held connections used to exhaust the router's
descriptors: accept() failed with EMFILE, a traceback was logged per attempt and ``/livez`` stopped
answering. The soft limit is raised to the hard one where the process may (it always may, up to the
hard limit), and client connections get at most half of what is left, so environments, the state
store and brokers keep the other half.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

from router.metrics import Metrics

log = logging.getLogger("router.http")

NR_OPEN_DEFAULT = 1 << 20
"""Linux's default ``fs.nr_open``: the highest soft limit asked for when the hard limit is unlimited."""
FAULT_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
FAULT_LOG_INTERVAL = 10.0


def raise_nofile_limit() -> tuple[int, int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit where allowed; returns (before, now, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else NR_OPEN_DEFAULT
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):  # e.g. above fs.nr_open: keep what we have
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft, now, hard


def connection_cap(configured: int, nofile: int) -> int:
    """``server.max_connections``, lowered to half the open-file limit (at least 1)."""
    if nofile == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, nofile // 2))


class FaultLog:
    """An event-loop exception handler: descriptor and memory faults (EMFILE, ENFILE, ENOBUFS, ENOMEM,
    as a failing accept() reports them) are counted, and logged once per ``interval`` with how many
    there were, without a traceback; anything else goes to the loop's default handler."""

    def __init__(self, metrics: Metrics, *, interval: float = FAULT_LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._metrics = metrics
        self._interval = interval
        self._clock = clock
        self._last: float | None = None
        self._unlogged = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if not isinstance(exc, OSError) or exc.errno not in FAULT_ERRNOS:
            loop.default_exception_handler(context)
            return
        name = errno.errorcode.get(exc.errno or 0, "OSError")
        self._metrics.http_accept_errors.labels(name).inc()
        self._unlogged += 1
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            return
        self._last = now
        count, self._unlogged = self._unlogged, 0
        what = str(context.get("message") or "socket error").split("\n", 1)[0]
        log.error(
            "%s: %s (%s), %d time(s) since the last such line; new connections are being refused. The "
            "open-file limit is %s: raise it (ulimit -n, systemd LimitNOFILE=, docker --ulimit nofile=) "
            "or lower server.max_connections",
            what, exc.strerror or name, name, count, resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            extra={"error_type": "connection"},
        )
