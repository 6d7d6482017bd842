"""Who may use the Invoke API and the endpoints beside it (invocation status, the admin API, Lambda's
control operations): ``server.invoke_token`` (``Authorization: Bearer`` or ``X-Api-Key``) or a SigV4
signature with a key of ``server.invoke_keys``; with neither set, anyone who reaches the port.

Credentials are checked before anything else (DESIGN §9a): a stranger gets 403 whatever the path names.
A SigV4 request is checked as far as it can be without its body (key, date, signed headers) before the
body is read, then the signature over the body.
"""

from __future__ import annotations

import hmac
import logging

from aiohttp import web

from router.http import aws_errors, sigv4
from router.http.context import CTX
from router.http.limits import BodyTooLarge, read_body

log = logging.getLogger("router.http.invoke_api")

SOURCE = "invoke_api"


def _authorized(request: web.Request, token: str) -> bool:
    want = token.encode()
    auth = request.headers.get("Authorization", "")
    scheme, _, given = auth.partition(" ")
    raw = given.strip().encode("utf-8", "surrogateescape")  # aiohttp's decoding of non-UTF-8 bytes
    ok = scheme.lower() == "bearer" and hmac.compare_digest(raw, want)
    api_key = request.headers.get("X-Api-Key")
    if api_key is not None:
        ok = hmac.compare_digest(api_key.encode("utf-8", "surrogateescape"), want) or ok
    return ok


def refusal(token: str | None, keys: dict[str, str]) -> str:
    ways = []
    if token:
        ways.append("'Authorization: Bearer <token>' or 'X-Api-Key: <token>' (server.invoke_token)")
    if keys:
        ways.append("an AWS SigV4 signature with a key of server.invoke_keys (the AWS SDKs and CLI sign "
                    "with their configured credentials)")
    return "Invoke API: missing or wrong credentials; send " + ", or ".join(ways)


async def authenticate(request: web.Request, request_id: str, limit: int) -> bytes | web.Response:
    """Authenticate before anything else (no function lookup, DryRun or payload check for strangers);
    return the body (at most ``limit`` bytes), read once its request could be genuine, or the error
    response (403 AccessDeniedException or a SigV4 error, 413 over ``limit``)."""
    server = request.app[CTX].config.server
    token, keys = server.invoke_token, server.invoke_keys
    check_signature = False
    if (token or keys) and not (token and _authorized(request, token)):
        if not (keys and sigv4.is_signed(request.headers)):
            log.info("invoke api: request refused, missing or wrong credentials", extra={"source": SOURCE})
            return aws_errors.access_denied(refusal(token, keys), request_id)
        try:
            sigv4.check_headers(request.headers, keys)  # what can be checked before reading the body
        except sigv4.SignatureError as exc:
            return _signature_refused(exc, request_id)
        check_signature = True
    try:
        body = await read_body(request, limit)
    except BodyTooLarge:
        log.info("invoke api: request body over %d bytes refused (413); server.max_body raises the limit",
                 limit, extra={"source": SOURCE})
        return aws_errors.too_large(limit, request_id)
    if check_signature:
        try:
            sigv4.verify(sigv4.SignedRequest(request.method, request.raw_path, request.headers, body), keys)
        except sigv4.SignatureError as exc:
            return _signature_refused(exc, request_id)
    return body


def _signature_refused(exc: sigv4.SignatureError, request_id: str) -> web.Response:
    log.info("invoke api: request refused, %s: %s", exc.code, exc.message, extra={"source": SOURCE})
    return aws_errors.aws_error(403, exc.code, exc.message, request_id)
