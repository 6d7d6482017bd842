"""LambdaInvoker against real Lambda Invoke APIs: a second router process, moto_server, and small aiohttp
servers that answer with Lambda's error responses (for the codes the other two cannot produce)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiohttp import web

from router.config.models import AwsConfig, FunctionConfig
from router.invocation import ErrorType, Invocation, Outcome, Result
from router.invokers.lambda_ import LambdaInvoker
from tests.router_process import RouterFactory, RouterProcess, free_port, http
from tests.waiting import until, until_sync

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
}


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


# --- a second router process serving the Invoke API ----------------------------------------------------


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    tmp = tmp_path_factory.mktemp("remote")
    factory = RouterFactory(tmp)
    factory.write_function("echo", """
        def handler(event, context):
            print("echoing", context.aws_request_id)
            return {"event": event, "fn": context.function_name}
    """)
    factory.write_function("boom", """
        def handler(event, context):
            raise KeyError("missing")
    """)
    factory.write_function("slow", """
        import time
        def handler(event, context):
            time.sleep(30)
    """)
    factory.write_function("gate", """
        import os, time
        def handler(event, context):
            open(event["started"], "w").close()
            deadline = time.monotonic() + 60
            while not os.path.exists(event["gate"]) and time.monotonic() < deadline:
                time.sleep(0.01)
            return "released"
    """)
    fns = {
        "echo": "", "boom": "", "slow": "\n    timeout: 1s", "gate": "\n    concurrency: 1\n    timeout: 90s",
    }
    functions = "\n".join(
        f"  {n}:\n    runtime: python3.11\n    handler: app.handler\n    code: {tmp / 'functions' / n}{extra}"
        for n, extra in fns.items()
    )
    rp = factory(f"""
version: 1
server: {{host: 127.0.0.1, port: @PORT@}}
state: sqlite:///{tmp / 'state.db'}
functions:
{functions}
""")
    try:
        yield rp
        assert rp.stop() == 0, rp.logs()
    finally:
        factory.close()


def _fn(function_name: str, endpoint_url: str | None, **extra: Any) -> FunctionConfig:
    lam: dict[str, Any] = {"function_name": function_name}
    if endpoint_url is not None:
        lam["endpoint_url"] = endpoint_url
    lam.update(extra.pop("lam", {}))
    return FunctionConfig.model_validate({"lambda": lam, **extra})


@pytest.fixture
async def make_invoker() -> AsyncIterator[Any]:
    made: list[LambdaInvoker] = []

    async def _make(function_name: str, endpoint_url: str | None, *, aws: AwsConfig | None = None,
                    read_margin: float = 10.0, **extra: Any) -> LambdaInvoker:
        inv = LambdaInvoker("remote", _fn(function_name, endpoint_url, **extra), aws=aws or AwsConfig(),
                            read_margin=read_margin)
        await inv.start()
        made.append(inv)
        return inv

    yield _make
    for inv in made:
        await inv.close()


def _inv(payload: Any, **kw: Any) -> Invocation:
    return Invocation(function="remote", payload=json.dumps(payload).encode(), source="test", **kw)


async def test_success_returns_the_payload_and_version(remote: RouterProcess, make_invoker: Any) -> None:
    invoker = await make_invoker("echo", remote.url)
    result = await invoker.invoke(_inv({"a": 1}))
    assert result.ok, result
    assert json.loads(result.payload) == {"event": {"a": 1}, "fn": "echo"}
    assert result.executed_version == "$LATEST"
    assert result.function_error is None
    assert result.logs == ""
    assert result.duration > 0


async def test_log_tail(remote: RouterProcess, make_invoker: Any) -> None:
    invoker = await make_invoker("echo", remote.url)
    result = await invoker.invoke(_inv({"b": 2}, log_tail=True))
    assert result.ok
    assert "START RequestId:" in result.logs
    assert "echoing" in result.logs
    assert "REPORT RequestId:" in result.logs


async def test_function_error_keeps_lambdas_error_shape(remote: RouterProcess, make_invoker: Any) -> None:
    invoker = await make_invoker("boom", remote.url)
    result = await invoker.invoke(_inv({}))
    assert result.outcome is Outcome.ERROR
    assert result.function_error == "Unhandled"
    assert result.error_type is ErrorType.HANDLER
    assert result.retryable
    assert not result.throttle
    err = json.loads(result.payload)
    assert err["errorType"] == "KeyError"
    assert err["errorMessage"] == "'missing'"
    assert isinstance(err["stackTrace"], list)


async def test_remote_timeout_is_a_timeout(remote: RouterProcess, make_invoker: Any) -> None:
    invoker = await make_invoker("slow", remote.url)
    result = await invoker.invoke(_inv({}))
    assert result.outcome is Outcome.TIMEOUT
    assert result.error_type is ErrorType.TIMEOUT
    assert result.function_error == "Unhandled"
    assert json.loads(result.payload)["errorType"] == "Sandbox.Timedout"


async def test_unknown_function_is_not_retried(remote: RouterProcess, make_invoker: Any) -> None:
    invoker = await make_invoker("nope", remote.url, aws=AwsConfig(region="eu-west-1"))
    result = await invoker.invoke(_inv({}))
    assert result.outcome is Outcome.ERROR
    assert not result.retryable
    assert not result.throttle
    assert result.error_type is ErrorType.CONFIG
    err = json.loads(result.payload)
    assert err["errorType"] == "ResourceNotFoundException"
    assert err["errorMessage"].startswith(
        f"function 'remote': lambda 'nope' in eu-west-1 at {remote.url}: function not found (Function not "
        "found: arn:aws:lambda:us-east-1:000000000000:function:nope); check "
        "functions.remote.lambda.function_name, qualifier and region"
    ), err


async def test_unknown_qualifier_is_not_found(remote: RouterProcess, make_invoker: Any) -> None:
    invoker = await make_invoker("echo", remote.url, lam={"qualifier": "prod"})
    result = await invoker.invoke(_inv({}))
    assert json.loads(result.payload)["errorType"] == "ResourceNotFoundException"
    assert "lambda 'echo:prod'" in json.loads(result.payload)["errorMessage"]


async def test_throttle_at_the_remote_concurrency_cap(remote: RouterProcess, make_invoker: Any,
                                                      tmp_path: Path) -> None:
    invoker = await make_invoker("gate", remote.url)
    started, gate = tmp_path / "started", tmp_path / "gate"
    first = asyncio.create_task(invoker.invoke(_inv({"started": str(started), "gate": str(gate)})))
    try:
        # the marker file is written by the remote worker process: poll for it, with a deadline
        await until(started.exists, "the first call to start", deadline=30)
        result = await invoker.invoke(_inv({"started": str(tmp_path / "x"), "gate": str(gate)}))
        assert result.outcome is Outcome.THROTTLED
        assert result.throttle
        assert result.error_type is ErrorType.THROTTLED
        assert json.loads(result.payload)["errorType"] == "TooManyRequestsException"
    finally:
        gate.touch()
        done = await asyncio.wait_for(first, 60)
    assert done.ok
    assert json.loads(done.payload) == "released"


# --- faults --------------------------------------------------------------------------------------------


async def test_connection_refused_is_infrastructure(make_invoker: Any) -> None:
    port = free_port()  # nothing listens here
    invoker = await make_invoker("echo", f"http://127.0.0.1:{port}")
    result = await invoker.invoke(_inv({}))
    assert result.outcome is Outcome.ERROR
    assert result.error_type is ErrorType.CONNECTION
    assert result.throttle
    err = json.loads(result.payload)
    assert err["errorType"] == "LambdaConnectionError"
    assert err["errorMessage"].startswith(
        f"function 'remote': lambda 'echo' in us-east-1 at http://127.0.0.1:{port}: cannot reach the "
        "Lambda API (EndpointConnectionError); "
    ), err
    assert "check functions.remote.lambda.endpoint_url" in err["errorMessage"]


async def test_no_answer_is_a_timeout(make_invoker: Any) -> None:
    accepted = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        accepted.set()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        invoker = await make_invoker("echo", f"http://127.0.0.1:{port}", timeout=0.5, read_margin=0.0)
        result = await invoker.invoke(_inv({}))
    finally:
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()
    assert accepted.is_set()
    assert result.outcome is Outcome.TIMEOUT
    assert result.error_type is ErrorType.TIMEOUT
    assert json.loads(result.payload)["errorMessage"].endswith("no answer within 0.50 seconds "
                                                                "(timeout 0.50s + 0s margin)")


def test_endpoint_userinfo_and_query_are_not_shown() -> None:
    # The configured endpoint may carry userinfo; messages show it without.
    invoker = LambdaInvoker("remote", _fn("echo", "http://user:pw@127.0.0.1:1/x?token=t"), aws=AwsConfig())
    assert invoker._where == "function 'remote': lambda 'echo' in us-east-1 at http://127.0.0.1:1/x"


async def test_invoke_before_start_is_a_programming_error() -> None:
    invoker = LambdaInvoker("remote", _fn("echo", None), aws=AwsConfig())
    with pytest.raises(RuntimeError, match=r"function 'remote': lambda 'echo' .*: invoke\(\) before start"):
        await invoker.invoke(_inv({}))
    await invoker.close()  # closing an unstarted invoker is fine


@pytest.fixture
async def fake_lambda() -> AsyncIterator[tuple[str, list[tuple[int, str, dict[str, Any]]]]]:
    """An aiohttp server answering each invoke with the next scripted AWS error response."""
    script: list[tuple[int, str, dict[str, Any]]] = []
    seen: list[web.Request] = []

    async def invoke(request: web.Request) -> web.Response:
        seen.append(request)
        status, code, body = script.pop(0)
        return web.json_response(body, status=status, headers={"x-amzn-ErrorType": code})

    app = web.Application()
    app.router.add_post("/2015-03-31/functions/{name}/invocations", invoke)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", script
    finally:
        await runner.cleanup()
    assert len(seen) >= 1


@pytest.mark.parametrize(
    ("status", "code", "check"),
    [
        (500, "ServiceException", lambda r: r.error_type is ErrorType.HTTP_5XX and r.throttle),
        (502, "EC2ThrottledException", lambda r: r.error_type is ErrorType.HTTP_5XX and r.throttle),
        (400, "ThrottlingException", lambda r: r.outcome is Outcome.THROTTLED and r.throttle),
        (429, "TooManyRequestsException", lambda r: r.outcome is Outcome.THROTTLED and r.throttle),
        (403, "AccessDeniedException",
         lambda r: r.error_type is ErrorType.CONFIG and not r.retryable and "access denied" in _msg(r)),
        (413, "RequestTooLargeException", lambda r: r.error_type is ErrorType.HTTP_4XX and not r.retryable),
        (409, "ResourceConflictException", lambda r: r.error_type is ErrorType.HTTP_4XX and r.retryable),
    ],
)
async def test_aws_errors_are_mapped(fake_lambda: tuple[str, list[Any]], make_invoker: Any, status: int,
                                     code: str, check: Any) -> None:
    url, script = fake_lambda
    script.append((status, code, {"Type": "User", "message": f"scripted {code}"}))
    invoker = await make_invoker("echo", url)
    result = await invoker.invoke(_inv({}))
    assert not result.ok
    assert json.loads(result.payload)["errorType"] == code
    assert f"scripted {code}" in _msg(result)
    assert check(result), result
    assert not script  # exactly one request: botocore does not retry


def _msg(result: Result) -> str:
    return str(json.loads(result.payload)["errorMessage"])


# --- moto_server ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        pytest.skip(f"moto_server not installed next to {sys.executable}")
    port = free_port()
    env = {**os.environ, **AWS_ENV}
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"moto_server exited with {proc.returncode}")
            try:
                return http("GET", url + "/moto-api/", timeout=2)[0] == 200
            except OSError:
                return False

        until_sync(up, deadline=30, what="moto_server")
        # Lambda invoke in moto runs functions in Docker; its Docker-less backend echoes the payload.
        status, _, _ = http("POST", url + "/moto-api/config", json.dumps({"lambda": {"use_docker": False}})
                            .encode())
        assert status == 201
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def moto_function(moto_url: str) -> str:
    kw = {"endpoint_url": moto_url, "region_name": "us-east-1", "aws_access_key_id": "testing",
          "aws_secret_access_key": "testing"}
    iam = boto3.client("iam", **kw)
    role = iam.create_role(RoleName="fn-role", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                       "Action": "sts:AssumeRole"}],
    }))["Role"]["Arn"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", "def handler(event, context):\n    return event\n")
    lam = boto3.client("lambda", **kw)
    lam.create_function(FunctionName="moto-echo", Runtime="python3.11", Role=role, Handler="app.handler",
                        Code={"ZipFile": buf.getvalue()})
    iam.close()
    lam.close()
    return "moto-echo"


async def test_invoke_against_moto(moto_url: str, moto_function: str, make_invoker: Any) -> None:
    invoker = await make_invoker(moto_function, None, aws=AwsConfig(endpoint_url=moto_url))
    result = await invoker.invoke(_inv({"hello": "moto"}))
    assert result.ok, result
    assert json.loads(result.payload) == {"hello": "moto"}


def test_log_result_decoding() -> None:
    from router.invokers.lambda_ import _decode_log

    assert _decode_log(base64.b64encode(b"line\n").decode()) == "line\n"
    assert _decode_log("%%%") == ""
    assert _decode_log(None) == ""
