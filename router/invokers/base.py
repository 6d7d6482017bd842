"""The Invoker protocol: one instance per function; knows nothing of sources."""

from __future__ import annotations

from typing import Protocol

from router.invocation import Invocation, Result


class Invoker(Protocol):
    """Runs one invocation of its function and returns its result.

    Never raises for function failures: handler errors, timeouts and target errors become a ``Result``
    with the matching ``outcome``. ``start`` may warm up (provisioned environments); ``close`` stops
    everything it started.
    """

    async def start(self) -> None: ...

    async def invoke(self, invocation: Invocation) -> Result: ...

    async def close(self) -> None: ...
