"""``http`` invoker: POST the event JSON to a remote target; the response body is the result (DESIGN §4.1).

Status mapping: 2xx success; 429 throttle (retried without using up a retry); 404, 409 and 5xx retryable
errors; 400 and every other 4xx not retryable; 3xx an error (redirects are not followed); connection
errors are infrastructure errors (retried like throttles); no answer within the function's timeout is
``Outcome.TIMEOUT``. ``Retry-After`` (seconds or an HTTP date) becomes ``Result.retry_after``.
"""

from __future__ import annotations

import email.utils
import json

import aiohttp

from router.clock import Clock, SystemClock
from router.config.models import FunctionConfig
from router.invocation import RESPONSE_LIMIT, ErrorType, Invocation, Outcome, Result
from router.urls import safe_url

"""Largest response body accepted from a target (Lambda's 6 MB sync response limit)."""

_RETRYABLE_4XX = frozenset({404, 409})


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date; None when absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


class HttpInvoker:
    """Invoker of a function whose target is ``http: {url, headers}``.

    Sends ``X-Request-Id`` (the invocation's request id, the same across async retries: an idempotency
    key) and ``X-Router-Attempt``; the configured headers are sent as given and never logged.
    """

    def __init__(
        self,
        name: str,
        config: FunctionConfig,
        *,
        session: aiohttp.ClientSession,
        clock: Clock | None = None,
        max_response: int = RESPONSE_LIMIT,
    ) -> None:
        if config.http is None:
            raise ValueError(f"HttpInvoker: function '{name}' has no http target")
        self.name = name
        self._url = config.http.url
        self._headers = dict(config.http.headers)
        self._timeout_s = config.timeout
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._session = session
        self._clock = clock or SystemClock()
        self._max_response = max_response
        self._where = f"POST {safe_url(self._url)}"

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None  # the session belongs to the app

    async def invoke(self, invocation: Invocation) -> Result:
        headers = {
            "Content-Type": "application/json",
            "X-Request-Id": invocation.request_id,
            "X-Router-Attempt": str(invocation.attempt),
            **self._headers,
        }
        started = self._clock.monotonic()
        try:
            async with self._session.post(
                self._url, data=invocation.payload, headers=headers, timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                body = await self._read(resp)
                result = self._map(resp.status, resp.headers.get("Retry-After"), body)
        except TimeoutError:
            result = Result.error(
                "Sandbox.Timedout", f"Task timed out after {self._timeout_s:.2f} seconds",
                outcome=Outcome.TIMEOUT, error_type=ErrorType.TIMEOUT,
            )
        except _ResponseTooLarge:
            result = Result.error(
                "Function.ResponseSizeTooLarge",
                f"{self._where}: response is over the limit of {self._max_response} bytes",
                error_type=ErrorType.HTTP_5XX, retryable=False,
            )
        except ValueError as exc:
            # aiohttp refuses the request itself (bad URL, Authorization header and URL credentials).
            result = Result.error(
                "HttpError", f"{self._where}: cannot send the request: {_describe(exc)}; check http.url "
                "and http.headers", error_type=ErrorType.CONFIG, retryable=False,
            )
        except aiohttp.ClientError as exc:
            # Connection refused, reset, DNS: infrastructure, retried without using up a retry.
            result = Result.error(
                "HttpConnectionError", f"{self._where} failed: {type(exc).__name__}: {_describe(exc)}",
                error_type=ErrorType.CONNECTION, throttle=True,
            )
        result.duration = self._clock.monotonic() - started
        return result

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        if resp.content_length is not None and resp.content_length > self._max_response:
            raise _ResponseTooLarge
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_any():
            size += len(chunk)
            if size > self._max_response:
                raise _ResponseTooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    def _map(self, status: int, retry_after_header: str | None, body: bytes) -> Result:
        if 200 <= status < 300:
            return Result(payload=_as_json(body))
        retry_after = parse_retry_after(retry_after_header, self._clock.time())
        message = f"{self._where} returned {status}: {body[:200].decode('utf-8', errors='replace')}"
        if status == 429:
            return Result.error(
                "HttpError", message, outcome=Outcome.THROTTLED, error_type=ErrorType.THROTTLED,
                throttle=True, retry_after=retry_after,
            )
        if 300 <= status < 400:
            return Result.error(
                "HttpError", message + "; redirects are not followed, point http.url at the final address",
                error_type=ErrorType.CONFIG, retryable=False,
            )
        if 400 <= status < 500:
            return Result.error(
                "HttpError", message, error_type=ErrorType.HTTP_4XX,
                retryable=status in _RETRYABLE_4XX, retry_after=retry_after,
            )
        return Result.error(
            "HttpError", message, error_type=ErrorType.HTTP_5XX, retry_after=retry_after,
            retryable=status >= 500,
        )


class _ResponseTooLarge(Exception):
    pass


def _as_json(body: bytes) -> bytes:
    """The body when it is JSON; otherwise the body wrapped as a JSON string."""
    if not body:
        return b"null"
    try:
        json.loads(body)
    except ValueError:
        return json.dumps(body.decode("utf-8", errors="replace")).encode()
    return body


def _describe(exc: Exception) -> str:
    """A short description that never repeats a URL (which may hold credentials or tokens)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc.os_error})"
    if isinstance(exc, aiohttp.ClientResponseError):
        return exc.message
    if isinstance(exc, aiohttp.InvalidURL):
        return "invalid URL; check http.url"
    return str(exc) or "connection failed"
