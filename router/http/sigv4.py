"""Verify AWS Signature Version 4 on Invoke API requests, so the AWS SDKs and CLI authenticate with keys.

With ``server.invoke_keys`` (access key id -> secret access key) set, boto3, the AWS CLI and every SDK
sign their requests as they do for AWS; the router recomputes the signature from the request it
received and compares. The algorithm is AWS's (docs: "Create a signed AWS API request"): canonical
request (method, the path URI-encoded once more, the query sorted, the signed headers, the payload's
SHA-256), string to sign with the credential scope, and the HMAC-SHA256 key chain of the secret, date,
region, service. Only the ``Authorization`` header form is accepted (not presigned URLs), and requests
whose ``X-Amz-Date`` is more than 15 minutes away from the router's clock are refused, as AWS does.

The payload is always part of the signature: the canonical request carries the SHA-256 of the body the
router received, never the client's word for it. ``X-Amz-Content-Sha256: UNSIGNED-PAYLOAD`` (an Amazon
S3 option, which Lambda does not offer; the SDKs sign Lambda payloads) is refused, so a captured request
cannot be replayed with another body within its 15 minutes.

``check_headers`` does every check that needs no body (form, key, date, signed headers), so a request
that cannot be valid is refused before its body is read; ``verify`` does them again and the rest.

A proxy in front of the router must not rewrite the ``Host`` header: it is part of what is signed.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from multidict import CIMultiDictProxy

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = 15 * 60.0
"""Seconds the request's ``X-Amz-Date`` may differ from the router's clock."""

_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/,\s]+)/"
    r"(?P<service>[^/,\s]+)/aws4_request\s*,\s*SignedHeaders=(?P<signed>[a-z0-9;\-_.]+)\s*,\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})\s*$"
)
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


class SignatureError(Exception):
    """Why a signed request is refused: ``code`` is the AWS error code the SDKs understand."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What the router received, as it was on the wire."""

    method: str
    raw_path: str
    """Path and query exactly as sent (percent-encoded), e.g. ``/2015-03-31/functions/f/invocations``."""
    headers: CIMultiDictProxy[str]
    body: bytes


def is_signed(headers: Mapping[str, str]) -> bool:
    return headers.get("Authorization", "").startswith(ALGORITHM)


def check_headers(headers: Mapping[str, str], keys: Mapping[str, str], *, now: float | None = None) -> str:
    """The checks that need no body: the header's form, a known key, the date, ``host`` signed and a
    payload hash that is not ``UNSIGNED-PAYLOAD``. Returns the access key id; raises ``SignatureError``."""
    m, _, _ = _parse(headers, keys, now)
    return m["key"]


def verify(request: SignedRequest, keys: Mapping[str, str], *, now: float | None = None) -> str:
    """Check the request's SigV4 signature against ``keys``; return the access key id it was signed with.

    Raises ``SignatureError`` (``UnrecognizedClientException`` for an unknown key,
    ``InvalidSignatureException`` for a malformed, expired or wrong signature, or a body that is not the
    one signed).
    """
    m, secret, amz_date = _parse(request.headers, keys, now)
    scope = f"{m['date']}/{m['region']}/{m['service']}/aws4_request"
    string_to_sign = "\n".join((
        ALGORITHM, amz_date, scope,
        hashlib.sha256(canonical_request(request, m["signed"].split(";"))
                       .encode("utf-8", "surrogateescape")).hexdigest(),  # the bytes as they arrived
    ))
    key = ("AWS4" + secret).encode()
    for part in (m["date"], m["region"], m["service"], "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, m["signature"]):
        raise SignatureError(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your "
            "AWS Secret Access Key and signing method.")
    return m["key"]


def _auth(headers: Mapping[str, str]) -> re.Match[str]:
    m = _AUTH.match(headers.get("Authorization", ""))
    if m is None:
        raise SignatureError("InvalidSignatureException",
                             "Authorization header is not a valid AWS4-HMAC-SHA256 signature")
    return m


def _parse(headers: Mapping[str, str], keys: Mapping[str, str],
           now: float | None) -> tuple[re.Match[str], str, str]:
    m = _auth(headers)
    secret = keys.get(m["key"])
    if secret is None:
        raise SignatureError("UnrecognizedClientException",
                             "The security token included in the request is invalid.")
    amz_date = headers.get("X-Amz-Date", "")
    try:
        signed_at = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        raise SignatureError("InvalidSignatureException",
                             "X-Amz-Date is missing or not in the form 20260101T000000Z") from None
    now = time.time() if now is None else now
    if abs(now - signed_at) > MAX_SKEW or not amz_date.startswith(m["date"]):
        raise SignatureError("InvalidSignatureException",
                             f"Signature expired: {amz_date} is more than 15 minutes from the server's "
                             "time, or does not match the credential scope's date")
    if "host" not in m["signed"].split(";"):
        raise SignatureError("InvalidSignatureException", "the host header must be signed")
    claimed = headers.get("X-Amz-Content-Sha256")
    if claimed is not None and not _SHA256_HEX.fullmatch(claimed):
        raise SignatureError(
            "InvalidSignatureException",
            f"X-Amz-Content-Sha256 must be the hex SHA-256 of the body, got {claimed[:40]!r}; the Invoke "
            "API does not take unsigned or streamed payloads (UNSIGNED-PAYLOAD is an Amazon S3 option): "
            "sign the payload, as the AWS SDKs and CLI do for Lambda")
    return m, secret, amz_date


def canonical_request(request: SignedRequest, signed_headers: list[str]) -> str:
    """SigV4's canonical request, as botocore builds it for every service but S3."""
    path, _, query = request.raw_path.partition("?")
    canonical_uri = quote(path or "/", safe="/~")  # non-S3 services: the encoded path encoded again
    pairs = sorted(tuple(p.partition("=")[::2]) for p in query.split("&")) if query else []
    canonical_query = "&".join(f"{k}={v}" for k, v in pairs)
    lines = []
    for name in signed_headers:
        values = request.headers.getall(name, [])
        lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}\n")
    # Always the hash of the body received: what the client claims in X-Amz-Content-Sha256 must agree.
    payload_hash = hashlib.sha256(request.body).hexdigest()
    claimed = request.headers.get("X-Amz-Content-Sha256")
    if claimed is not None and claimed.lower() != payload_hash:
        raise SignatureError("InvalidSignatureException",
                             "X-Amz-Content-Sha256 does not match the request body")
    return "\n".join((request.method.upper(), canonical_uri, canonical_query, "".join(lines),
                      ";".join(signed_headers), payload_hash))
