"""Helpers of the fork-start and snap_start tests (their fixtures, ``templates`` and ``make_forked``,
are in conftest.py)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from router.invocation import Result
from router.runtime.template import fork_supported

needs_fork = pytest.mark.skipif(not fork_supported(), reason="fork-started environments need Linux "
                                "(x86_64 or aarch64) with pidfds")

PER_ENVIRONMENT = {
    "AWS_LAMBDA_RUNTIME_API", "AWS_LAMBDA_LOG_STREAM_NAME", "TMPDIR", "HOME", "_X_AMZN_TRACE_ID"}


def payload(result: Result) -> Any:
    assert result.ok, result.payload
    return json.loads(result.payload)


def zombie_children() -> set[int]:
    """This process's children that have ended and not been reaped."""
    me, found = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
        if state == "Z" and int(ppid) == me:
            found.add(int(entry))
    return found


def reaped(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def forked(probe: dict[str, Any]) -> bool:
    """Whether the environment was forked from a template (its command line is the template's)."""
    return any(arg.endswith("python_template.py") for arg in probe["cmdline"])


def fd_kinds(probe: dict[str, Any]) -> dict[str, str]:
    """Open fds by number, their targets without inode numbers (pipe:[123] -> pipe)."""
    return {fd: re.sub(r":\[\d+\]$", "", target) for fd, target in probe["fds"].items()
            if not target.startswith("/proc/")}
