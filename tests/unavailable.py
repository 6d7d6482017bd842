"""What a test does when a server or tool it needs is absent: skip with the reason, except under ``CI=true``
(where ``.ci/run`` provides everything), where the absence fails it."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(reason: str) -> NoReturn:
    """Skip the test with ``reason``, or fail it under CI=true."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)
