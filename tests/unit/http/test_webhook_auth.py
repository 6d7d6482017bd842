"""Webhook verifiers without HTTP: signatures, clocks, the replay guard's bound."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from multidict import CIMultiDict

from router.config.models import (
    ApiKeyAuthConfig,
    BearerAuthConfig,
    HmacAuthConfig,
    StandardWebhooksAuthConfig,
)
from router.http.webhook_auth import (
    ApiKeyAuth,
    BearerAuth,
    HmacAuth,
    ReplayGuard,
    StandardWebhooksAuth,
    build_auth,
)


def test_hmac_sha1_with_custom_header_and_case_insensitive_lookup() -> None:
    auth = HmacAuth(HmacAuthConfig(type="hmac", secret="s", header="X-Sig", prefix="sha1=", algorithm="sha1"))
    body = b"payload"
    sig = "sha1=" + hmac.new(b"s", body, hashlib.sha1).hexdigest()
    assert auth.verify(CIMultiDict({"x-sig": sig}), body)
    assert not auth.verify(CIMultiDict({"x-sig": sig.upper()}), body)
    assert not auth.verify(CIMultiDict({"x-sig": sig[5:]}), body)  # prefix missing


def _sw(secret: bytes, msg_id: str, ts: int, body: bytes) -> CIMultiDict[str]:
    mac = hmac.new(secret, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return CIMultiDict({"webhook-id": msg_id, "webhook-timestamp": str(ts),
                        "webhook-signature": "v1," + base64.b64encode(mac).decode()})


def test_standard_webhooks_with_a_fixed_clock() -> None:
    now = 1_700_000_000.0
    auth = StandardWebhooksAuth(
        StandardWebhooksAuthConfig(type="standard_webhooks", secret="raw-secret", tolerance=60),
        clock=lambda: now,
    )
    body = b"{}"
    assert auth.verify(_sw(b"raw-secret", "a", int(now) - 60, body), body)  # at the edge: accepted
    assert not auth.verify(_sw(b"raw-secret", "b", int(now) - 61, body), body)
    assert not auth.verify(_sw(b"raw-secret", "c", int(now) + 61, body), body)
    headers = _sw(b"raw-secret", "d", int(now), body)
    headers["webhook-timestamp"] = "soon"
    assert not auth.verify(headers, body)


def test_whsec_secret_is_base64_decoded() -> None:
    raw = b"\x01\x02\x03secret"
    assert StandardWebhooksAuth.decode_secret("whsec_" + base64.b64encode(raw).decode()) == raw
    assert StandardWebhooksAuth.decode_secret("whsec_not base64!") == b"whsec_not base64!"
    assert StandardWebhooksAuth.decode_secret("plain") == b"plain"


def test_replay_guard_forgets_expired_keys_and_stays_bounded() -> None:
    guard = ReplayGuard(max_entries=3)
    assert guard.check_and_remember("a", expires=10, now=0)
    assert not guard.check_and_remember("a", expires=10, now=5)
    assert guard.check_and_remember("a", expires=20, now=10)  # expired: a new message
    for i, key in enumerate("bcdef"):
        assert guard.check_and_remember(key, expires=100 + i, now=11)
    assert len(guard) == 3


def test_standard_webhooks_message_stamped_ahead_cannot_be_replayed_while_accepted() -> None:
    # Issue 9 defect 8: a timestamp ahead of the clock (inside the tolerance) is accepted until
    # timestamp + tolerance; the guard used to forget it at first-seen + tolerance, so it could be
    # replayed in between.
    clock = [1_700_000_000.0]
    auth = StandardWebhooksAuth(
        StandardWebhooksAuthConfig(type="standard_webhooks", secret="raw-secret", tolerance=60),
        clock=lambda: clock[0],
    )
    body = b"{}"
    sent = int(clock[0]) + 50  # 50 s ahead of the router's clock: accepted
    headers = _sw(b"raw-secret", "msg-ahead", sent, body)
    assert auth.verify(headers, body)
    assert not auth.verify(headers, body)  # replayed at once
    clock[0] += 61  # past first-seen + tolerance, still within sent + tolerance
    assert abs(clock[0] - sent) <= 60  # the timestamp check alone would accept it
    assert not auth.verify(headers, body)  # replayed later: still refused
    clock[0] = sent + 61  # the timestamp itself is now outside the tolerance
    assert not auth.verify(headers, body)


def test_replay_guard_keys_expire_in_their_own_order() -> None:
    guard = ReplayGuard()
    assert guard.check_and_remember("late", expires=100, now=0)
    assert guard.check_and_remember("early", expires=10, now=0)
    assert guard.check_and_remember("early", expires=30, now=11)  # expired: remembered anew
    assert not guard.check_and_remember("late", expires=100, now=50)  # not dropped with "early"
    assert len(guard) == 1  # "early" (30) has expired by now, "late" (100) has not


def test_full_replay_guard_refuses_what_it_could_no_longer_recognise() -> None:
    guard = ReplayGuard(max_entries=2)
    assert guard.check_and_remember("a", expires=10, now=0)
    assert guard.check_and_remember("b", expires=20, now=0)
    assert guard.check_and_remember("c", expires=30, now=0)  # full: "a" (first to expire) is forgotten
    assert len(guard) == 2
    assert not guard.check_and_remember("a", expires=10, now=1)  # its replay is still refused
    assert not guard.check_and_remember("d", expires=9, now=1)  # as is anything expiring as early
    assert guard.check_and_remember("e", expires=40, now=1)
    assert len(guard) == 2


def test_bearer_and_api_key() -> None:
    bearer = BearerAuth(BearerAuthConfig(type="bearer", token="t"))
    assert bearer.verify(CIMultiDict({"authorization": "bearer t"}), b"")
    assert not bearer.verify(CIMultiDict({"authorization": "Bearer tt"}), b"")
    key = ApiKeyAuth(ApiKeyAuthConfig(type="api_key", key="k"))
    assert key.verify(CIMultiDict({"x-api-key": "k"}), b"")
    assert not key.verify(CIMultiDict(), b"")


@pytest.mark.parametrize(
    ("cfg", "cls"),
    [(HmacAuthConfig(type="hmac", secret="s"), HmacAuth),
     (StandardWebhooksAuthConfig(type="standard_webhooks", secret="s", tolerance=300), StandardWebhooksAuth),
     (BearerAuthConfig(type="bearer", token="t"), BearerAuth),
     (ApiKeyAuthConfig(type="api_key", key="k"), ApiKeyAuth)],
)
def test_build_auth(cfg: object, cls: type) -> None:
    assert isinstance(build_auth(cfg), cls)  # type: ignore[arg-type]
    assert build_auth(None) is None
