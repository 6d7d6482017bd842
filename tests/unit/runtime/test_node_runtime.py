"""The Node.js runtime through the router's own Runtime API: handlers, context, callbacks, modules, logs.

Real ``node`` worker processes started by a real ``LocalInvoker`` (see conftest.py); the fixtures are
tests/fixtures/functions/node_*.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import shutil
import subprocess
from typing import Any

import pytest

from router.invocation import Invocation, Outcome, Result

from .conftest import MakeInvoker, invocation
from .node_support import NODE_MAJOR, NODE_RUNTIME, require_node


@pytest.fixture(autouse=True)
def _node() -> None:
    require_node()


async def run(make_invoker: MakeInvoker, handler: str, event: Any = None, *, code: str = "node_basic",
              **fields: Any) -> tuple[Invocation, Result]:
    invoker = await make_invoker(code, runtime=NODE_RUNTIME, handler=handler, **fields)
    inv = invocation(event)
    return inv, await invoker.invoke(inv)


def payload(result: Result) -> Any:
    return json.loads(result.payload)


def function_lines(result: Result) -> list[str]:
    """What the function wrote, without START/END/REPORT."""
    return result.logs.split("\n")[1:-2]


# --- handlers and results ---------------------------------------------------------------------------


async def test_async_handler_cold_then_warm_in_the_same_process(make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("node_basic", runtime=NODE_RUNTIME, handler="index.counter")
    first = await invoker.invoke(invocation())
    second = await invoker.invoke(invocation())
    assert first.ok, first.payload
    assert second.ok, second.payload
    one, two = payload(first), payload(second)
    assert one["pid"] == two["pid"]
    assert (one["count"], two["count"], two["inits"]) == (1, 2, 1)
    assert "Init Duration:" in first.logs.split("\n")[-1]
    assert "Init Duration:" not in second.logs


async def test_event_round_trips(make_invoker: MakeInvoker) -> None:
    event = {"text": "héllo ✓", "n": [1, 2.5, None, True], "nested": {"a": {}}}
    _, result = await run(make_invoker, "index.echo", event)
    assert result.ok
    assert payload(result) == event


async def test_context_object_and_environment(make_invoker: MakeInvoker) -> None:
    client_context = base64.b64encode(json.dumps({"custom": {"k": "v"}, "env": {}}).encode()).decode()
    invoker = await make_invoker("node_basic", name="ctxfn", runtime=NODE_RUNTIME, handler="index.context",
                                 memory=256, timeout=7, environment={"MY_VAR": "1"})
    inv = invocation(client_context=client_context)
    result = await invoker.invoke(inv)
    assert result.ok, result.payload
    ctx = payload(result)
    assert ctx["functionName"] == "ctxfn"
    assert ctx["functionVersion"] == "$LATEST"
    assert ctx["invokedFunctionArn"] == "arn:aws:lambda:us-east-1:000000000000:function:ctxfn"
    assert ctx["memoryLimitInMB"] == "256"  # a string, as the RIC reads it from the environment
    assert ctx["awsRequestId"] == inv.request_id
    assert ctx["logGroupName"] == "/aws/lambda/ctxfn"
    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", ctx["logStreamName"])
    assert 0 < ctx["remaining"] <= 7000
    assert ctx["callbackWaitsForEmptyEventLoop"] is True
    assert ctx["hasDone"] is True
    assert ctx["identity"] == "undefined"  # no Cognito identity header
    assert ctx["clientContext"] == {"custom": {"k": "v"}, "env": {}}
    assert ctx["traceId"].startswith("Root=1-")
    env = ctx["env"]
    assert env["AWS_EXECUTION_ENV"] == f"AWS_Lambda_{NODE_RUNTIME}"
    assert env["_HANDLER"] == "index.context"
    assert env["LAMBDA_TASK_ROOT"] == ctx["cwd"]
    assert env["NODE_PATH"] == ctx["cwd"]
    assert env["TZ"] == ":UTC"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    assert not [k for k in env if k.startswith("_ROUTER")], env
    # Lambda's V8 heap flags for memory 256: new space 25 MB (two semi-spaces of 12), old space 231
    assert "--max-old-space-size=231" in ctx["execArgv"]
    assert "--max-semi-space-size=12" in ctx["execArgv"]
    assert "--expose-gc" in ctx["execArgv"]


async def test_node_options_heap_size_is_the_users(make_invoker: MakeInvoker) -> None:
    _, result = await run(make_invoker, "index.context",
                          environment={"NODE_OPTIONS": "--max-old-space-size=300"})
    assert result.ok, result.payload
    argv = payload(result)["execArgv"]
    assert not [a for a in argv if a.startswith(("--max-old-space-size", "--max-semi-space-size"))], argv


def _plain_node_cache_tag() -> int:
    """``v8.cachedDataVersionTag()`` of a node started without flags: the tag node's embedded code cache
    of its built-in modules was made with."""
    node = shutil.which("node")
    assert node is not None
    out = subprocess.run([node, "-p", "require('v8').cachedDataVersionTag()"], capture_output=True, text=True,
                         check=True, env={"PATH": os.environ.get("PATH", ""), "NODE_OPTIONS": ""}, timeout=30)
    return int(out.stdout)


@pytest.mark.parametrize(("node_options", "no_deprecation"), [
    ("", "unset"),
    ("--no-deprecation", True),  # process.noDeprecation is then read-only
    ("--throw-deprecation --pending-deprecation", "unset"),
])
async def test_lambdas_v8_flags_keep_their_effect_and_builtins_keep_their_code_cache(
        make_invoker: MakeInvoker, node_options: str, no_deprecation: Any) -> None:
    """The heap flags and --expose-gc act as Lambda's (limit, gc, out of memory at the limit), yet the V8
    flags hash as a plain node's, so node's code cache of its built-in modules is not rejected; the
    bootstrap resets them without loading node:v8, prints no deprecation warning, leaves
    process.noDeprecation as it was, and survives the deprecation options a user may set."""
    plain_tag = await asyncio.to_thread(_plain_node_cache_tag)
    invoker = await make_invoker("node_basic", runtime=NODE_RUNTIME, handler="index.heap", memory=256,
                                 environment={"NODE_OPTIONS": node_options} if node_options else {})
    result = await invoker.invoke(invocation())
    assert result.ok, result.payload
    got = payload(result)
    assert got["gc"] == "function"
    # memory 256: old space 231 MB, two semi-spaces of 12 MB (V8 adds its own large-object slack: < 300)
    assert 231 <= got["heapLimitMB"] < 300, got
    assert got["cacheTag"] == plain_tag
    assert got["v8Loaded"] is False
    assert got["noDeprecation"] == no_deprecation
    assert "Deprecation" not in result.logs, result.logs
    exhausted = await invoker.invoke(invocation({"exhaust": True}))
    assert exhausted.outcome is Outcome.ERROR
    assert "JavaScript heap out of memory" in exhausted.logs, exhausted.logs[-2000:]


@pytest.mark.parametrize(("handler", "expected"), [
    ("index.callback", {"via": "callback", "event": {"k": 1}}),
    ("index.callbackTwice", "first"),
    ("index.callbackThenPromise", "from callback"),
    ("index.promiseThenCallback", "from promise"),
    ("index.succeed", {"via": "succeed"}),
    ("index.done", "via done"),
    ("index.nested.deeper.handler", "nested ok"),
])
async def test_callback_and_context_methods(make_invoker: MakeInvoker, handler: str, expected: Any) -> None:
    if NODE_MAJOR is not None and NODE_MAJOR >= 24 and handler != "index.nested.deeper.handler":
        pytest.skip("nodejs24.x has no callback handlers")
    _, result = await run(make_invoker, handler, {"k": 1})
    assert result.ok, result.payload
    assert payload(result) == expected


async def test_a_callback_called_twice_counts_once_and_the_environment_goes_on(
        make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("node_basic", runtime=NODE_RUNTIME, handler="index.callbackTwice")
    results = [await invoker.invoke(invocation()) for _ in range(3)]
    assert [payload(r) for r in results] == ["first", "first", "first"]
    assert all("third" not in r.logs for r in results)


async def test_plain_function_returning_a_value_answers_null(make_invoker: MakeInvoker) -> None:
    if NODE_MAJOR is not None and NODE_MAJOR >= 24:
        pytest.skip("nodejs24.x awaits whatever the handler returns")
    _, result = await run(make_invoker, "index.syncReturn")
    assert result.ok
    assert result.payload == b"null"


async def test_callback_result_waits_for_the_event_loop(make_invoker: MakeInvoker) -> None:
    inv, result = await run(make_invoker, "index.waitsForTimer")
    assert payload(result) == "done"
    lines = function_lines(result)
    assert any(line.endswith(f"\t{inv.request_id}\tINFO\ttimer fired") for line in lines), result.logs


async def test_beforeexit_listener_is_lambdas_global_symbol(make_invoker: MakeInvoker) -> None:
    """Tracing libraries wrap ``global[Symbol.for('aws.lambda.beforeExit')]`` after the callback, as
    Lambda's client keeps its listener there: the wrapper runs, then the result goes out."""
    inv, result = await run(make_invoker, "index.wrapsBeforeExit")
    assert payload(result) == "wrapped result"
    assert any(line.endswith(f"\t{inv.request_id}\tINFO\tbeforeExit wrapper ran, listener was a function")
               for line in function_lines(result)), result.logs


async def test_callback_without_waiting_answers_at_once(make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("node_basic", runtime=NODE_RUNTIME, handler="index.doesNotWait")
    first = await invoker.invoke(invocation())
    assert payload(first) == "done early"
    assert "late timer fired" not in first.logs


async def test_unserialisable_result_is_an_error(make_invoker: MakeInvoker) -> None:
    _, result = await run(make_invoker, "index.unserialisable")
    assert result.outcome is Outcome.ERROR
    error = payload(result)
    assert error["errorMessage"] == "Unable to stringify response body"


# --- errors -----------------------------------------------------------------------------------------


async def test_thrown_error_has_lambdas_node_shape(make_invoker: MakeInvoker) -> None:
    inv, result = await run(make_invoker, "index.throws")
    assert result.outcome is Outcome.ERROR
    assert result.function_error == "Unhandled"
    error = payload(result)
    assert set(error) == {"errorType", "errorMessage", "trace"}
    assert error["errorType"] == "TypeError"
    assert error["errorMessage"] == "bad thing happened"
    assert error["trace"][0] == "TypeError: bad thing happened"
    assert any("node_basic/index.js" in frame for frame in error["trace"])
    logged = [line for line in function_lines(result) if "\tERROR\tInvoke Error \t" in line]
    assert len(logged) == 1, result.logs
    assert logged[0].split("\t")[1] == inv.request_id
    record = json.loads(logged[0].split("Invoke Error \t", 1)[1].replace("\r", "\n"))
    assert record["errorType"] == "TypeError"
    assert record["code"] == "E_BAD"


@pytest.mark.parametrize(("handler", "error_type", "message"), [
    ("index.throwsSync", "Error", "sync throw"),
    ("index.rejectsString", "string", "just a string"),
    ("index.callbackError", "Error", "callback failed"),
    ("index.callbackString", "string", "plain string error"),
    ("index.fail", "Error", "context.fail called"),
])
async def test_handler_errors(make_invoker: MakeInvoker, handler: str, error_type: str, message: str) -> None:
    if NODE_MAJOR is not None and NODE_MAJOR >= 24 and handler.startswith(("index.callback", "index.fail")):
        pytest.skip("nodejs24.x has no callback handlers")
    _, result = await run(make_invoker, handler)
    assert result.outcome is Outcome.ERROR
    error = payload(result)
    assert (error["errorType"], error["errorMessage"]) == (error_type, message)
    assert isinstance(error["trace"], list)


async def test_promise_that_never_settles_is_a_node_exit_error_and_the_environment_stays(
        make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("node_basic", runtime=NODE_RUNTIME, handler="index.neverSettles")
    first = await invoker.invoke(invocation())
    second = await invoker.invoke(invocation())
    for result in (first, second):
        assert result.outcome is Outcome.ERROR
        assert payload(result)["errorType"] == "Runtime.NodeJsExit"
    assert "Init Duration" not in second.logs  # the same environment answered


async def test_plain_function_whose_promise_never_settles_answers_null(make_invoker: MakeInvoker) -> None:
    if NODE_MAJOR is not None and NODE_MAJOR >= 24:
        pytest.skip("nodejs24.x treats every handler as async")
    _, result = await run(make_invoker, "index.neverSettlesPlain")
    assert result.ok
    assert result.payload == b"null"


# --- modules and handler names ------------------------------------------------------------------------


@pytest.mark.parametrize(("handler", "kind"), [
    ("index.handler", "esm .js"),
    ("other.handler", ".mjs"),
    ("legacy.handler", ".cjs"),
    ("src/api/index.handler", "sub-folder"),
])
async def test_es_modules_commonjs_and_sub_folders(make_invoker: MakeInvoker, handler: str,
                                                   kind: str) -> None:
    inv, result = await run(make_invoker, handler, {"name": "x", "value": 7}, code="node_esm")
    assert result.ok, result.payload
    body = payload(result)
    assert body["kind"] == kind
    if kind == "esm .js":
        assert body["formatted"] == "x!"
    if kind == ".mjs":
        assert body["requestId"] == inv.request_id
    if kind == ".cjs":
        assert body["commonjs"] is True
    if kind == "sub-folder":
        assert body["helped"] == "helped 7"


@pytest.mark.parametrize(("code", "handler", "error_type", "message"), [
    ("node_basic", "index.nope", "Runtime.HandlerNotFound", "index.nope is undefined or not exported"),
    ("node_basic", "index.notAFunction", "Runtime.HandlerNotFound", "index.notAFunction is not a function"),
    ("node_basic", "nofile.handler", "Runtime.ImportModuleError", "Error: Cannot find module 'nofile'"),
    ("node_basic", "../node_esm/index.handler", "Runtime.MalformedHandlerName",
     "'../node_esm/index.handler' is not a valid handler name. Use absolute paths when specifying root "
     "directories in handler names."),
    ("node_init_errors", "missing.handler", "Runtime.ImportModuleError",
     "Error: Cannot find module 'package-that-is-not-installed'"),
    ("node_init_errors", "syntax.handler", "Runtime.UserCodeSyntaxError", "SyntaxError: Unexpected token"),
    ("node_init_errors", "throws.handler", "Error", "init failed on purpose"),
])
async def test_init_errors_every_time_with_a_fresh_environment(
        make_invoker: MakeInvoker, code: str, handler: str, error_type: str, message: str) -> None:
    invoker = await make_invoker(code, runtime=NODE_RUNTIME, handler=handler)
    for _ in range(2):
        result = await invoker.invoke(invocation())
        assert result.outcome is Outcome.ERROR
        assert result.function_error == "Unhandled"
        error = payload(result)
        assert error["errorType"] == error_type
        assert error["errorMessage"].startswith(message), error["errorMessage"]
        assert isinstance(error["trace"], list)
        # the bytes the runtime posted (JSON.stringify's), as Lambda's invoke response: not re-encoded
        assert result.payload.startswith(b'{"errorType":"' + error_type.encode() + b'","errorMessage":')
        init_log = "Init Error" if NODE_MAJOR is not None and NODE_MAJOR >= 24 else "Uncaught Exception"
        assert re.search(rf"\tundefined\tERROR\t{init_log} \t\{{\"errorType\":\"{re.escape(error_type)}\"",
                         result.logs), result.logs
        # then Lambda's platform lines of a failed init: INIT_REPORT, and START/END/REPORT with its status
        platform = [line for line in result.logs.splitlines()
                    if line.startswith(("INIT_REPORT", "START", "END", "REPORT"))]
        assert len(platform) == 4, platform
        assert re.fullmatch(rf"INIT_REPORT Init Duration: \d+\.\d\d ms\tPhase: invoke\tStatus: error"
                            rf"\tError Type: {re.escape(error_type)}", platform[0]), platform[0]
        assert platform[3].endswith(f"\tStatus: error\tError Type: {error_type}"), platform[3]
        assert "\tMax Memory Used: 0 MB" not in platform[3]  # the bootstrap sent the init's peak


async def test_init_output_is_in_the_failed_invocations_logs(make_invoker: MakeInvoker) -> None:
    _, result = await run(make_invoker, "throws.handler", code="node_init_errors")
    assert "init output before the throw" in result.logs


async def test_error_thrown_by_a_timer_after_init_fails_the_first_invocation(
        make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("node_init_errors", runtime=NODE_RUNTIME, handler="uncaught.handler")
    for _ in range(2):
        result = await invoker.invoke(invocation())
        assert result.outcome is Outcome.ERROR
        error = payload(result)
        assert (error["errorType"], error["errorMessage"]) == ("Error", "async init failure")


# --- logs ---------------------------------------------------------------------------------------------


async def test_console_lines_in_lambdas_text_format(
        make_invoker: MakeInvoker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="router.function")
    inv, result = await run(make_invoker, "index.logs")
    assert payload(result) == "logged"
    rid = inv.request_id
    lines = function_lines(result)
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"

    def find(level: str, text: str) -> str:
        for line in lines:
            if re.fullmatch(rf"{stamp}\t{rid}\t{level}\t{re.escape(text)}", line):
                return line
        raise AssertionError(f"no {level} {text!r} line in {lines}")

    find("INFO", "log line { a: 1 }")
    find("INFO", "info line")
    find("WARN", "warn line")
    find("DEBUG", "debug line")
    find("TRACE", "trace line")
    find("INFO", "multi\rline\rrecord")  # one record, one line
    find("INFO", "undefined")  # console.log() with no argument, as on Lambda
    error_line = next(line for line in lines if "\tERROR\terror line Error: logged error\r    at " in line)
    assert error_line.split("\t")[1] == rid
    assert "raw stdout" in lines
    assert "raw stderr" in lines
    assert lines.index("raw stdout") > lines.index(find("INFO", "info line"))
    # the router logged the same lines with the invocation's request id
    ours = [r.getMessage() for r in caplog.records if getattr(r, "request_id", None) == rid]
    tail = result.logs.split("\n")
    # after the cold start's INIT_START, as Lambda's tail of a cold invocation
    assert re.fullmatch(r"INIT_START Runtime Version: nodejs:\d+\.\d+\.\d+\tRuntime Version ARN: "
                        r"arn:aws:lambda:us-east-1::runtime:[0-9a-f]{64}", tail[0]), tail[0]
    assert ours == tail[1:]


async def test_json_log_format_and_level(make_invoker: MakeInvoker) -> None:
    inv, result = await run(make_invoker, "index.logs",
                            environment={"AWS_LAMBDA_LOG_FORMAT": "JSON", "AWS_LAMBDA_LOG_LEVEL": "WARN"})
    assert result.ok
    records = [json.loads(line) for line in function_lines(result) if line.startswith("{")]
    assert [r["level"] for r in records] == ["WARN", "ERROR"]
    warn, error = records
    assert warn == {"timestamp": warn["timestamp"], "level": "WARN", "requestId": inv.request_id,
                    "message": "warn line"}
    assert error["errorType"] == "Error"
    assert error["errorMessage"] == "logged error"
    assert error["message"].startswith("error line Error: logged error")
