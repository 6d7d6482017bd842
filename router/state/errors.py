"""Describe database errors in one line, without SQL parameters (they may hold event payloads)."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError


def describe(exc: BaseException) -> str:
    """``Type: message`` of the driver's own error when there is one, else of ``exc``.

    SQLAlchemy's text appends the statement and its parameters; the driver's error does not.
    """
    inner: BaseException = exc
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        inner = exc.orig
    text = " ".join(str(inner).split())
    if not text:
        text = "no answer in time (a stalled connection?)" if isinstance(inner, TimeoutError) else "no detail"
    return f"{type(inner).__name__}: {text}"
