"""Webhook routes with ``payload: v1`` and ``payload: alb`` through a real router: AWS Lambda Powertools'
``APIGatewayRestResolver`` and ``ALBResolver`` answer unchanged (issue 13, item 5)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.router_process import RouterFactory, http
from tests.unavailable import unavailable
from tests.waiting import until_sync

RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"  # the router's own interpreter

APP = """
import json
from aws_lambda_powertools.event_handler import ALBResolver, APIGatewayRestResolver, Response

rest = APIGatewayRestResolver()
lb = ALBResolver()

for app in (rest, lb):
    @app.get("/items/<item_id>")
    def get_item(item_id):
        r = app.current_event
        return {"item": item_id, "q": r.get_query_string_value("q"),
                "tags": r.get_multi_value_query_string_values("tag") or [],
                "agent": r.headers.get("user-agent"), "path": r.path, "method": r.http_method}

    @app.post("/items")
    def create_item():
        body = app.current_event.json_body
        return Response(status_code=201, content_type="application/json", body=json.dumps({"created": body}),
                        headers={"X-Item": body["name"]}, cookies=[])

    @app.get("/broken")
    def broken():
        raise RuntimeError("the handler failed")


def rest_handler(event, context):
    return rest.resolve(event, context)


def alb_handler(event, context):
    return lb.resolve(event, context)


def raw_handler(event, context):  # returns the X-Answer header's value as the whole response
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    return headers["x-answer"]
"""


def _need_powertools() -> None:
    if importlib.util.find_spec("aws_lambda_powertools") is None:
        unavailable("aws-lambda-powertools is not installed (pip install -e '.[test]')")


@pytest.fixture
def shapes_router(router_factory: RouterFactory, tmp_path: Path):  # type: ignore[no-untyped-def]
    _need_powertools()
    code = router_factory.write_function("shapes", APP)
    return router_factory(f"""
version: 1
server: {{host: 127.0.0.1, port: @PORT@}}
state: sqlite:///{tmp_path / 'state.db'}
functions:
  rest: {{runtime: {RUNTIME}, handler: app.rest_handler, code: {code}}}
  raw: {{runtime: {RUNTIME}, handler: app.raw_handler, code: {code}}}
routes:
  - name: rest
    source: {{type: webhook, path: "/{{proxy+}}", methods: [ANY], payload: v1}}
    function: rest
  - {{name: rawv1, source: {{type: webhook, path: /raw/v1, payload: v1}}, function: raw}}
  - {{name: rawalb, source: {{type: webhook, path: /raw/alb, payload: alb}}, function: raw}}
""")


def test_powertools_rest_resolver_on_a_v1_route(shapes_router) -> None:  # type: ignore[no-untyped-def]
    url = shapes_router.url
    status, headers, body = http("GET", url + "/items/42?q=find&tag=a&tag=b", headers={"User-Agent": "t/1"})
    assert status == 200, body
    assert json.loads(body) == {"item": "42", "q": "find", "tags": ["a", "b"], "agent": "t/1",
                                "path": "/items/42", "method": "GET"}
    assert headers["x-amzn-requestid"]
    status, headers, body = http("POST", url + "/items", json.dumps({"name": "pen"}).encode())
    assert status == 201, body
    assert json.loads(body) == {"created": {"name": "pen"}}
    assert headers["x-item"] == "pen"
    status, _, body = http("GET", url + "/nowhere")
    assert status == 404  # Powertools' own not-found answer, passed through
    status, _, body = http("GET", url + "/broken")
    assert status == 502  # the function raised: API Gateway's answer to a function error
    assert json.loads(body) == {"message": "Internal server error"}


def test_alb_resolver_answers_its_routes(router_factory: RouterFactory, tmp_path: Path) -> None:
    _need_powertools()
    code = router_factory.write_function("shapes", APP)
    rp = router_factory(f"""
version: 1
server: {{host: 127.0.0.1, port: @PORT@}}
state: sqlite:///{tmp_path / 'state.db'}
functions:
  lb: {{runtime: {RUNTIME}, handler: app.alb_handler, code: {code}}}
routes:
  - name: one
    source: {{type: webhook, path: "/items/{{id}}", methods: [GET], payload: alb}}
    function: lb
  - name: many
    source: {{type: webhook, path: /items, methods: [POST], payload: alb, alb_multi_value_headers: true}}
    function: lb
""")
    status, headers, body = http("GET", rp.url + "/items/7?q=x&tag=a&tag=b", headers={"User-Agent": "t/2"})
    assert status == 200, body
    got = json.loads(body)
    assert got["item"] == "7"
    assert got["q"] == "x"
    assert got["agent"] == "t/2"
    assert "apigw-requestid" not in headers  # a load balancer adds no request id header
    status, headers, body = http("POST", rp.url + "/items", json.dumps({"name": "ink"}).encode())
    assert status == 201, body
    assert json.loads(body) == {"created": {"name": "ink"}}
    assert headers["x-item"] == "ink"


def test_malformed_responses_are_502_in_each_gateways_words(shapes_router) -> None:  # type: ignore[no-untyped-def]
    url = shapes_router.url
    # A bare string: v2 would answer it as the body; a REST API and a load balancer do not.
    status, headers, body = http("POST", url + "/raw/v1", b"{}", headers={"X-Answer": "just text"})
    assert status == 502
    assert json.loads(body) == {"message": "Internal server error"}
    status, headers, body = http("POST", url + "/raw/alb", b"{}", headers={"X-Answer": "just text"})
    assert status == 502
    assert headers["content-type"].startswith("text/html")
    assert b"502 Bad Gateway" in body

    def lines() -> list[dict[str, object]]:
        return [r for r in shapes_router.log_records()
                if r.get("logger") == "router.sources.webhook" and "malformed" in str(r.get("message"))]

    found = until_sync(lambda: len(lines()) >= 2 and lines(), what="two malformed-response lines",
                       deadline=20)
    assert {r["route"] for r in found} == {"rawv1", "rawalb"}
    assert all("answered 502" in str(r["message"]) for r in found)
    assert any("payload: v1" in str(r["message"]) for r in found)
    assert not [r for r in shapes_router.log_records() if r.get("logger") == "router.function"
                and "Traceback" in str(r.get("message"))]  # the function itself succeeded
