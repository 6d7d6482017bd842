"""Property-based test (hypothesis) of webhook routes over real sockets, against a real router process:
random methods, paths, queries, headers (bytes above 0x7f included), cookies, content types and bodies
sent to sync, async and authenticated routes never get a 5xx from the router itself, never an answer or a
log line holding a secret, and never a traceback in the router's log. aiohttp's own parser sees the
bytes here, which the mocked requests of test_fuzz_apigw.py skip. Deterministic (``derandomize``).

Credential headers stay ASCII here; non-ASCII credentials (once a 500) have their own test in
test_fuzz_invoke_api.py.
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.router_process import RouterFactory, RouterProcess

SECRET = f"s-{uuid.uuid4().hex}"
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

ROUTES = {
    "sync": "/sync/{rest+}",
    "async": "/async",
    "hmac": "/hmac",
    "standard": "/standard",
    "bearer": "/bearer",
    "apikey": "/apikey",
}


@pytest.fixture
def webhook_router(router_factory: RouterFactory, tmp_path: Path) -> Iterator[RouterProcess]:
    router_factory.write_function("echo", """
        import json
        def handler(event, context):
            return {"statusCode": 200, "headers": {"X-Seen": str(len(event.get("headers", {})))},
                    "body": json.dumps({"path": event["rawPath"], "n": len(event.get("body") or "")})}
    """)
    auth = {
        "hmac": '{type: hmac, secret: "${SECRET}", header: X-Hub-Signature-256, prefix: "sha256="}',
        "standard": '{type: standard_webhooks, secret: "${SECRET}"}',
        "bearer": '{type: bearer, token: "${SECRET}"}',
        "apikey": '{type: api_key, key: "${SECRET}"}',
    }
    routes = "\n".join(
        f"          - name: {name}\n"
        f"            source: {{type: webhook, path: \"{path}\", methods: [ANY]"
        + (f", auth: {auth[name]}" if name in auth else "") + "}\n"
        "            function: echo\n"
        + ("            invocation: async\n" if name == "async" else "")
        for name, path in ROUTES.items())
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, max_body: 64KB}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          echo:
            runtime: python3.11
            handler: app.handler
            code: {tmp_path / 'functions' / 'echo'}
            environment: {{TOKEN: "${{SECRET}}"}}
            timeout: 5s
        routes:
{routes}
    """, env={"SECRET": SECRET})
    yield rp
    logs = rp.logs()
    rp.stop()
    assert SECRET not in logs, "a secret in the router's log"
    at = logs.find("Traceback")
    assert at < 0, "a traceback in the router's log: " + logs[max(0, at - 300):][:1500]


TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
token = st.text(st.sampled_from(TCHAR), min_size=1, max_size=16)
latin1 = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                 max_size=40)
ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
CREDENTIAL_HEADERS = {"authorization", "x-api-key", "x-hub-signature-256", "webhook-id", "webhook-timestamp",
                      "webhook-signature", "host", "content-length", "transfer-encoding", "connection",
                      "expect", "upgrade"}
credentials = st.fixed_dictionaries({}, optional={
    "Authorization": st.one_of(st.just(f"Bearer {SECRET}"), st.just(f"bearer {SECRET} "), ascii_text),
    "X-Api-Key": st.one_of(st.just(SECRET), ascii_text),
    "X-Hub-Signature-256": st.one_of(st.just("sha256=" + "0" * 64), ascii_text),
    "webhook-id": ascii_text,
    "webhook-timestamp": st.one_of(st.integers(-(10**12), 10**12).map(str), ascii_text),
    "webhook-signature": st.one_of(st.just("v1,AAAA"), ascii_text),
})


@FUZZ
@given(
    route=st.sampled_from(list(ROUTES)),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "PROPFIND"]),
    rest=st.lists(st.text(max_size=8), max_size=4),
    query=st.lists(st.tuples(st.text(max_size=6), st.text(max_size=6)), max_size=4),
    headers=st.lists(st.tuples(token, latin1).filter(lambda h: h[0].lower() not in CREDENTIAL_HEADERS),
                     max_size=6),
    creds=credentials,
    content_type=st.one_of(st.none(), st.sampled_from(["application/json", "text/plain; charset=latin-1",
                                                       "application/x-www-form-urlencoded", "image/png",
                                                       "multipart/form-data; boundary=x"]), latin1),
    body=st.one_of(st.binary(max_size=300), st.text(max_size=100).map(str.encode), st.just(b"")),
)
def test_fuzz_webhook_requests_never_5xx_nor_a_secret(
    webhook_router: RouterProcess, route: str, method: str, rest: list[str], query: list[tuple[str, str]],
    headers: list[tuple[str, str]], creds: dict[str, str], content_type: str | None, body: bytes,
) -> None:
    path = ROUTES[route].replace("{rest+}", "/".join(quote(r, safe="") or "x" for r in rest) or "x")
    if query:
        path += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
    all_headers = [*headers, *creds.items()]
    if content_type is not None:
        all_headers.append(("Content-Type", content_type.strip()))
    conn = http.client.HTTPConnection("127.0.0.1", webhook_router.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in all_headers:
            conn.putheader(name, value.strip())
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        answer = data.decode("latin-1") + "".join(f"{k}: {v}\n" for k, v in resp.getheaders())
    finally:
        conn.close()
    assert resp.status < 500, f"{resp.status} for {method} {path} {all_headers}: {data[:300]!r}"
    assert SECRET not in answer
    # hmac and standard: no valid signature can be drawn; a wrong key or token, or none: refused
    authentic = (route == "apikey" and creds.get("X-Api-Key") == SECRET) or (
        route == "bearer" and creds.get("Authorization", "").lower().strip() == "bearer " + SECRET)
    if route in ("hmac", "standard", "apikey", "bearer") and not authentic:
        assert resp.status == 401, f"{resp.status} for {route} without valid credentials"
    if route == "sync" and method != "HEAD":
        assert resp.status == 200, f"{resp.status}: {data[:300]!r}"
        assert json.loads(data)["path"].startswith("/sync/")
