"""LocalInvoker against real worker processes: results, warm reuse, context, environment, error shapes."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from router.invocation import RESPONSE_LIMIT, ErrorType, Outcome
from router.metrics import Metrics
from router.runtime.launch import BOOTSTRAP_DIR

from .conftest import ARN, FUNCTIONS, PYTHON_RUNTIME, MakeInvoker, invocation


async def test_echo_returns_the_event(make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("echo")
    event = {"hello": "world", "n": [1, 2.5, None], "ünï": "cödé"}
    result = await invoker.invoke(invocation(event))
    assert result.ok, result.payload
    assert result.status_code == 200
    assert result.function_error is None
    assert json.loads(result.payload) == event
    assert result.duration > 0


async def test_warm_environment_is_reused_and_init_runs_once(
    make_invoker: MakeInvoker, metrics: Metrics
) -> None:
    invoker = await make_invoker("counter")
    results = [json.loads((await invoker.invoke(invocation())).payload) for _ in range(3)]
    assert [r["count"] for r in results] == [1, 2, 3]
    assert {r["pid"] for r in results} == {results[0]["pid"]}
    assert {r["inits"] for r in results} == {1}
    assert metrics.registry.get_sample_value("router_cold_starts_total", {"function": "counter"}) == 1
    assert metrics.registry.get_sample_value(
        "router_init_duration_seconds_count", {"function": "counter"}) == 1
    assert metrics.registry.get_sample_value(
        "router_environments", {"function": "counter", "state": "idle"}) == 1
    assert metrics.registry.get_sample_value(
        "router_environments", {"function": "counter", "state": "busy"}) == 0


async def test_context_fields_and_reserved_environment(make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("context", memory=256, timeout=30,
                                 environment={"FN_COLOR": "blue", "AWS_REGION": "eu-west-9"})
    client_context = base64.b64encode(json.dumps(
        {"custom": {"k": "v"}, "env": {"platform": "test"}, "client": {"installation_id": "i-1"}}
    ).encode()).decode()
    inv = invocation(client_context=client_context)
    result = await invoker.invoke(inv)
    assert result.ok, result.payload
    ctx = json.loads(result.payload)
    assert ctx["function_name"] == "context"
    assert ctx["function_version"] == "$LATEST"
    assert ctx["invoked_function_arn"] == ARN.format("context")
    assert ctx["memory_limit_in_mb"] == "256"  # a string, as in Lambda's Python runtime
    assert ctx["aws_request_id"] == inv.request_id
    assert ctx["log_group_name"] == "/aws/lambda/context"
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", ctx["log_stream_name"])
    assert ctx["identity"] == {"cognito_identity_id": None, "cognito_identity_pool_id": None}
    assert ctx["client_context"] == {"custom": {"k": "v"}, "env": {"platform": "test"},
                                     "client": {"installation_id": "i-1", "app_title": None}}
    assert 25_000 < ctx["remaining_ms"] <= 30_000
    env = ctx["env"]
    code = str(FUNCTIONS / "context")
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "context"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/context"
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"] == ctx["log_stream_name"]
    assert re.fullmatch(r"127\.0\.0\.1:\d+", env["AWS_LAMBDA_RUNTIME_API"])
    assert env["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    assert env["AWS_EXECUTION_ENV"] == f"AWS_Lambda_{PYTHON_RUNTIME}"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"  # reserved wins
    assert env["_HANDLER"] == "app.handler"
    assert env["LAMBDA_TASK_ROOT"] == code == ctx["cwd"]
    assert env["LAMBDA_RUNTIME_DIR"] == str(BOOTSTRAP_DIR)
    assert env["TZ"] == ":UTC"
    assert env["LANG"]
    assert env["PATH"]
    assert env["TMPDIR"] == env["HOME"]
    assert "router-context-" in env["TMPDIR"]
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONPATH"] == code
    assert env["MALLOC_ARENA_MAX"] == "2"
    assert env["_X_AMZN_TRACE_ID"].startswith("Root=1-")
    assert ctx["function_env"] == {"FN_COLOR": "blue"}
    # LC_CTYPE: CPython may set it itself (PEP 538 locale coercion)
    allowed = set(ctx["env"]) | {"FN_COLOR", "LC_CTYPE",
                                 "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
    assert set(ctx["all_env_keys"]) <= allowed, "the router's own environment leaked into the function"


async def test_router_credentials_pass_through_and_nothing_else(
    make_invoker: MakeInvoker, monkeypatch: object
) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-test")
    monkeypatch.setenv("ROUTER_PRIVATE_SETTING", "must-not-leak")
    invoker = await make_invoker("context")
    ctx = json.loads((await invoker.invoke(invocation())).payload)
    assert "AWS_ACCESS_KEY_ID" in ctx["all_env_keys"]
    assert "AWS_SECRET_ACCESS_KEY" in ctx["all_env_keys"]
    assert "ROUTER_PRIVATE_SETTING" not in ctx["all_env_keys"]


async def test_handler_error_has_lambdas_shape(make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("fail_always")
    inv = invocation({"message": "bad input"})
    result = await invoker.invoke(inv)
    assert result.outcome is Outcome.ERROR
    assert result.function_error == "Unhandled"
    assert result.error_type is ErrorType.HANDLER
    error = json.loads(result.payload)
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "always fails: bad input"
    assert error["requestId"] == inv.request_id
    assert len(error["stackTrace"]) == 1
    frame = error["stackTrace"][0]
    assert frame.startswith(f'  File "{FUNCTIONS / "fail_always" / "app.py"}", line 3, in handler\n')
    assert "raise ValueError" in frame
    # the environment survives a handler error
    again = await invoker.invoke(invocation({"message": "x"}))
    assert json.loads(again.payload)["errorMessage"] == "always fails: x"


async def test_init_error_is_the_result_and_the_environment_is_discarded(
    make_invoker: MakeInvoker, metrics: Metrics
) -> None:
    invoker = await make_invoker("init_error")
    for _ in range(2):
        result = await invoker.invoke(invocation())
        assert result.outcome is Outcome.ERROR
        assert result.function_error == "Unhandled"
        error = json.loads(result.payload)
        assert error["errorType"] == "Runtime.ImportModuleError"
        assert error["errorMessage"] == "Unable to import module 'app': No module named 'does_not_exist'"
        assert "[ERROR] Runtime.ImportModuleError" in result.logs
    assert metrics.registry.get_sample_value(
        "router_environments", {"function": "init_error", "state": "idle"}) == 0


async def test_handler_not_found(make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("echo", handler="app.missing")
    error = json.loads((await invoker.invoke(invocation())).payload)
    assert error["errorType"] == "Runtime.HandlerNotFound"
    assert error["errorMessage"] == "Handler 'missing' missing on module 'app'"


async def test_unserialisable_result_is_a_marshal_error(make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("echo", handler="app.unserialisable")
    result = await invoker.invoke(invocation())
    error = json.loads(result.payload)
    assert result.outcome is Outcome.ERROR
    assert error["errorType"] == "Runtime.MarshalError"
    assert error["errorMessage"] == "Unable to marshal response: Object of type set is not JSON serializable"


async def test_response_over_6mb_is_function_response_size_too_large(make_invoker: MakeInvoker) -> None:
    """Lambda's response limit is 6291556 bytes, 100 over its request limit: a response of exactly that
    many bytes is returned, one byte more is Function.ResponseSizeTooLarge with Lambda's message."""
    assert RESPONSE_LIMIT == 6_291_556
    invoker = await make_invoker("big_response", memory=512)
    at_limit = await invoker.invoke(invocation({"bytes": RESPONSE_LIMIT - 2}))  # a JSON string: 2 quotes
    assert at_limit.ok, at_limit.payload[:200]
    assert len(at_limit.payload) == RESPONSE_LIMIT
    result = await invoker.invoke(invocation({"bytes": RESPONSE_LIMIT - 1}))
    assert result.outcome is Outcome.ERROR
    error = json.loads(result.payload)
    assert error == {"errorType": "Function.ResponseSizeTooLarge",
                     "errorMessage": "Response payload size exceeded maximum allowed payload size "
                                     "(6291556 bytes)."}
    small = await invoker.invoke(invocation({"bytes": 1000}))
    assert small.ok
    assert json.loads(small.payload) == "x" * 1000


async def test_apigw_response_dict_passes_through(make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("apigw")
    body = json.loads((await invoker.invoke(invocation({"rawPath": "/hooks/x", "body": "hi"}))).payload)
    assert body["statusCode"] == 201
    assert json.loads(body["body"]) == {"path": "/hooks/x", "body": "hi"}


async def test_the_functions_own_pythonpath_is_kept(make_invoker: MakeInvoker, tmp_path: Path) -> None:
    """A PYTHONPATH in the function's environment (a src/ layout) is searched, after the code directory,
    as on Lambda; not replaced by the router's."""
    code = tmp_path / "layout"
    (code / "src" / "shop").mkdir(parents=True)
    (code / "src" / "shop" / "__init__.py").write_text("NAME = 'shop from src'\n")
    (code / "app.py").write_text(
        "import sys\nimport shop\n\n"
        "def handler(event, context):\n    return {'name': shop.NAME, 'path': sys.path}\n")
    invoker = await make_invoker(str(code), name="pythonpath", environment={"PYTHONPATH": str(code / "src")})
    result = await invoker.invoke(invocation())
    assert result.ok, result.payload
    got = json.loads(result.payload)
    assert got["name"] == "shop from src"
    assert got["path"].index(str(code)) < got["path"].index(str(code / "src"))
