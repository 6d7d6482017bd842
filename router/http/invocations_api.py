"""The async status API and the invocation history over HTTP, protected as the Invoke API is:

- ``GET /invocations/{id}``: an invocation's status, attempts and, once finished, its result or error
  (the ``Location`` of an async webhook's or an ``Event`` invoke's 202);
- ``DELETE /invocations/{id}``: cancel an async event that is queued or waiting for a retry (409 while
  it runs or once it has finished);
- ``GET /admin/invocations?function=&route=&status=&limit=&before=``: recent invocations, newest first,
  paged with ``next_before``; ``GET /admin/invocations/{id}``: one with its logs tail and payload.

The answer for one invocation of a redrive (source ``redrive``) has ``redrive_of``: the request id and
the id of the failed event it redrives (read from the kept event's ``redriven_as``), null once that event
is purged or pruned; other invocations cost no extra read.

Present when ``server.invoke_api`` is true; the records are ``router.core.history``'s.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from router.core.failures import REDRIVE_SOURCE
from router.core.history import HistoryRecorder
from router.errors import StateStoreError
from router.http.admin_failures import FAILED_EVENTS
from router.http.context import CTX
from router.http.invoke_auth import authenticate
from router.invocation import new_request_id
from router.state.history import STATUSES, attempt_log

_BODY_LIMIT = 64 * 1024  # these endpoints take no body; a signed request's is read to check it
_MAX_PAGE = 500


def _time(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _bytes_view(data: bytes | None) -> Any:
    """JSON as JSON; other bytes as a string (UTF-8) or, failing that, base64."""
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        pass
    try:
        return data.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def view(row: dict[str, Any], *, detail: bool) -> dict[str, Any]:
    """An invocation as the API answers it (snake_case, ISO 8601 times, durations in seconds, as
    ``/admin/failures``); ``detail`` adds the result or error object, logs and payload."""
    attempts = [
        {k: (_time(v) if k in ("started_at", "ended_at") else v) for k, v in entry.items()}
        for entry in attempt_log(row)
    ]
    out: dict[str, Any] = {
        "request_id": row["request_id"], "function": row["function"], "route": row["route"],
        "source": row["source"], "invocation_type": row["invocation_type"], "status": row["status"],
        "attempt_count": row["attempts"], "attempts": attempts, "started_at": _time(row["started_at"]),
        "finished_at": _time(row["finished_at"]), "duration": row["duration"],
        "error_type": row["error_type"], "error_message": row["error_message"],
    }
    if not detail:
        return out
    if row["status"] == "succeeded":
        out["result"] = _bytes_view(row["result"])
        out["result_truncated"] = bool(row["result_truncated"])
    elif row["error_type"] is not None and row["result"]:
        out["error"] = _bytes_view(row["result"])  # Lambda's error object
    out["logs"] = row["logs"]
    if row["payload"] is not None:
        out["payload"] = (row["payload"].decode(errors="replace") if row["payload_truncated"]
                          else _bytes_view(row["payload"]))
        out["payload_truncated"] = bool(row["payload_truncated"])
    return out


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


async def _recorder(request: web.Request) -> HistoryRecorder | web.Response:
    authenticated = await authenticate(request, new_request_id(), _BODY_LIMIT)
    if isinstance(authenticated, web.Response):
        return authenticated
    history = request.app[CTX].history
    if history is None:
        return _error(404, "invocation history is not running in this router")
    return history


async def _redrive_of(request: web.Request, request_id: str) -> dict[str, Any] | None:
    """``redrive_of`` of the redrive ``request_id``: the failed event it redrives, or None when it is no
    longer kept. Raises ``StateStoreError``."""
    failures = request.app.get(FAILED_EVENTS)
    event = None if failures is None else await failures.store.failure_redriven_as(request_id)
    return None if event is None else {"request_id": event.request_id, "failed_event": event.id}


async def get_invocation(request: web.Request) -> web.Response:
    history = await _recorder(request)
    if isinstance(history, web.Response):
        return history
    request_id = request.match_info["id"]
    try:
        row = await history.lookup(request_id)
        if row is None:
            return _error(404, f"invocation '{request_id}' not found (unknown, or pruned from the history)")
        answer = view(row, detail=True)
        if row["source"] == REDRIVE_SOURCE:
            answer["redrive_of"] = await _redrive_of(request, request_id)
    except StateStoreError as exc:
        return _error(503, str(exc))
    return web.json_response(answer)


async def cancel_invocation(request: web.Request) -> web.Response:
    history = await _recorder(request)
    if isinstance(history, web.Response):
        return history
    request_id = request.match_info["id"]
    try:
        outcome, row = await history.cancel(request_id)
    except StateStoreError as exc:
        return _error(503, str(exc))
    if row is None:
        return _error(404, f"invocation '{request_id}' not found (unknown, or pruned from the history)")
    if outcome == "cancelled":
        return web.json_response(view(row, detail=True))
    why = ("it is running now" if outcome == "running"
           else f"it has finished ({row['status']})" if row["invocation_type"] == "async"
           else "it is not an async event")
    return web.json_response({"message": f"invocation '{request_id}' cannot be cancelled: {why}",
                              "invocation": view(row, detail=False)}, status=409)


def _cursor(row: dict[str, Any]) -> str:
    return f"{row['started_at']!r}_{row['request_id']}"


async def list_invocations(request: web.Request) -> web.Response:
    history = await _recorder(request)
    if isinstance(history, web.Response):
        return history
    q = request.query
    status = q.get("status") or None
    if status is not None and status not in STATUSES:
        return _error(400, f"status: unknown status '{status}'; one of {', '.join(STATUSES)}")
    try:
        limit = int(q.get("limit", "50"))
        if not 1 <= limit <= _MAX_PAGE:
            raise ValueError
    except ValueError:
        return _error(400, f"limit: a whole number from 1 to {_MAX_PAGE}, got '{q.get('limit')}'")
    before: tuple[float, str] | None = None
    if q.get("before"):
        at, _, rid = q["before"].partition("_")
        try:
            before = (float(at), rid)
        except ValueError:
            return _error(400, f"before: the 'next_before' of a previous page, got '{q['before']}'")
    try:
        rows = await history.invocations(function=q.get("function") or None, route=q.get("route") or None,
                                         status=status, limit=limit, before=before)
    except StateStoreError as exc:
        return _error(503, str(exc))
    return web.json_response({
        "invocations": [view(r, detail=False) for r in rows], "count": len(rows),
        "next_before": _cursor(rows[-1]) if len(rows) == limit else None,
    })


def add_invocation_routes(app: web.Application) -> None:
    app.router.add_get("/invocations/{id}", get_invocation)
    app.router.add_delete("/invocations/{id}", cancel_invocation)
    app.router.add_get("/admin/invocations", list_invocations)
    app.router.add_get("/admin/invocations/{id}", get_invocation)
