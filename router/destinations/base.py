"""The Destination protocol: where async invocation records go (on_success / on_failure)."""

from __future__ import annotations

from typing import Any, Protocol


class Destination(Protocol):
    """Delivers one destination record; raises (``DestinationError`` or another error) on failure.

    ``kind`` is the config ``type`` and the ``kind`` metric label: file, http, function.
    """

    kind: str

    async def send(self, record: dict[str, Any]) -> None: ...
