"""Webhook authentication: GitHub-style HMAC, Standard Webhooks, bearer token, API key.

Every compare is constant-time (``hmac.compare_digest``). A failure is only ``False``: the caller
answers 401 without saying which part failed, and nothing here logs a secret or a signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import math
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from router.config.models import (
    ApiKeyAuthConfig,
    BearerAuthConfig,
    HmacAuthConfig,
    StandardWebhooksAuthConfig,
)

AuthConfig = HmacAuthConfig | StandardWebhooksAuthConfig | BearerAuthConfig | ApiKeyAuthConfig


class WebhookAuth(Protocol):
    def verify(self, headers: Mapping[str, str], body: bytes) -> bool:
        """True when the request is authentic; ``headers`` are case-insensitive (aiohttp's)."""
        ...


def _raw(text: str) -> bytes:
    """The bytes a header arrived as: aiohttp decodes header values as UTF-8 with ``surrogateescape``,
    so a value with other bytes (a client's junk, an attacker's probe) holds surrogates that a plain
    ``encode()`` refuses with UnicodeEncodeError (a 500 instead of a 401)."""
    return text.encode("utf-8", "surrogateescape")


def _same(a: str | bytes, b: str | bytes) -> bool:
    return hmac.compare_digest(
        _raw(a) if isinstance(a, str) else a, _raw(b) if isinstance(b, str) else b
    )


class HmacAuth:
    """GitHub style: ``<header>: <prefix><hex HMAC(secret, raw body)>``."""

    def __init__(self, cfg: HmacAuthConfig) -> None:
        self._secret = cfg.secret.encode()
        self._header = cfg.header
        self._prefix = cfg.prefix
        self._algorithm = cfg.algorithm

    def verify(self, headers: Mapping[str, str], body: bytes) -> bool:
        given = headers.get(self._header)
        if given is None:
            return False
        expected = self._prefix + hmac.new(self._secret, body, self._algorithm).hexdigest()
        return _same(given.strip(), expected)


class ReplayGuard:
    """Remembers keys until they expire, at most ``max_entries`` of them.

    Keys may expire in any order (a message's expiry follows its own timestamp), so they are kept in a
    heap by expiry. When the guard is full, the key that expires first is forgotten and the guard's
    *floor* rises to its expiry: from then on a key expiring at or before the floor is refused, since its
    replay could no longer be recognised. A full guard narrows the window it accepts (senders retry
    with a fresh timestamp); it never lets a replay through and never grows past its bound.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._max = max_entries
        self._seen: dict[str, float] = {}  # key -> expiry
        self._expiries: list[tuple[float, str]] = []  # heap of (expiry, key), one entry per seen key
        self._floor = -math.inf

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_remember(self, key: str, expires: float, now: float) -> bool:
        """False when ``key`` was seen and has not expired (or may have been forgotten early because the
        guard was full); otherwise remember it until ``expires`` and return True."""
        heap = self._expiries
        while heap and heap[0][0] <= now:
            _, old = heapq.heappop(heap)
            del self._seen[old]
        if key in self._seen or expires <= self._floor:
            return False
        self._seen[key] = expires
        heapq.heappush(heap, (expires, key))
        while len(self._seen) > self._max:
            expiry, old = heapq.heappop(heap)
            del self._seen[old]
            self._floor = max(self._floor, expiry)
        return True


class StandardWebhooksAuth:
    """Standard Webhooks (standardwebhooks.com): ``webhook-id``, ``webhook-timestamp`` and
    ``webhook-signature: v1,<base64> [v1,<base64> ...]`` over ``{id}.{timestamp}.{body}``.

    The secret is ``whsec_<base64>`` (decoded) or else used as raw bytes. A timestamp further than
    ``tolerance`` from now fails. A replay (the same id and timestamp, that is the same signed message,
    seen again while its timestamp is inside the tolerance) fails: each message is remembered until its
    own timestamp plus the tolerance, so one stamped ahead of the clock is remembered for as long as it
    is accepted. A sender's retry, which carries the same id with a new timestamp and signature, passes,
    so a retried delivery after a 5xx is not refused. The guard is in memory, per route and process.
    """

    def __init__(self, cfg: StandardWebhooksAuthConfig, *, clock: Callable[[], float] = time.time,
                 guard: ReplayGuard | None = None) -> None:
        self._secret = self.decode_secret(cfg.secret)
        self._tolerance = cfg.tolerance
        self._now = clock
        self._guard = guard or ReplayGuard()

    @staticmethod
    def decode_secret(secret: str) -> bytes:
        if secret.startswith("whsec_"):
            try:
                return base64.b64decode(secret[len("whsec_"):], validate=True)
            except (binascii.Error, ValueError):
                pass
        return secret.encode()

    def sign(self, msg_id: str, timestamp: str, body: bytes) -> str:
        mac = hmac.new(self._secret, _raw(f"{msg_id}.{timestamp}.") + body, hashlib.sha256).digest()
        return base64.b64encode(mac).decode("ascii")

    def verify(self, headers: Mapping[str, str], body: bytes) -> bool:
        msg_id = headers.get("webhook-id")
        timestamp = headers.get("webhook-timestamp")
        signatures = headers.get("webhook-signature")
        if not msg_id or not timestamp or not signatures:
            return False
        try:
            sent = int(timestamp)
        except ValueError:
            return False
        now = self._now()
        if abs(now - sent) > self._tolerance:
            return False
        expected = self.sign(msg_id, timestamp, body)
        ok = False
        for candidate in signatures.split():
            version, _, sig = candidate.partition(",")
            if version == "v1" and _same(sig, expected):
                ok = True
        if not ok:
            return False
        # Accepted until ``sent + tolerance`` (not ``now + tolerance``: a timestamp ahead of the clock is
        # accepted longer than that), so it is remembered until then.
        return self._guard.check_and_remember(f"{msg_id}\n{timestamp}", sent + self._tolerance, now)


class BearerAuth:
    """``Authorization: Bearer <token>``."""

    def __init__(self, cfg: BearerAuthConfig) -> None:
        self._token = cfg.token

    def verify(self, headers: Mapping[str, str], body: bytes) -> bool:
        scheme, _, given = headers.get("Authorization", "").partition(" ")
        # Compare even on a wrong scheme, so both failures take the same time.
        return _same(given.strip(), self._token) and scheme.lower() == "bearer"


class ApiKeyAuth:
    """``<header>: <key>`` (default header ``X-Api-Key``)."""

    def __init__(self, cfg: ApiKeyAuthConfig) -> None:
        self._key = cfg.key
        self._header = cfg.header

    def verify(self, headers: Mapping[str, str], body: bytes) -> bool:
        return _same(headers.get(self._header, ""), self._key)


def build_auth(cfg: AuthConfig | None) -> WebhookAuth | None:
    """The verifier for a route's ``source.auth``; None when the route has no auth."""
    if cfg is None:
        return None
    if isinstance(cfg, HmacAuthConfig):
        return HmacAuth(cfg)
    if isinstance(cfg, StandardWebhooksAuthConfig):
        return StandardWebhooksAuth(cfg)
    if isinstance(cfg, BearerAuthConfig):
        return BearerAuth(cfg)
    return ApiKeyAuth(cfg)


def headers_pass(cfg: AuthConfig | None, headers: Mapping[str, str], now: float | None = None) -> bool:
    """What ``cfg`` can check before the body is read (DESIGN §9a): bearer and API key fully, HMAC the
    presence and prefix of its signature header, Standard Webhooks its three headers and the timestamp
    tolerance. False means 401 without reading the body; True still needs ``verify`` on the body."""
    if cfg is None:
        return True
    if isinstance(cfg, BearerAuthConfig):
        return BearerAuth(cfg).verify(headers, b"")
    if isinstance(cfg, ApiKeyAuthConfig):
        return ApiKeyAuth(cfg).verify(headers, b"")
    if isinstance(cfg, HmacAuthConfig):
        given = headers.get(cfg.header)
        return given is not None and given.strip().startswith(cfg.prefix)
    timestamp = headers.get("webhook-timestamp", "")
    if not (headers.get("webhook-id") and headers.get("webhook-signature") and timestamp):
        return False
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    return abs((time.time() if now is None else now) - sent) <= cfg.tolerance
