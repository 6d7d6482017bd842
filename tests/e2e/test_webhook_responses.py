"""A function's malformed response through a real router: API Gateway's 500, counted as sent (issue 9).

Before, a header value or cookie with CR/LF, or an empty header name, gave the client an empty reply
while ``router_webhook_requests_total`` counted a 200.
"""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.router_process import RouterFactory, http
from tests.waiting import until_sync

MALFORMED = [
    {"statusCode": 200, "headers": {"X-A": "a\r\nX-Injected: 1"}, "body": "hi"},
    {"statusCode": 200, "headers": {"": "empty name"}},
    {"statusCode": 200, "headers": {"Bad Name": "v"}},
    {"statusCode": 200, "cookies": ["a=1\r\nSet-Cookie: evil=1"]},
    {"statusCode": 200, "multiValueHeaders": {"X-M": ["ok", "b\nX-Injected: 2"]}},
    {"statusCode": 200, "headers": {"X-Nul": "a\u0000b"}},
    {"statusCode": 101},
]


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, _, body = http("GET", url + "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def test_malformed_function_responses_are_500_json_and_counted_as_500(
        router_factory: RouterFactory, tmp_path: Path) -> None:
    code = router_factory.write_function("mirror", """
        import json
        def handler(event, context):
            return json.loads(event["body"])  # the response the test asks for
    """)
    rp = router_factory(f"""
version: 1
server: {{host: 127.0.0.1, port: @PORT@}}
state: sqlite:///{tmp_path / 'state.db'}
functions:
  mirror: {{runtime: python3.11, handler: app.handler, code: {code}}}
routes:
  - {{name: mirror, source: {{type: webhook, path: /mirror}}, function: mirror}}
""")
    request_ids = []
    for value in MALFORMED:
        status, headers, body = http("POST", rp.url + "/mirror", json.dumps(value).encode())
        assert status == 500, (value, body)
        assert headers["content-type"].startswith("application/json")
        assert json.loads(body) == {"message": "Internal Server Error"}
        assert "x-injected" not in headers
        assert "evil" not in headers.get("set-cookie", "")
        request_ids.append(headers["apigw-requestid"])
    status, headers, body = http("POST", rp.url + "/mirror", json.dumps(
        {"statusCode": 201, "headers": {"X-Fine": "yes"}, "cookies": ["c=1"], "body": "ok"}).encode())
    assert (status, headers["x-fine"], body) == (201, "yes", b"ok")

    samples = _samples(rp.url)
    requests = "router_webhook_requests_total"
    assert samples[(requests, (("route", "mirror"), ("status", "500")))] == len(MALFORMED)
    assert samples[("router_webhook_requests_total", (("route", "mirror"), ("status", "201")))] == 1
    assert ("router_webhook_requests_total", (("route", "mirror"), ("status", "200"))) not in samples

    # One line each, naming the route, function and request, never what the function put in a header.
    def malformed_lines() -> list[dict[str, object]]:
        return [r for r in rp.log_records() if "malformed" in str(r.get("message", ""))]

    lines = until_sync(lambda: len(malformed_lines()) >= len(MALFORMED) and malformed_lines(),
                       what="one log line per malformed response", deadline=20)
    assert sorted(str(r["request_id"]) for r in lines) == sorted(request_ids)
    assert {(r["route"], r["function"], r["level"]) for r in lines} == {("mirror", "mirror", "error")}
    logs = rp.logs()
    for leaked in ("X-Injected", "evil=1", "empty name"):
        assert leaked not in logs
    assert rp.stop() == 0
