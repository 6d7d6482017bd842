"""Keeping the router's secrets out of what its functions can read of the router's process in /proc.

The router's environment holds every secret its config interpolates (``${VAR}``), and a process of the
same uid, a function's worker among them, can read ``/proc/<router pid>/environ`` (and ``mem``, ``fd``
...). At start the router therefore:

- makes itself non-dumpable (``PR_SET_DUMPABLE`` 0): its /proc entries become root's, so a process of
  another uid, or of the same non-root uid, cannot open them, and one without ``CAP_SYS_PTRACE`` cannot
  read its memory (side effects: no core dump; a debugger or ``py-spy`` needs root or
  ``CAP_SYS_PTRACE``). Workers are dumpable again (exec resets it; forked ones come from exec'd
  templates), so the router can still inspect them;
- blanks the environment block the kernel shows as ``/proc/<pid>/environ`` (the strings the process was
  exec'd with, which ``os.environ`` and ``unsetenv`` never change), after moving every variable to a
  copy of its own (``setenv``), so the C library's ``getenv`` and the processes the router starts still
  see them. Even a reader the flag does not stop (root; on some kernels a root without
  ``CAP_SYS_PTRACE``) then finds nothing there.

Linux only; elsewhere (and when ``prctl`` is missing) a warning says what is not protected.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger("router")

_PR_SET_DUMPABLE = 4


def protect_router_process() -> None:
    """Both steps of the module doc; call once, first thing in ``router run``."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:
        log.warning("cannot make the router process non-dumpable (%s): functions running as the same "
                    "user can read its memory and file descriptors from /proc", exc)
    try:
        blank_environ_block()
    except (OSError, ValueError) as exc:
        log.warning("cannot blank the router's /proc/PID/environ (%s): functions that can read it see "
                    "the router's environment variables", exc)


def _environ_bounds() -> tuple[int, int]:
    """``env_start`` and ``env_end`` of this process (``/proc/self/stat`` fields 50 and 51)."""
    with open("/proc/self/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2:].split()
    return int(fields[47]), int(fields[48])  # fields after "(comm)" start at field 3


def blank_environ_block() -> None:
    """Move every variable to a string of its own, then zero the block the process was exec'd with."""
    for key, value in os.environ.items():
        os.putenv(key, value)  # setenv(3): a new copy, the environ array no longer points into the block
    start, end = _environ_bounds()
    if not 0 < start < end or end - start > 64 * 1024 * 1024:
        raise ValueError(f"unexpected environment bounds {start:#x}..{end:#x}")
    ctypes.memset(start, 0, end - start)
