"""``http`` destination: POST the record as JSON; any 2xx answer is a delivery."""

from __future__ import annotations

from typing import Any

import aiohttp

from router.errors import DestinationError
from router.urls import safe_url


class HttpDestination:
    kind = "http"

    def __init__(
        self, url: str, *, headers: dict[str, str], timeout: float, session: aiohttp.ClientSession
    ) -> None:
        self.url = url
        self._headers = headers  # may hold secrets: never logged
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._where = f"http destination POST {safe_url(url)}"

    async def send(self, record: dict[str, Any], trace: str | None = None) -> None:
        # X-Amzn-Trace-Id: the invocation's trace header, as an AWS SDK call from the function carries it.
        headers = {**self._headers, "X-Amzn-Trace-Id": trace} if trace else self._headers
        try:
            async with self._session.post(
                self.url, json=record, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                if 200 <= resp.status < 300:
                    return
                body = await resp.text(errors="replace")
                raise DestinationError(f"{self._where}: returned {resp.status}: {body[:200]}")
        except TimeoutError as exc:
            raise DestinationError(
                f"{self._where}: no answer within {self._timeout.total:g}s; raise its timeout"
            ) from exc
        except aiohttp.ClientError as exc:
            raise DestinationError(f"{self._where}: {type(exc).__name__}: {exc}") from exc
