"""Parsing of durations (``500ms``, ``30s``, ``5m``, ``6h``) and sizes (``6MB``, ``512KiB``)."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    # AWS writes "6 MB" for 6,291,456 bytes: KB/MB/GB are binary here, as in Lambda's limits.
    None: 1, "b": 1, "kb": 1024, "kib": 1024, "mb": 1024**2, "mib": 1024**2, "gb": 1024**3, "gib": 1024**3,
}


def parse_duration(value: object) -> float:
    """Return seconds for ``30``, ``1.5``, ``"500ms"``, ``"30s"``, ``"5m"``, ``"6h"``, ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30s, 500ms or 5m, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value!r}")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError(f"expected a duration such as 30s, 500ms or 5m, got {value!r}")


def parse_size(value: object) -> int:
    """Return bytes for ``1048576``, ``"6MB"`` (6 * 2^20, as AWS counts), ``"6MiB"``, ``"256KB"``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 6MB or 256KiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value!r}")
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            unit = m.group(2).lower() if m.group(2) else None
            return int(float(m.group(1)) * _SIZE_UNITS[unit])
    raise ValueError(f"expected a size such as 6MB or 256KiB, got {value!r}")
