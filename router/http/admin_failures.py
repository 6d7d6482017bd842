"""The admin API of failed events (``router failures`` talks to it), beside the Invoke API and protected
the same way (``invoke_auth.authenticate``); present when ``server.invoke_api`` is true.

``GET /admin/failures``: kept failed events, newest first, without record and payload; filters
``function``, ``route``, ``condition``, ``since``, ``until`` (epoch seconds, ISO-8601, or a duration
``1h`` meaning that long ago), ``ids`` (comma-separated), ``limit`` (default 100, at most 1000) and
``before`` (an id: the next page, as ``next_before`` of the previous answer says).
``GET /admin/failures/{id}``: one, whole: its destination record and payload.
``POST /admin/failures/redrive``: JSON body with the same filters (``ids`` a list) or ``all: true``, and
``rate`` (events per second, default 10, at most 1000): claims the events not redriven yet and answers
202 at once with what was scheduled; the redrives run in the background at that rate.
``DELETE /admin/failures``: the same filters (query string or JSON body); with none, ``all=true``.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from router.config.units import parse_duration
from router.core.destination_record import iso_timestamp, parse_json_or_text
from router.core.failures import DEFAULT_RATE, MAX_RATE, FailedEvents, RedriveBusy
from router.errors import StateStoreError
from router.http.invoke_auth import authenticate
from router.invocation import new_request_id
from router.state.failures import MAX_PAGE, FailedEvent, FailureFilter

FAILED_EVENTS = web.AppKey("router_failed_events", FailedEvents)
"""The app's failed events (set by ``app.py``; absent: the endpoints answer 503)."""

PATH = "/admin/failures"
BODY_LIMIT = 1024 * 1024
DEFAULT_LIMIT = 100


class BadRequest(Exception):
    """A parameter the endpoint cannot use; ``str()`` says which and why."""


def add_failure_routes(app: web.Application) -> None:
    app.router.add_get(PATH, list_failures)
    app.router.add_delete(PATH, purge_failures)
    app.router.add_post(PATH + "/redrive", redrive_failures)
    app.router.add_get(PATH + "/{id}", show_failure)


def _answer(status: int, body: Any, request_id: str) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type="application/json",
                        headers={"x-amzn-RequestId": request_id})


def _error(status: int, message: str, request_id: str) -> web.Response:
    return _answer(status, {"message": message}, request_id)


async def _begin(request: web.Request, request_id: str) -> tuple[FailedEvents, bytes] | web.Response:
    """Authenticate; the failed events and the body, or the refusal."""
    body = await authenticate(request, request_id, BODY_LIMIT)
    if isinstance(body, web.Response):
        return body
    failures = request.app.get(FAILED_EVENTS)
    if failures is None:
        return _error(503, "failed events are not kept by this router", request_id)
    return failures, body


def parse_time(name: str, value: Any, now: float) -> float:
    """Epoch seconds of ``value``: a number (epoch seconds), a duration (``1h``: that long before
    ``now``) or an ISO-8601 time (UTC unless it says otherwise)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{name}: expected epoch seconds, an ISO-8601 time such as 2026-01-31T12:00:00Z "
                         f"or a duration such as 1h (that long ago), got {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _ids(value: Any) -> tuple[int, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    try:
        ids = tuple(int(str(i).strip()) for i in items if str(i).strip())
    except ValueError:
        raise BadRequest(f"ids: expected failed event ids (numbers), got {value!r}") from None
    if not ids:
        raise BadRequest("ids: empty; name at least one failed event id")
    return ids


def _int(name: str, value: Any, low: int, high: int) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise BadRequest(f"{name}: expected a whole number, got {value!r}") from None
    if not low <= number <= high:
        raise BadRequest(f"{name}: must be between {low} and {high}, got {number}")
    return number


_FILTERS = ("function", "route", "condition", "since", "until", "ids", "before")


def parse_filter(params: dict[str, Any], now: float, *, allowed: set[str]) -> FailureFilter:
    """The filter of ``params`` (query or JSON body); unknown keys are refused."""
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]!r}; expected {', '.join(sorted(allowed))}")
    values: dict[str, Any] = {}
    for key in ("function", "route", "condition"):
        if params.get(key) not in (None, ""):
            values[key] = str(params[key])
    for key in ("since", "until"):
        if params.get(key) not in (None, ""):
            values[key] = parse_time(key, params[key], now)
    if params.get("ids") not in (None, ""):
        values["ids"] = _ids(params["ids"])
    if params.get("before") not in (None, ""):
        values["before"] = _int("before", params["before"], 1, 2**62)
    return FailureFilter(**values)


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1", "yes")


def summary(event: FailedEvent) -> dict[str, Any]:
    """A failed event as the listing shows it."""
    return {
        "id": event.id, "function": event.function, "route": event.route, "source": event.source,
        "request_id": event.request_id, "condition": event.condition,
        "failed_at": iso_timestamp(event.failed_at), "attempts": event.attempts,
        "error_type": event.error_type, "error_message": event.error_message,
        "redriven_as": event.redriven_as,
        "redriven_at": None if event.redriven_at is None else iso_timestamp(event.redriven_at),
        "qualifier": event.qualifier,
    }


async def list_failures(request: web.Request) -> web.Response:
    request_id = new_request_id()
    begun = await _begin(request, request_id)
    if isinstance(begun, web.Response):
        return begun
    failures, _ = begun
    params = dict(request.query)
    try:
        limit = _int("limit", params.pop("limit", DEFAULT_LIMIT), 1, MAX_PAGE)
        f = parse_filter(params, _now(), allowed=set(_FILTERS))
        events = await failures.store.list_failures(f, limit)
    except BadRequest as exc:
        return _error(400, str(exc), request_id)
    except StateStoreError as exc:
        return _error(503, str(exc), request_id)
    next_before = events[-1].id if len(events) == limit else None
    return _answer(200, {"failures": [summary(e) for e in events], "count": len(events),
                         "next_before": next_before}, request_id)


async def show_failure(request: web.Request) -> web.Response:
    request_id = new_request_id()
    begun = await _begin(request, request_id)
    if isinstance(begun, web.Response):
        return begun
    failures, _ = begun
    raw = request.match_info["id"]
    if not raw.isdigit():
        return _error(400, f"failed event id: expected a number, got {raw!r}", request_id)
    try:
        event = await failures.store.get_failure(int(raw))
    except StateStoreError as exc:
        return _error(503, str(exc), request_id)
    if event is None:
        return _error(404, f"failed event {raw} not found (purged, pruned, or never kept); "
                           "`router failures list` shows the kept ones", request_id)
    whole = summary(event)
    whole["record"] = json.loads(event.record)
    whole["payload"] = parse_json_or_text(event.payload)
    return _answer(200, whole, request_id)


def _json_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        raise BadRequest(f"body: not valid JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise BadRequest("body: expected a JSON object of filters")
    return parsed


async def redrive_failures(request: web.Request) -> web.Response:
    request_id = new_request_id()
    begun = await _begin(request, request_id)
    if isinstance(begun, web.Response):
        return begun
    failures, body = begun
    try:
        params = _json_body(body)
        everything = _flag(params.pop("all", False))
        rate = params.pop("rate", DEFAULT_RATE)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate) \
                or not 0 < rate <= MAX_RATE:
            raise BadRequest(f"rate: events per second, more than 0 and at most {MAX_RATE:g}, got {rate!r}")
        f = parse_filter(params, _now(), allowed=set(_FILTERS) - {"before"})
        if f.empty and not everything:
            raise BadRequest("no filter: name ids or a filter (function, route, condition, since, until), "
                             "or send all: true to redrive every failed event not redriven yet")
        claimed = await failures.redrive(f, rate=float(rate))
    except BadRequest as exc:
        return _error(400, str(exc), request_id)
    except RedriveBusy as exc:
        return _error(429, str(exc), request_id)
    except StateStoreError as exc:
        return _error(503, str(exc), request_id)
    return _answer(202, {
        "scheduled": len(claimed), "rate": float(rate),
        "redrives": [{"id": e.id, "function": e.function, "request_id": e.request_id,
                      "redriven_as": e.redriven_as} for e in claimed],
    }, request_id)


async def purge_failures(request: web.Request) -> web.Response:
    request_id = new_request_id()
    begun = await _begin(request, request_id)
    if isinstance(begun, web.Response):
        return begun
    failures, body = begun
    try:
        params: dict[str, Any] = {**request.query, **_json_body(body)}
        everything = _flag(params.pop("all", False))
        f = parse_filter(params, _now(), allowed=set(_FILTERS) - {"before"})
        if f.empty and not everything:
            raise BadRequest("no filter: name ids or a filter (function, route, condition, since, until), "
                             "or send all=true to purge every failed event")
        purged = await failures.store.purge_failures(f)
    except BadRequest as exc:
        return _error(400, str(exc), request_id)
    except StateStoreError as exc:
        return _error(503, str(exc), request_id)
    return _answer(200, {"purged": purged}, request_id)


def _now() -> float:
    return time.time()
