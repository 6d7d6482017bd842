"""One router per SQLite state file: an exclusive lock held for the life of the process.

A SQLite state store serves a single replica: at start-up that replica hands back the leases a crashed
run left behind (``release_all_leases``), which would steal the in-flight events of a second router
still running on the same file. The lock turns that mistake into a clear start-up error. The kernel
drops the lock when the process dies, SIGKILL included, so a crash never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from router.errors import StateStoreError


class ReplicaLock:
    """``acquire()`` takes the lock on ``<db>.lock`` without waiting; ``release()`` gives it back."""

    def __init__(self, db_path: Path, shown: str) -> None:
        self.path = db_path.with_name(db_path.name + ".lock")
        self._shown = shown
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; raises ``StateStoreError`` naming the file when it cannot be created or is held."""
        what = f"directory {self.path.parent}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            what = str(self.path)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StateStoreError(
                f"state {self._shown}: cannot create {what} ({exc.strerror or exc}); the state directory "
                f"must be a directory the router (user id {os.getuid()}) can write: fix its permissions "
                "or point state: at another path"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateStoreError(
                f"state {self._shown}: in use by another router (pid {holder}); a SQLite state file "
                "serves one router: stop the other one, give this one its own file, or use "
                "postgresql://... for several replicas"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
