"""Did-you-mean hints for misspelt names: the closest candidate, and the hint worded for a message."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate to a misspelt ``word``, if one is close enough."""
    by_lower = {c.lower(): c for c in candidates}
    matches = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[matches[0]] if matches else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ``"did you mean 'x'?"`` for the closest candidate, or ``""`` when none is close."""
    match = closest(name, candidates)
    return f"did you mean '{match}'?" if match is not None else ""
