"""``server.event_loop``: uvloop by default when installed, asyncio's own on request, a clear error when
uvloop is asked for and missing."""

from __future__ import annotations

import sys

import pytest
import uvloop

from router.app import loop_factory
from router.errors import RouterError


def test_auto_and_uvloop_use_uvloop() -> None:
    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("uvloop") is uvloop.new_event_loop


def test_asyncio_uses_the_default_loop() -> None:
    assert loop_factory("asyncio") is None


def test_a_missing_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert loop_factory("auto") is None
    with pytest.raises(RouterError, match=r"server\.event_loop: uvloop is not installed; pip install uvloop"):
        loop_factory("uvloop")
