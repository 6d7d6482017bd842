"""``headers_pass``: what each webhook auth can check before the body is read (DESIGN §9a)."""

from __future__ import annotations

import pytest

from router.config.models import (
    ApiKeyAuthConfig,
    BearerAuthConfig,
    HmacAuthConfig,
    StandardWebhooksAuthConfig,
)
from router.http.webhook_auth import headers_pass

NOW = 1_700_000_000


def test_no_auth_passes() -> None:
    assert headers_pass(None, {})


def test_bearer_and_api_key_are_checked_fully() -> None:
    bearer = BearerAuthConfig(type="bearer", token="t0k")
    assert headers_pass(bearer, {"Authorization": "Bearer t0k"})
    assert not headers_pass(bearer, {"Authorization": "Bearer nope"})
    assert not headers_pass(bearer, {})
    key = ApiKeyAuthConfig(type="api_key", key="k3y")
    assert headers_pass(key, {"X-Api-Key": "k3y"})
    assert not headers_pass(key, {"X-Api-Key": "other"})


def test_hmac_needs_its_signature_header_with_the_prefix() -> None:
    cfg = HmacAuthConfig(type="hmac", secret="s")
    assert headers_pass(cfg, {"X-Hub-Signature-256": "sha256=abc"})  # the body decides later
    assert not headers_pass(cfg, {})
    assert not headers_pass(cfg, {"X-Hub-Signature-256": "sha1=abc"})


@pytest.mark.parametrize(("headers", "ok"), [
    ({"webhook-id": "m", "webhook-timestamp": str(NOW), "webhook-signature": "v1,x"}, True),
    ({"webhook-id": "m", "webhook-timestamp": str(NOW - 301), "webhook-signature": "v1,x"}, False),
    ({"webhook-id": "m", "webhook-timestamp": str(NOW + 301), "webhook-signature": "v1,x"}, False),
    ({"webhook-id": "m", "webhook-timestamp": "soon", "webhook-signature": "v1,x"}, False),
    ({"webhook-timestamp": str(NOW), "webhook-signature": "v1,x"}, False),
    ({"webhook-id": "m", "webhook-timestamp": str(NOW)}, False),
])
def test_standard_webhooks_needs_its_headers_and_a_timestamp_in_tolerance(headers: dict[str, str],
                                                                           ok: bool) -> None:
    cfg = StandardWebhooksAuthConfig(type="standard_webhooks", secret="whsec_AAAA", tolerance=300)
    assert headers_pass(cfg, headers, now=NOW) is ok
