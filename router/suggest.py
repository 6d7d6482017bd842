"""Did-you-mean hints for misspelt names, outside the config loader (which words them itself)."""

from __future__ import annotations

from collections.abc import Iterable

from router.config.problems import did_you_mean as closest


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ``"did you mean 'x'?"`` for the closest candidate, or ``""`` when none is close."""
    match = closest(name, candidates)
    return f"did you mean '{match}'?" if match is not None else ""
