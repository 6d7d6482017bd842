"""The X-Ray trace header an invocation carries, and the ``Lineage`` in it that counts a chain's hops.

Lambda's recursive loop detection counts, in the ``Lineage`` field of the X-Ray trace header
(``Root=1-...;Parent=...;Sampled=0;Lineage=12326a9d:3``), how many times each function has been invoked
by the same chain of events. The header reaches the function as ``_X_AMZN_TRACE_ID``; the AWS SDKs copy
it into ``X-Amzn-Trace-Id`` on every call made from a function (botocore does when
``AWS_LAMBDA_FUNCTION_NAME`` is set), SQS keeps it as the message's ``AWSTraceHeader`` system attribute,
and the next invocation reads the count back. The router does the same: a destination writes the header
it was sent with (sqs: ``AWSTraceHeader``; amqp: the ``x-amzn-trace-id`` header; function: the event's
own), the sqs and amqp sources read it back.

Pure functions, no I/O. Each function of a chain has one entry ``<hash>:<count>``, entries joined by
``|``; ``<hash>`` is the first 8 hex digits of the SHA-256 of the function's ARN (``function_key``).
"""

from __future__ import annotations

import hashlib
import random
import re
import time

LIMIT = 16
"""Lambda stops the next invocation once a chain has invoked a function this many times."""

HEADER = "x-amzn-trace-id"
"""The header (HTTP, AMQP) that carries the trace header between services."""

SQS_ATTRIBUTE = "AWSTraceHeader"
"""The SQS system attribute that keeps the trace header of the call that sent a message."""

_ENTRY = re.compile(r"^([0-9a-f]{8}):(\d{1,9})$")
MAX_ENTRIES = 8
"""Entries kept in one header (most hops first): bounds its size on a chain through many functions."""


def function_key(arn: str) -> str:
    """The 8 hex digits that name a function in ``Lineage`` (no name is written in a header)."""
    return hashlib.sha256(arn.encode()).hexdigest()[:8]


def _fields(header: str | None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for part in (header or "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key:
            out.append((key, value))
    return out


def lineage(header: str | None) -> dict[str, int]:
    """``{function key: invocations}`` of ``header``'s ``Lineage`` (empty when absent or malformed)."""
    counts: dict[str, int] = {}
    for key, value in _fields(header):
        if key != "Lineage":
            continue
        # botocore URL-quotes the header it copies from _X_AMZN_TRACE_ID ('|' becomes %7C).
        for entry in value.replace("%7C", "|").replace("%7c", "|").split("|"):
            m = _ENTRY.match(entry.strip())
            if m is not None:
                counts[m.group(1)] = max(counts.get(m.group(1), 0), int(m.group(2)))
    return counts


def hops(header: str | None, key: str) -> int:
    """How many times the chain of ``header`` has invoked the function ``key`` already."""
    return lineage(header).get(key, 0)


def _new_root(now: float) -> str:
    # X-Ray ids need to be unique, not secret: no getrandom(2) call per invocation.
    return f"1-{int(now):08x}-{random.getrandbits(96):024x}"


def next_header(header: str | None, key: str, *, now: float | None = None) -> str:
    """The trace header of the next invocation of the function ``key`` in the chain of ``header`` (a new
    chain when None): the same ``Root`` (a new one when absent), a new ``Parent``, ``Sampled=0``, and the
    function's count one more. Other fields of ``header`` are dropped."""
    if not header:  # the first hop (every webhook call): no fields to read
        root = _new_root(time.time() if now is None else now)
        return f"Root={root};Parent={random.getrandbits(64):016x};Sampled=0;Lineage={key}:1"
    fields = dict(_fields(header))
    root = fields.get("Root") or _new_root(time.time() if now is None else now)
    counts = lineage(header)
    counts[key] = counts.get(key, 0) + 1
    kept = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_ENTRIES]
    if key not in dict(kept):
        kept[-1] = (key, counts[key])
    entries = "|".join(f"{k}:{n}" for k, n in kept)
    return f"Root={root};Parent={random.getrandbits(64):016x};Sampled=0;Lineage={entries}"


def root(header: str | None) -> str | None:
    """The ``Root`` of ``header``: the chain's id (for logs)."""
    return dict(_fields(header)).get("Root")


def deepest(headers: list[str | None]) -> str | None:
    """Of the trace headers of a batch's records, the one of the longest chain (its highest count): the
    header of the batch's invocation, so a loop through a batch is counted as surely as through one."""
    best: str | None = None
    best_count = 0
    for header in headers:
        if not header:
            continue
        count = max(lineage(header).values(), default=0)
        if best is None or count > best_count:
            best, best_count = header, count
    return best
