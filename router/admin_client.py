"""The command line's client of a running router's HTTP API (``router failures``, ``router pause`` ...).

Where: ``--url``, else ``$ROUTER_URL``, else the config's ``server.host``/``server.port`` (a wildcard
host such as 0.0.0.0 is reached on 127.0.0.1). Credentials, as the Invoke API takes them: ``$ROUTER_TOKEN``
or the config's ``server.invoke_token`` as ``Authorization: Bearer``; else, when the config has
``server.invoke_keys``, a SigV4 signature with ``$AWS_ACCESS_KEY_ID``/``$AWS_SECRET_ACCESS_KEY`` when
they are one of those keys, or with the config's first key. Blocking (urllib): the CLI has no event loop.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from router.config.models import RouterConfig

DEFAULT_TIMEOUT = 30.0


class AdminError(Exception):
    """The router could not be reached, or answered with an error; ``str()`` says which, for the user."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass(slots=True)
class Answer:
    status: int
    body: Any  # the parsed JSON body (None when empty)
    headers: dict[str, str]


def base_url(config: RouterConfig, url: str | None = None) -> str:
    """The router's address: ``url``, else ``$ROUTER_URL``, else from ``server.host``/``server.port``."""
    chosen = url or os.environ.get("ROUTER_URL")
    if chosen:
        return chosen.rstrip("/")
    host = config.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.server.port}"


class AdminClient:
    """Sends JSON requests to a running router, authenticated as its Invoke API requires."""

    def __init__(self, config: RouterConfig, *, url: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 region: str | None = None) -> None:
        self.url = base_url(config, url)
        self._timeout = timeout
        server = config.server
        self._token = os.environ.get("ROUTER_TOKEN") or server.invoke_token
        self._keys = dict(server.invoke_keys)
        self._region = region or config.aws.region

    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None,
                body: Any = None) -> Answer:
        """``method path`` with ``query`` (None values left out) and ``body`` as JSON; the parsed answer.
        Raises ``AdminError`` when the router cannot be reached or answers 4xx/5xx."""
        target = self.url + path
        if query:
            pairs = [(k, str(v)) for k, v in query.items() if v is not None]
            if pairs:
                target += "?" + urllib.parse.urlencode(pairs, quote_via=urllib.parse.quote)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        headers.update(self._auth(method, target, headers, data))
        req = urllib.request.Request(target, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                return Answer(resp.status, _parse(resp.read()), dict(resp.headers.items()))
        except urllib.error.HTTPError as exc:
            parsed = _parse(exc.read())
            raise AdminError(f"{method} {path}: {exc.code} {_message(parsed) or exc.reason}",
                             exc.code, parsed) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AdminError(f"cannot reach the router at {self.url}: {reason} (is `router run` running? "
                             "--url or $ROUTER_URL say where)") from None

    def _auth(self, method: str, target: str, headers: dict[str, str], data: bytes | None) -> dict[str, str]:
        if self._token:
            return {"Authorization": f"Bearer {self._token}"}
        if not self._keys:
            return {}
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        key_id = os.environ.get("AWS_ACCESS_KEY_ID")
        if key_id not in self._keys:
            key_id = next(iter(self._keys))
        request = AWSRequest(method=method, url=target, data=data or b"", headers=dict(headers))
        SigV4Auth(Credentials(key_id, self._keys[key_id]), "lambda", self._region).add_auth(request)
        return {k: v for k, v in request.headers.items() if k.lower() not in {h.lower() for h in headers}}


def _parse(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _message(body: Any) -> str | None:
    if isinstance(body, dict):
        for key in ("message", "Message", "errorMessage"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return None
