"""Notices that the config file a router was started from changed (``server.watch_config``): polls its
``os.stat`` every second and asks for a reload once a change has held still for one more poll."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from router.clock import Clock, SystemClock

log = logging.getLogger("router")

WATCH_INTERVAL = 1.0
"""Seconds between two looks at the config file."""

Stamp = tuple[int, int, int, int]
"""What a look at the file compares: (st_mtime_ns, st_size, st_ino, st_dev). The inode and device see
a file replaced by a rename (an editor's save, a ConfigMap's symlink swap) even with the same mtime."""

Step = Literal["wait", "reload", "gone"]


def file_stamp(path: str) -> Stamp:
    """``path``'s stamp, through symlinks (the file they point at now); raises ``OSError``."""
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev


def initial_stamp(path: str) -> Stamp | None:
    """The stamp of the file about to be loaded (None when it cannot be read: loading says why). Taken
    before the file is read, so a change made while the router starts is reloaded, never missed."""
    try:
        return file_stamp(path)
    except OSError:
        return None


@dataclass(slots=True)
class FileWatch:
    """What each look at the file means, one poll at a time (pure: tests drive it with stamps).

    ``current``: the stamp of the file the running config came from (the one at start, then the one each
    reload was asked for); None once the file could not be read, so that it is reloaded when it is back."""

    current: Stamp | None
    pending: Stamp | None = None  # a new stamp seen once: reloaded if the next look sees it again
    gone: bool = False  # the file could not be read at the last look (warned once)

    def poll(self, seen: Stamp | OSError) -> Step:
        """``reload`` when the file changed and has held still since the last look; ``gone`` the first
        time it cannot be read (to warn once); ``wait`` otherwise."""
        if isinstance(seen, OSError):
            self.current = self.pending = None
            if self.gone:
                return "wait"
            self.gone = True
            return "gone"
        self.gone = False
        if seen == self.current:
            self.pending = None
            return "wait"
        if seen != self.pending:  # changed since the last look: maybe still being written
            self.pending = seen
            return "wait"
        self.current, self.pending = seen, None
        return "reload"


def unreadable(path: str, exc: OSError) -> str:
    """The warning for a config file the watch cannot look at (logged once until it is back)."""
    why = ("is gone (deleted or renamed away)" if isinstance(exc, FileNotFoundError)
           else f"cannot be read ({exc.strerror or exc})")
    return (f"{path}: the config file {why}; the running config is kept, and the file is reloaded when it "
            "is back (server.watch_config)")


async def watch(path: str, reload: Callable[[], Awaitable[object]], *, first: Stamp | None,
                clock: Clock | None = None, interval: float = WATCH_INTERVAL) -> None:
    """Look at ``path`` every ``interval`` seconds until cancelled, and await ``reload`` (which logs its
    outcome) after each change that held still for one look. ``first``: the stamp of the file the running
    config was read from (``initial_stamp``). The stat runs in a thread: never on the loop."""
    clock = clock or SystemClock()
    file = FileWatch(first)
    while True:
        await clock.sleep(interval)
        try:
            seen: Stamp | OSError = await asyncio.to_thread(file_stamp, path)
        except OSError as exc:
            seen = exc
        step = file.poll(seen)
        if step == "gone" and isinstance(seen, OSError):
            log.warning("%s", unreadable(path, seen))
        elif step == "reload":
            log.info("%s: the config file changed: reloading (server.watch_config)", path)
            await reload()
