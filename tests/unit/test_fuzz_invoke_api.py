"""Property-based test (hypothesis) of the Invoke API's request headers against a real router process:
random ``X-Amz-Invocation-Type``, ``X-Amz-Log-Type``, ``X-Amz-Client-Context``, credentials, function
names, ARNs and qualifiers never get a 5xx, and no answer (nor the router's log) carries a secret.
Deterministic (``derandomize``) so CI runs the same examples every time.
"""

from __future__ import annotations

import base64
import http.client
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.router_process import RouterFactory, RouterProcess

TOKEN = f"tok-{uuid.uuid4().hex}"
FN_SECRET = f"fn-{uuid.uuid4().hex}"
SECRETS = (TOKEN, FN_SECRET)

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture
def invoke_router(router_factory: RouterFactory, tmp_path: Path) -> Iterator[RouterProcess]:
    router_factory.write_function("client", """
        import os
        def handler(event, context):
            cc = context.client_context
            return {"custom": getattr(cc, "custom", None), "env": getattr(cc, "env", None),
                    "has_secret": bool(os.environ.get("API_KEY"))}
    """)
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, invoke_token: "${{INVOKE_TOKEN}}"}}
        state: sqlite:///{tmp_path / 'state.db'}
        aws: {{region: us-east-1, account_id: "123456789012"}}
        functions:
          echo:
            runtime: python3.11
            handler: app.handler
            code: {Path(__file__).resolve().parents[1] / 'fixtures' / 'functions' / 'echo'}
            environment: {{API_KEY: "${{FN_SECRET}}"}}
            timeout: 5s
          client:
            runtime: python3.11
            handler: app.handler
            code: {tmp_path / 'functions' / 'client'}
            environment: {{API_KEY: "${{FN_SECRET}}"}}
            timeout: 5s
        routes:
          - name: hook
            source: {{type: webhook, path: /hook, auth: {{type: bearer, token: "${{INVOKE_TOKEN}}"}}}}
            function: echo
    """, env={"INVOKE_TOKEN": TOKEN, "FN_SECRET": FN_SECRET})
    yield rp
    logs = rp.logs()
    rp.stop()
    for secret in SECRETS:
        assert secret not in logs, "a secret in the router's log"


printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
latin1 = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                 max_size=40)
json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8)
client_context = st.one_of(
    st.none(),
    json_value.map(lambda v: base64.b64encode(json.dumps(v).encode()).decode()),
    st.fixed_dictionaries({"custom": json_value, "env": json_value, "client": json_value}).map(
        lambda v: base64.b64encode(json.dumps(v).encode()).decode()),
    st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
    printable, latin1,
    st.just("A" * 5000),
)
name = st.one_of(
    st.sampled_from(["echo", "client", "nope", "echo:$LATEST", "echo:prod", "client:1",
                     "123456789012:function:echo", "arn:aws:lambda:us-east-1:123456789012:function:echo",
                     "arn:aws:lambda:eu-west-1:123456789012:function:echo:$LATEST",
                     "arn:aws:lambda:us-east-1:000000000000:function:client", "", ":", "a" * 200]),
    st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_:$."), min_size=1, max_size=30),
)
credentials = st.sampled_from(["bearer", "api-key", "both", "none", "wrong", "bearer-lower", "garbage"])


def _auth(kind: str, junk: str) -> dict[str, str]:
    return {
        "bearer": {"Authorization": f"Bearer {TOKEN}"},
        "bearer-lower": {"Authorization": f"bearer {TOKEN}"},
        "api-key": {"X-Api-Key": TOKEN},
        "both": {"Authorization": "Bearer wrong", "X-Api-Key": TOKEN},
        "none": {},
        "wrong": {"Authorization": f"Bearer {TOKEN[:-1]}", "X-Api-Key": TOKEN + "x"},
        "garbage": {"Authorization": junk, "X-Api-Key": junk},
    }[kind]


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


@FUZZ
@given(
    function=name,
    qualifier=_optional(st.one_of(st.sampled_from(["$LATEST", "prod", "1", ""]), printable)),
    invocation_type=_optional(st.one_of(st.sampled_from(["RequestResponse", "Event", "DryRun", "event", ""]),
                                        latin1)),
    log_type=_optional(st.one_of(st.sampled_from(["Tail", "None", "tail", ""]), latin1)),
    context=client_context,
    auth=credentials,
    junk=printable,  # non-ASCII credentials: see test_non_ascii_credentials_are_refused_not_a_500
    body=st.one_of(json_value.map(lambda v: json.dumps({"payload": v}).encode()), st.binary(max_size=60),
                   st.just(b"")),
)
def test_fuzz_invoke_headers_never_5xx_nor_a_secret(
    invoke_router: RouterProcess, function: str, qualifier: str | None, invocation_type: str | None,
    log_type: str | None, context: str | None, auth: str, junk: str, body: bytes,
) -> None:
    headers = {"Content-Type": "application/json", **_auth(auth, junk.strip())}
    for key, value in (("X-Amz-Invocation-Type", invocation_type), ("X-Amz-Log-Type", log_type),
                       ("X-Amz-Client-Context", context)):
        if value is not None:
            headers[key] = value.strip()
    path = f"/2015-03-31/functions/{quote(function, safe=':$')}/invocations"
    if qualifier is not None:
        path += "?Qualifier=" + quote(qualifier, safe="")
    conn = http.client.HTTPConnection("127.0.0.1", invoke_router.port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        answer = data.decode("latin-1") + "".join(f"{k}: {v}\n" for k, v in resp.getheaders())
    finally:
        conn.close()
    assert resp.status < 500, f"{resp.status} for {headers} {path}: {data[:500]!r}"
    for secret in SECRETS:
        assert secret not in answer, f"a secret in the answer to {path}"
    if function and (auth in ("none", "wrong") or (auth == "garbage" and TOKEN not in junk)):
        assert resp.status == 403, f"{resp.status} without credentials: {data[:300]!r}"


@pytest.mark.parametrize(("path", "header", "refusal"), [
    ("/2015-03-31/functions/echo/invocations", "X-Api-Key", 403),
    ("/2015-03-31/functions/echo/invocations", "Authorization", 403),
    ("/hook", "Authorization", 401),  # a webhook route with bearer auth
])
def test_non_ascii_credentials_are_refused_not_a_500(invoke_router: RouterProcess, path: str, header: str,
                                                     refusal: int) -> None:
    value = "\xb9" if header == "X-Api-Key" else "Bearer \xe9t\xe9"  # sent as latin-1 bytes by http.client
    conn = http.client.HTTPConnection("127.0.0.1", invoke_router.port, timeout=30)
    try:
        conn.request("POST", path, body=b"{}", headers={header: value})
        status = conn.getresponse().status
    finally:
        conn.close()
    assert status == refusal
