"""Compact JSON (no spaces after ``,`` and ``:``), as the router writes events, records and rows: one
encoder made once (``json.dumps`` with options builds a new encoder on every call: ~1 us each, paid per
request on the hot path). Otherwise ``json.dumps``' defaults: ASCII only, keys in their order."""

from __future__ import annotations

import json
from typing import Any

_encode = json.JSONEncoder(separators=(",", ":")).encode


def dumps(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"))``."""
    return _encode(value)


def dumpb(value: Any) -> bytes:
    """``dumps(value)`` as UTF-8 bytes (ASCII, in fact)."""
    return _encode(value).encode()
