"""Function URLs through a real router (issue 13, item 3): plain HTTP to ``/lambda-url/FUNCTION/...`` with
Lambda's URL event, CORS answered by the router, AWS_IAM checked with SigV4 (botocore's signer), and the
AWS CLI's get-function-url-config / list-function-url-configs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.router_process import RouterFactory, RouterProcess, http
from tests.unavailable import unavailable
from tests.waiting import until_sync

REGION = "us-east-1"
KEY_ID, SECRET = "AKIDURLTEST", "url-test-secret"
RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"  # the router's own interpreter

APP = """
import json

def echo(event, context):  # the event, as the body of a structured response with a cookie
    return {"statusCode": 200, "headers": {"Content-Type": "application/json", "X-From": "fn",
                                           "Access-Control-Allow-Origin": "https://evil.example"},
            "cookies": ["seen=1; Path=/"], "body": json.dumps(event)}

def bare(event, context):  # no statusCode: the payload 2.0 inference makes it a 200 JSON body
    return {"hello": event["rawPath"]}

def broken(event, context):
    return {"statusCode": 200, "headers": {"X-Bad": "a\\r\\nX-Injected: 1"}}

def fails(event, context):
    raise RuntimeError("boom")
"""


@pytest.fixture
def urls(router_factory: RouterFactory, tmp_path: Path) -> RouterProcess:
    code = router_factory.write_function("urls", APP)
    return router_factory(f"""
version: 1
server: {{host: 127.0.0.1, port: @PORT@, invoke_keys: {{{KEY_ID}: {SECRET}}}}}
state: sqlite:///{tmp_path / 'state.db'}
aws: {{region: {REGION}, account_id: "123456789012"}}
functions:
  open:
    runtime: {RUNTIME}
    handler: app.echo
    code: {code}
    url:
      auth: NONE
      cors:
        allow_origins: ["https://app.example"]
        allow_methods: [GET, POST]
        allow_headers: [X-Custom, Content-Type]
        expose_headers: [X-From]
        max_age: 300
        allow_credentials: true
  bare: {{runtime: {RUNTIME}, handler: app.bare, code: {code}, url: {{auth: NONE}}}}
  broken: {{runtime: {RUNTIME}, handler: app.broken, code: {code}, url: {{auth: NONE}}}}
  fails: {{runtime: {RUNTIME}, handler: app.fails, code: {code}, url: {{auth: NONE}}}}
  private: {{runtime: {RUNTIME}, handler: app.echo, code: {code}, url: {{auth: AWS_IAM}}}}
  nourl: {{runtime: {RUNTIME}, handler: app.echo, code: {code}}}
routes: []
""")


def test_plain_http_get_and_post_get_lambdas_url_event(urls: RouterProcess) -> None:
    status, headers, body = http("GET", urls.url + "/lambda-url/open/shop/items?id=7&tag=a&tag=b",
                                 headers={"Cookie": "session=abc; theme=dark", "User-Agent": "plain/1"})
    assert status == 200, body
    assert headers["x-from"] == "fn"
    assert headers["set-cookie"].startswith("seen=1")
    event = json.loads(body)
    assert event["version"] == "2.0"
    assert event["routeKey"] == "$default"
    assert event["rawPath"] == "/shop/items"
    assert event["rawQueryString"] == "id=7&tag=a&tag=b"
    assert event["queryStringParameters"] == {"id": "7", "tag": "a,b"}
    assert event["cookies"] == ["session=abc", "theme=dark"]
    assert event["isBase64Encoded"] is False
    assert "body" not in event
    ctx = event["requestContext"]
    assert ctx["routeKey"] == "$default"
    assert ctx["stage"] == "$default"
    assert ctx["accountId"] == "anonymous"
    assert ctx["http"]["method"] == "GET"
    assert ctx["http"]["path"] == "/shop/items"
    assert ctx["http"]["userAgent"] == "plain/1"
    uid = ctx["domainPrefix"]
    assert len(uid) == 32
    assert uid.isalnum()
    assert uid.islower()
    assert ctx["apiId"] == uid
    assert ctx["domainName"] == f"{uid}.lambda-url.{REGION}.on.aws"
    assert "authorizer" not in ctx

    status, _, body = http("POST", urls.url + "/lambda-url/open", json.dumps({"n": 1}).encode())
    assert status == 200, body
    event = json.loads(body)
    assert event["rawPath"] == "/"
    assert event["requestContext"]["http"]["method"] == "POST"
    assert json.loads(event["body"]) == {"n": 1}
    assert event["requestContext"]["domainPrefix"] == uid  # the same id every time

    status, _, body = http("DELETE", urls.url + "/lambda-url/bare/any/thing")
    assert (status, json.loads(body)) == (200, {"hello": "/any/thing"})


def test_errors_and_missing_urls(urls: RouterProcess) -> None:
    status, headers, body = http("GET", urls.url + "/lambda-url/broken/")
    assert (status, body) == (502, b"Internal Server Error")
    assert "x-injected" not in headers
    status, _, body = http("GET", urls.url + "/lambda-url/fails/")
    assert (status, body) == (502, b"Internal Server Error")
    # A body over the limit (server.max_body, Lambda's 6 MB by default): Lambda's URL answer
    status, headers, body = http("POST", urls.url + "/lambda-url/open/", b"x" * (6 * 1024 * 1024 + 1))
    assert status == 413
    assert headers["x-amzn-errortype"] == "RequestEntityTooLargeException"
    assert json.loads(body) == {
        "Message": "Request must be smaller than 6291456 bytes for the InvokeFunction operation"}
    for path in ("/lambda-url/nourl/", "/lambda-url/unknown/x"):
        status, _, body = http("GET", urls.url + path)
        assert status == 404, path
        assert json.loads(body) == {"Message": "Not Found"}
    lines = until_sync(lambda: [r for r in urls.log_records() if "malformed" in str(r.get("message"))],
                       what="the malformed-response line", deadline=20)
    assert lines[0]["function"] == "broken"
    assert "X-Injected" not in urls.logs()


def test_cors_preflight_is_answered_by_the_router_and_responses_carry_cors(urls: RouterProcess) -> None:
    status, headers, body = http("OPTIONS", urls.url + "/lambda-url/open/shop", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-custom"})
    assert (status, body) == (200, b"")  # the function would have answered with the event as body
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert headers["access-control-allow-methods"] == "GET, POST"
    assert headers["access-control-allow-headers"] == "X-Custom, Content-Type"
    assert headers["access-control-max-age"] == "300"
    assert headers["access-control-allow-credentials"] == "true"

    status, headers, _ = http("OPTIONS", urls.url + "/lambda-url/open/shop", headers={
        "Origin": "https://other.example", "Access-Control-Request-Method": "POST"})
    assert status == 200
    assert not [h for h in headers if h.startswith("access-control-")]  # not allowed: the browser refuses

    status, headers, _ = http("GET", urls.url + "/lambda-url/open/shop",
                              headers={"Origin": "https://app.example"})
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://app.example"  # not the function's own
    assert headers["access-control-expose-headers"] == "X-From"
    assert headers["access-control-allow-credentials"] == "true"
    assert "access-control-allow-methods" not in headers


def _signed(url: str, method: str, body: bytes, secret: str = SECRET) -> dict[str, str]:
    request = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(KEY_ID, secret), "lambda", REGION).add_auth(request)
    return dict(request.headers.items())


def test_aws_iam_refuses_unsigned_and_takes_botocore_signatures(urls: RouterProcess) -> None:
    url = urls.url + "/lambda-url/private/orders?x=1"
    status, _, body = http("POST", url, b'{"a":1}')
    assert (status, json.loads(body)) == (403, {"Message": "Forbidden"})
    status, _, body = http("POST", url, b'{"a":1}', headers=_signed(url, "POST", b'{"a":1}', secret="wrong"))
    assert status == 403
    tampered = _signed(url, "POST", b'{"a":1}')
    status, _, _ = http("POST", url, b'{"a":2}', headers=tampered)  # not the body that was signed
    assert status == 403

    status, _, body = http("POST", url, b'{"a":1}', headers=_signed(url, "POST", b'{"a":1}'))
    assert status == 200, body
    event = json.loads(body)
    assert event["rawPath"] == "/orders"
    assert event["body"] == '{"a":1}'
    iam = event["requestContext"]["authorizer"]["iam"]
    assert (iam["accessKey"], iam["accountId"]) == (KEY_ID, "123456789012")
    assert event["requestContext"]["accountId"] == "123456789012"


def test_open_urls_are_logged_at_start(urls: RouterProcess) -> None:
    line = until_sync(lambda: [r for r in urls.log_records() if "auth NONE" in str(r.get("message"))],
                      what="the open-URL line", deadline=20)[0]
    assert line["level"] == "warning"
    assert "bare, broken, fails, open" in str(line["message"])
    assert "private" not in str(line["message"])


def test_aws_cli_get_function_url_config(urls: RouterProcess, tmp_path: Path) -> None:
    aws = shutil.which("aws") or str(Path(sys.executable).with_name("aws"))
    if not Path(aws).exists():
        unavailable("the AWS CLI (aws) is not installed; pip install awscli")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([aws, "lambda", *args, "--endpoint-url", urls.url, "--output", "json"],
                              capture_output=True, text=True, env=env, timeout=60)

    done = cli("get-function-url-config", "--function-name", "open")
    assert done.returncode == 0, done.stderr
    got: dict[str, Any] = json.loads(done.stdout)
    assert got["FunctionUrl"] == urls.url + "/lambda-url/open/"
    assert got["FunctionArn"] == f"arn:aws:lambda:{REGION}:123456789012:function:open"
    assert (got["AuthType"], got["InvokeMode"]) == ("NONE", "BUFFERED")
    assert got["Cors"]["AllowOrigins"] == ["https://app.example"]
    assert got["Cors"]["MaxAge"] == 300
    status, _, _ = http("GET", got["FunctionUrl"])  # the URL it gives answers
    assert status == 200

    done = cli("list-function-url-configs", "--function-name", "private")
    assert done.returncode == 0, done.stderr
    (config,) = json.loads(done.stdout)["FunctionUrlConfigs"]
    assert config["AuthType"] == "AWS_IAM"
    done = cli("get-function-url-config", "--function-name", "nourl")
    assert done.returncode != 0
    assert "ResourceNotFoundException" in done.stderr


def test_the_url_host_form_reaches_the_function_with_its_whole_path(urls: RouterProcess) -> None:
    _, _, body = http("GET", urls.url + "/lambda-url/open/")
    domain = json.loads(body)["requestContext"]["domainName"]
    status, _, body = http("GET", urls.url + "/shop/items?id=1", headers={"Host": f"{domain}:{urls.port}"})
    assert status == 200, body
    event = json.loads(body)
    assert event["rawPath"] == "/shop/items"
    assert event["requestContext"]["domainName"] == domain
    # Any path, even one the router serves itself, is the function's on its URL host.
    status, _, body = http("GET", urls.url + "/metrics", headers={"Host": domain})
    assert (status, json.loads(body)["rawPath"]) == (200, "/metrics")
    # Another URL id, or another region, is not a function URL.
    other = "a" * 32 + domain[32:]
    status, _, _ = http("GET", urls.url + "/shop", headers={"Host": other})
    assert status == 404
    status, _, _ = http("GET", urls.url + "/metrics", headers={"Host": domain.replace(REGION, "eu-west-1")})
    assert status == 200  # the router's own /metrics: the host named no function
