"""``file`` destination: one JSON line per record, appended, flushed and fsynced off the event loop."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from router.errors import DestinationError


class FileDestination:
    """Appends records to ``path``; ``lock`` is shared by every destination writing the same file."""

    kind = "file"

    def __init__(self, path: Path, lock: asyncio.Lock) -> None:
        self.path = path
        self._lock = lock

    async def send(self, record: dict[str, Any], trace: str | None = None) -> None:
        line = (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        async with self._lock:
            try:
                await asyncio.to_thread(_append, self.path, line)
            except OSError as exc:
                raise DestinationError(
                    f"file destination {str(self.path)!r}: cannot append the record: {exc.strerror or exc}"
                ) from exc


def _append(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
