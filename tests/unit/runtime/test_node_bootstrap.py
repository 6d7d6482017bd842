"""The Node bootstrap against a small Runtime API of the test's own, for what the router's Runtime API does
not do (yet): several ``/invocation/next`` at once (AWS_LAMBDA_MAX_CONCURRENCY), and the nodejs24.x
client's rules on a machine whose node is older (AWS_EXECUTION_ENV says which client to be).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from router.runtime.launch import NODE_BOOTSTRAP

from .node_support import FIXTURES, NODE_RUNTIME, require_node

DEADLINE = 30.0


@pytest.fixture(autouse=True)
def _node() -> None:
    require_node()


@dataclass
class FakeRuntimeApi:
    """Serves GET /next from ``events`` (one event per request, however many wait), records results."""

    events: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    results: dict[str, tuple[str, Any, dict[str, str]]] = field(default_factory=dict)
    init_error: tuple[dict[str, str], Any] | None = None
    waiting: int = 0  # /next requests waiting for an event now
    connections: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def until(self, what: str, condition: Any) -> None:
        async with asyncio.timeout(DEADLINE):
            while not condition():
                self.changed.clear()
                await self.changed.wait()

    def _changed(self) -> None:
        self.changed.set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._changed()
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, path, _ = request_line.split(" ")
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in header_lines if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if method == "GET" and path.endswith("/invocation/next"):
                    self.waiting += 1
                    self._changed()
                    request_id, event = await self.events.get()
                    self.waiting -= 1
                    payload = json.dumps(event).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        + f"Lambda-Runtime-Aws-Request-Id: {request_id}\r\n"
                          f"Lambda-Runtime-Deadline-Ms: 9999999999999\r\n"
                          f"Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:0:function:f\r\n"
                          f"Lambda-Runtime-Trace-Id: Root=1-trace-{request_id}\r\n"
                          f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
                elif method == "POST" and path.endswith("/init/error"):
                    self.init_error = (headers, json.loads(body))
                    writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                else:
                    *_, request_id, kind = path.split("/")
                    self.results[request_id] = (kind, json.loads(body), headers)
                    writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                self._changed()
                await writer.drain()
        finally:
            writer.close()


@dataclass
class NodeProcess:
    proc: asyncio.subprocess.Process
    stdout: list[str] = field(default_factory=list)


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeRuntimeApi]:
    api = FakeRuntimeApi()
    server = await asyncio.start_server(api.serve, "127.0.0.1", 0)
    api.port = server.sockets[0].getsockname()[1]
    async with server:
        yield api
        server.close()


@pytest.fixture
async def start_node(fake_api: FakeRuntimeApi) -> AsyncIterator[Any]:
    started: list[asyncio.subprocess.Process] = []
    readers: list[asyncio.Task[None]] = []

    async def start(handler: str, *, execution_env: str = NODE_RUNTIME, concurrency: int | None = None,
                    code: str = "node_concurrent") -> NodeProcess:
        root = str(FIXTURES / code)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{fake_api.port}",
            "_HANDLER": handler,
            "LAMBDA_TASK_ROOT": root,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{execution_env}",
            "AWS_LAMBDA_FUNCTION_NAME": "f",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/f",
            "AWS_LAMBDA_LOG_STREAM_NAME": "stream",
        }
        if concurrency is not None:
            env["AWS_LAMBDA_MAX_CONCURRENCY"] = str(concurrency)
        proc = await asyncio.create_subprocess_exec(
            "node", str(NODE_BOOTSTRAP), cwd=root, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        started.append(proc)
        node = NodeProcess(proc)

        async def read() -> None:
            assert proc.stdout is not None
            async for line in proc.stdout:
                node.stdout.append(line.decode().rstrip("\n"))

        readers.append(asyncio.create_task(read()))
        return node

    yield start
    for proc in started:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    for task in readers:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, DEADLINE)


async def test_max_concurrency_keeps_that_many_next_requests_and_runs_handlers_together(
        fake_api: FakeRuntimeApi, start_node: Any) -> None:
    node = await start_node("index.barrier", concurrency=4)
    await fake_api.until("4 /next waiting", lambda: fake_api.waiting == 4)
    assert fake_api.connections == 4  # each on its own connection
    ids = [str(uuid.uuid4()) for _ in range(4)]
    for n, request_id in enumerate(ids):
        fake_api.events.put_nowait((request_id, {"n": n, "expect": 4}))
    # The barrier handler returns only once all four run at the same time.
    await fake_api.until("4 results", lambda: len(fake_api.results) == 4)
    for n, request_id in enumerate(ids):
        kind, body, _ = fake_api.results[request_id]
        assert (kind, body) == ("response", {"n": n, "requestId": request_id})
    # after answering, every lane asks for the next event again
    await fake_api.until("4 /next waiting again", lambda: fake_api.waiting == 4)
    # each log record carries its own invocation's request id (AsyncLocalStorage)
    done = {line.rsplit("\t", 1)[1]: line.split("\t")[1] for line in node.stdout if "\tdone " in line}
    assert done == {f"done {n}": request_id for n, request_id in enumerate(ids)}
    assert node.proc.returncode is None


@pytest.mark.parametrize(("execution_env", "concurrency", "words"), [
    ("nodejs24.x", None, "starting with Node.js 24"),
    ("nodejs22.x", 2, "when using Node.js 22 with Managed Instances"),
])
async def test_callback_handlers_are_refused_where_lambda_refuses_them(
        fake_api: FakeRuntimeApi, start_node: Any, execution_env: str, concurrency: int | None,
        words: str) -> None:
    node = await start_node("index.callbackStyle", execution_env=execution_env, concurrency=concurrency)
    async with asyncio.timeout(DEADLINE):
        code = await node.proc.wait()
    assert code == 129
    assert fake_api.init_error is not None
    headers, body = fake_api.init_error
    assert headers["lambda-runtime-function-error-type"] == "Runtime.CallbackHandlerDeprecated"
    assert body["errorType"] == "Runtime.CallbackHandlerDeprecated"
    assert words in body["errorMessage"]
    assert fake_api.waiting == 0


async def test_nodejs24_client_rules(fake_api: FakeRuntimeApi, start_node: Any) -> None:
    await start_node("index.syncValue", execution_env="nodejs24.x")
    await fake_api.until("/next", lambda: fake_api.waiting == 1)
    fake_api.events.put_nowait(("r1", {"n": 5}))
    await fake_api.until("a result", lambda: "r1" in fake_api.results)
    assert fake_api.results["r1"][:2] == ("response", {"sync": 5})  # a plain return value counts


async def test_nodejs24_context_has_no_callback_methods(fake_api: FakeRuntimeApi, start_node: Any) -> None:
    await start_node("index.contextKeys", execution_env="nodejs24.x")
    fake_api.events.put_nowait(("r2", {}))
    await fake_api.until("a result", lambda: "r2" in fake_api.results)
    assert fake_api.results["r2"][1] == {"done": "undefined", "callbackWaitsForEmptyEventLoop": "undefined",
                                         "xRayTraceId": "Root=1-trace-r2", "awsRequestId": "r2"}


@pytest.mark.parametrize(("execution_env", "expected"), [
    ("nodejs24.x", ("response", "from the default export")),
    ("nodejs20.x", None),
])
async def test_default_export_lookup_is_nodejs24_only(
        fake_api: FakeRuntimeApi, start_node: Any, execution_env: str, expected: Any) -> None:
    node = await start_node("index.fromDefault", execution_env=execution_env)
    if expected is None:
        async with asyncio.timeout(DEADLINE):
            await node.proc.wait()
        assert fake_api.init_error is not None
        assert fake_api.init_error[1]["errorType"] == "Runtime.HandlerNotFound"
        return
    fake_api.events.put_nowait(("r3", {}))
    await fake_api.until("a result", lambda: "r3" in fake_api.results)
    assert fake_api.results["r3"][:2] == expected
