"""Response streaming through a real router (issue 13, item 4): Node handlers wrapped in
``awslambda.streamifyResponse`` write a first chunk, then wait for a gate file the test creates only
after it has read that chunk (so the chunk provably came before the function finished), through a
function URL in RESPONSE_STREAM mode (chunked HTTP, the http-integration-response prelude) and through
boto3's ``invoke_with_response_stream`` (the event stream); a mid-stream error; a buffered Python
function through InvokeWithResponseStream. (The AWS CLI v1 has no invoke-with-response-stream.)"""

from __future__ import annotations

import http.client
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import pytest
from botocore.config import Config

from tests.router_process import RouterFactory, RouterProcess
from tests.unit.runtime.node_support import NODE_RUNTIME, require_node

RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"

NODE_APP = r"""
const fs = require('fs');

function gateOf(event) {
  return event.gate || (event.queryStringParameters && event.queryStringParameters.gate);
}

function waitFor(path) {
  return new Promise((resolve) => {
    const timer = setInterval(() => {
      if (fs.existsSync(path)) {
        clearInterval(timer);
        resolve();
      }
    }, 10);
  });
}

exports.plain = awslambda.streamifyResponse(async (event, responseStream, context) => {
  responseStream.setContentType('text/plain');
  responseStream.write('first;');
  await waitFor(gateOf(event));
  responseStream.write(`second:${context.functionName};`);
  responseStream.end('last');
});

exports.http = awslambda.streamifyResponse(async (event, responseStream) => {
  const stream = awslambda.HttpResponseStream.from(responseStream, {
    statusCode: 201,
    headers: { 'Content-Type': 'text/event-stream', 'X-Custom': 'yes' },
    cookies: ['a=1; Path=/', 'b=2'],
  });
  stream.write('data: one\n\n');
  await waitFor(gateOf(event));
  stream.write('data: two\n\n');
  stream.end();
});

exports.piped = awslambda.streamifyResponse(async (event, responseStream) => {
  const { Readable } = require('stream');
  const { pipeline } = require('stream/promises');
  await pipeline(Readable.from(['piped-1;', 'piped-2;', 'piped-3']), responseStream);
});

exports.misuse = awslambda.streamifyResponse((event, responseStream) => {
  const which = event.case || (event.queryStringParameters && event.queryStringParameters.case);
  if (which === 'sync') return 'not a promise';
  if (which === 'unfinished') return Promise.resolve(responseStream.write('never ended'));
  return Promise.reject(new TypeError('failed before any byte'));
});

exports.failing = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream.write('partial;');
  await waitFor(gateOf(event));
  throw new Error('mid-stream failure');
});
"""

CUSTOM_RUNTIME = r"""
# A custom runtime (runtime: provided) that streams through the Runtime API itself: chunked, in
# streaming mode, with Lambda's error trailers when the event asks it to fail.
import base64, http.client, json, os, socket, time

host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)


def chunk(data):
    return b"%x\r\n" % len(data) + data + b"\r\n"


while True:
    api = http.client.HTTPConnection(host, int(port))
    api.request("GET", "/2018-06-01/runtime/invocation/next")
    answer = api.getresponse()
    event = json.loads(answer.read())
    rid = answer.getheader("Lambda-Runtime-Aws-Request-Id")
    gate = event.get("gate") or event["queryStringParameters"]["gate"]
    sock = socket.create_connection((host, int(port)))
    sock.sendall(("POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\nHost: %s:%s\r\n"
                  "Lambda-Runtime-Function-Response-Mode: streaming\r\nTransfer-Encoding: chunked\r\n"
                  "Content-Type: text/csv\r\n"
                  "Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n\r\n"
                  % (rid, host, port)).encode() + chunk(b"custom-first;"))
    while not os.path.exists(gate):
        time.sleep(0.01)
    if event.get("fail"):
        error = json.dumps({"errorType": "Custom.Broken", "errorMessage": "custom failure"}).encode()
        sock.sendall(b"0\r\nLambda-Runtime-Function-Error-Type: Custom.Broken\r\n"
                     b"Lambda-Runtime-Function-Error-Body: " + base64.b64encode(error) + b"\r\n\r\n")
    else:
        sock.sendall(chunk(b"custom-last") + b"0\r\n\r\n")
    reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 202"), reply
    sock.close()
"""

PY_APP = """
def handler(event, context):
    return {"buffered": True, "event": event}

def fails(event, context):
    raise ValueError("buffered failure")
"""


@pytest.fixture
def streaming(router_factory: RouterFactory, tmp_path: Path) -> Iterator[RouterProcess]:
    require_node()
    node = tmp_path / "node"
    node.mkdir()
    (node / "index.js").write_text(NODE_APP)
    py = router_factory.write_function("py", PY_APP)
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "runtime.py").write_text(CUSTOM_RUNTIME)
    bootstrap = custom / "bootstrap"
    bootstrap.write_text('#!/bin/sh\nexec "$PYTHON" "$LAMBDA_TASK_ROOT/runtime.py"\n')
    bootstrap.chmod(0o755)
    rp = router_factory(f"""
version: 1
server: {{host: 127.0.0.1, port: @PORT@}}
state: sqlite:///{tmp_path / 'state.db'}
functions:
  plain: {{runtime: {NODE_RUNTIME}, handler: index.plain, code: {node},
           url: {{auth: NONE, invoke_mode: RESPONSE_STREAM}}}}
  web: {{runtime: {NODE_RUNTIME}, handler: index.http, code: {node},
         url: {{auth: NONE, invoke_mode: RESPONSE_STREAM}}}}
  failing: {{runtime: {NODE_RUNTIME}, handler: index.failing, code: {node},
             url: {{auth: NONE, invoke_mode: RESPONSE_STREAM}}}}
  buffered: {{runtime: {RUNTIME}, handler: app.handler, code: {py},
              url: {{auth: NONE, invoke_mode: RESPONSE_STREAM}}}}
  bfails: {{runtime: {RUNTIME}, handler: app.fails, code: {py}}}
  custom: {{runtime: provided, handler: none, code: {custom}, environment: {{PYTHON: {sys.executable}}},
            url: {{auth: NONE, invoke_mode: RESPONSE_STREAM}}}}
  misuse: {{runtime: {NODE_RUNTIME}, handler: index.misuse, code: {node},
            url: {{auth: NONE, invoke_mode: RESPONSE_STREAM}}}}
  multi: {{runtime: {NODE_RUNTIME}, handler: index.plain, code: {node}, per_environment_concurrency: 2}}
  piped: {{runtime: {NODE_RUNTIME}, handler: index.piped, code: {node}}}
  slow: {{runtime: {NODE_RUNTIME}, handler: index.plain, code: {node}, timeout: 2s,
          url: {{auth: NONE, invoke_mode: RESPONSE_STREAM}}}}
routes:
  - {{name: live, source: {{type: webhook, path: /live, methods: [GET], stream: true}}, function: web}}
  - {{name: live-plain, source: {{type: webhook, path: /live-plain, methods: [GET], stream: true}},
     function: plain}}
  - {{name: live-buffered, source: {{type: webhook, path: /live-buffered, methods: [GET], stream: true}},
     function: buffered}}
""")
    yield rp
    assert rp.stop() == 0


def _client(url: str) -> Any:
    return boto3.client("lambda", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x",
                        aws_secret_access_key="x",
                        config=Config(retries={"max_attempts": 1}, read_timeout=60))


def _open(rp: RouterProcess, path: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", rp.port, timeout=60)
    conn.request("GET", path)
    return conn, conn.getresponse()


def _read_until(resp: http.client.HTTPResponse, wanted: bytes) -> bytes:
    """Read what has arrived until ``wanted`` is among it (fails on the socket timeout)."""
    got = b""
    while wanted not in got:
        piece = resp.read1(65536)
        assert piece, f"the response ended before {wanted!r}; got {got!r}"
        got += piece
    return got


def test_function_url_streams_chunks_before_the_function_finishes(streaming: RouterProcess,
                                                                  tmp_path: Path) -> None:
    gate = tmp_path / "gate-url"
    conn, resp = _open(streaming, f"/lambda-url/plain/?gate={quote(str(gate))}")
    try:
        assert resp.status == 200
        assert resp.getheader("Transfer-Encoding") == "chunked"
        assert resp.getheader("Content-Type", "").startswith("text/plain")
        assert resp.getheader("x-amzn-RequestId")
        first = _read_until(resp, b"first;")  # the handler is still waiting for the gate
        gate.touch()
        rest = resp.read()
    finally:
        conn.close()
    assert first + rest == b"first;second:plain;last"


def test_http_integration_response_prelude_gives_status_headers_and_cookies(streaming: RouterProcess,
                                                                              tmp_path: Path) -> None:
    gate = tmp_path / "gate-http"
    conn, resp = _open(streaming, f"/lambda-url/web/?gate={quote(str(gate))}")
    try:
        assert resp.status == 201
        assert resp.getheader("Content-Type") == "text/event-stream"
        assert resp.getheader("X-Custom") == "yes"
        assert sorted(v for k, v in resp.getheaders() if k.lower() == "set-cookie") == ["a=1; Path=/", "b=2"]
        first = _read_until(resp, b"data: one\n\n")
        assert b"\0" not in first  # the prelude and its delimiter are not part of the body
        gate.touch()
        rest = resp.read()
    finally:
        conn.close()
    assert first + rest == b"data: one\n\ndata: two\n\n"


def test_a_mid_stream_failure_cuts_the_url_response_short(streaming: RouterProcess, tmp_path: Path) -> None:
    gate = tmp_path / "gate-fail"
    conn, resp = _open(streaming, f"/lambda-url/failing/?gate={quote(str(gate))}")
    try:
        assert resp.status == 200
        _read_until(resp, b"partial;")
        gate.touch()
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
    finally:
        conn.close()


def test_a_buffered_function_behind_a_streaming_url_answers_its_response_as_is(
        streaming: RouterProcess) -> None:
    conn, resp = _open(streaming, "/lambda-url/buffered/x")
    try:
        assert resp.status == 200
        body = json.loads(resp.read())
    finally:
        conn.close()
    assert body["buffered"] is True
    assert body["event"]["rawPath"] == "/x"


def test_boto3_invoke_with_response_stream_reads_chunks_as_they_come(streaming: RouterProcess,
                                                                       tmp_path: Path) -> None:
    gate = tmp_path / "gate-boto"
    resp = _client(streaming.url).invoke_with_response_stream(
        FunctionName="plain", Payload=json.dumps({"gate": str(gate)}).encode(), LogType="Tail")
    assert resp["StatusCode"] == 200
    assert resp["ExecutedVersion"] == "$LATEST"
    assert resp["ResponseStreamContentType"] == "text/plain"
    events = iter(resp["EventStream"])
    first = next(events)
    assert first == {"PayloadChunk": {"Payload": b"first;"}}  # before the handler may finish
    gate.touch()
    rest = list(events)
    payload = b"first;" + b"".join(e["PayloadChunk"]["Payload"] for e in rest if "PayloadChunk" in e)
    assert payload == b"first;second:plain;last"
    complete = rest[-1]["InvokeComplete"]
    assert "ErrorCode" not in complete
    assert "LogResult" in complete


def test_boto3_sees_a_mid_stream_error_in_invoke_complete(streaming: RouterProcess, tmp_path: Path) -> None:
    gate = tmp_path / "gate-boto-fail"
    resp = _client(streaming.url).invoke_with_response_stream(
        FunctionName="failing", Payload=json.dumps({"gate": str(gate)}).encode())
    events = iter(resp["EventStream"])
    assert next(events) == {"PayloadChunk": {"Payload": b"partial;"}}
    gate.touch()
    rest = list(events)
    complete = rest[-1]["InvokeComplete"]
    assert complete["ErrorCode"] == "Error"
    assert complete["ErrorDetails"] == "mid-stream failure"


def test_a_buffered_python_function_is_one_payload_chunk(streaming: RouterProcess) -> None:
    client = _client(streaming.url)
    resp = client.invoke_with_response_stream(FunctionName="buffered", Payload=b'{"n": 1}')
    assert resp["ResponseStreamContentType"] == "application/json"
    events = list(resp["EventStream"])
    assert len(events) == 2
    assert json.loads(events[0]["PayloadChunk"]["Payload"]) == {"buffered": True, "event": {"n": 1}}
    assert events[1] == {"InvokeComplete": {}}
    failed = list(client.invoke_with_response_stream(FunctionName="bfails")["EventStream"])
    assert failed == [{"InvokeComplete": {"ErrorCode": "ValueError", "ErrorDetails": "buffered failure"}}]
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke_with_response_stream(FunctionName="nope")
    dry = client.invoke_with_response_stream(FunctionName="buffered", InvocationType="DryRun")
    dry["EventStream"].close()
    assert dry["StatusCode"] == 204
    with pytest.raises(client.exceptions.InvalidRequestContentException, match="Could not parse payload"):
        client.invoke_with_response_stream(FunctionName="buffered", Payload=b"{not json")


def test_a_custom_runtime_streams_through_the_runtime_api(streaming: RouterProcess, tmp_path: Path) -> None:
    gate = tmp_path / "gate-custom"
    conn, resp = _open(streaming, f"/lambda-url/custom/?gate={quote(str(gate))}")
    try:
        assert resp.status == 200
        assert resp.getheader("Content-Type") == "text/csv"
        first = _read_until(resp, b"custom-first;")
        gate.touch()
        rest = resp.read()
    finally:
        conn.close()
    assert first + rest == b"custom-first;custom-last"
    failing_gate = tmp_path / "gate-custom-fail"
    out = _client(streaming.url).invoke_with_response_stream(
        FunctionName="custom", Payload=json.dumps({"gate": str(failing_gate), "fail": True}).encode())
    events = iter(out["EventStream"])
    assert next(events) == {"PayloadChunk": {"Payload": b"custom-first;"}}
    failing_gate.touch()
    complete = {"ErrorCode": "Custom.Broken", "ErrorDetails": "custom failure"}
    assert list(events) == [{"InvokeComplete": complete}]


def test_a_streaming_webhook_route_answers_as_the_function_writes(streaming: RouterProcess,
                                                                   tmp_path: Path) -> None:
    gate = tmp_path / "gate-webhook"
    conn, resp = _open(streaming, f"/live?gate={quote(str(gate))}")
    try:
        assert resp.status == 201
        assert resp.getheader("X-Custom") == "yes"
        assert resp.getheader("apigw-requestid")
        first = _read_until(resp, b"data: one\n\n")
        gate.touch()
        rest = resp.read()
    finally:
        conn.close()
    assert first + rest == b"data: one\n\ndata: two\n\n"
    plain_gate = tmp_path / "gate-webhook-plain"
    conn, resp = _open(streaming, f"/live-plain?gate={quote(str(plain_gate))}")
    try:
        assert resp.getheader("Content-Type", "").startswith("text/plain")
        first = _read_until(resp, b"first;")
        plain_gate.touch()
        assert first + resp.read() == b"first;second:plain;last"
    finally:
        conn.close()
    conn, resp = _open(streaming, "/live-buffered")  # a function that does not stream: mapped as v2
    try:
        assert resp.status == 200
        assert json.loads(resp.read())["buffered"] is True
    finally:
        conn.close()


def test_a_timeout_mid_stream_ends_the_event_stream_with_the_timeout(streaming: RouterProcess,
                                                                      tmp_path: Path) -> None:
    never = tmp_path / "never-created"
    resp = _client(streaming.url).invoke_with_response_stream(
        FunctionName="slow", Payload=json.dumps({"gate": str(never)}).encode())
    events = list(resp["EventStream"])
    assert events[0] == {"PayloadChunk": {"Payload": b"first;"}}
    complete = events[-1]["InvokeComplete"]
    assert complete["ErrorCode"] == "Sandbox.Timedout"
    assert "Task timed out after 2.00 seconds" in complete["ErrorDetails"]


def test_a_client_gone_mid_stream_lets_the_function_finish(streaming: RouterProcess, tmp_path: Path) -> None:
    gate = tmp_path / "gate-gone"
    conn, resp = _open(streaming, f"/lambda-url/plain/?gate={quote(str(gate))}")
    _read_until(resp, b"first;")
    conn.close()  # the caller goes away while the function still runs
    gate.touch()
    # The function's environment is not stuck: the next call streams whole.
    again = _client(streaming.url).invoke_with_response_stream(
        FunctionName="plain", Payload=json.dumps({"gate": str(gate)}).encode())
    chunks = [e["PayloadChunk"]["Payload"] for e in again["EventStream"] if "PayloadChunk" in e]
    assert b"".join(chunks) == b"first;second:plain;last"


def test_stream_pipeline_into_the_response_stream(streaming: RouterProcess) -> None:
    client = _client(streaming.url)
    events = list(client.invoke_with_response_stream(FunctionName="piped")["EventStream"])
    assert b"".join(e["PayloadChunk"]["Payload"] for e in events if "PayloadChunk" in e) == \
        b"piped-1;piped-2;piped-3"
    assert events[-1] == {"InvokeComplete": {}}
    # Invoked with Invoke, a streaming function's response is buffered whole, as on Lambda.
    whole = client.invoke(FunctionName="piped")
    assert "FunctionError" not in whole
    assert whole["Payload"].read() == b"piped-1;piped-2;piped-3"


@pytest.mark.parametrize(("case", "error_code", "details"), [
    ("sync", "string", "Streaming does not support non-async handlers."),
    ("unfinished", "string", "Response stream is not finished."),
    ("early", "TypeError", "failed before any byte"),
])
def test_handler_misuse_is_the_errors_lambdas_client_reports(streaming: RouterProcess, case: str,
                                                              error_code: str, details: str) -> None:
    events = list(_client(streaming.url).invoke_with_response_stream(
        FunctionName="misuse", Payload=json.dumps({"case": case}).encode())["EventStream"])
    assert events[-1] == {"InvokeComplete": {"ErrorCode": error_code, "ErrorDetails": details}}


def test_an_error_before_any_byte_is_a_502_from_the_url(streaming: RouterProcess) -> None:
    conn, resp = _open(streaming, "/lambda-url/misuse/?case=early")
    try:
        assert resp.status == 502
        assert resp.read() == b"Internal Server Error"
    finally:
        conn.close()


def test_streams_of_a_multi_concurrent_environment(streaming: RouterProcess, tmp_path: Path) -> None:
    client = _client(streaming.url)
    gates = [tmp_path / "gate-multi-1", tmp_path / "gate-multi-2"]
    streams = [iter(client.invoke_with_response_stream(
        FunctionName="multi", Payload=json.dumps({"gate": str(gate)}).encode())["EventStream"])
        for gate in gates]
    for events in streams:  # both have streamed their first chunk while both handlers still wait
        assert next(events) == {"PayloadChunk": {"Payload": b"first;"}}
    for gate in gates:
        gate.touch()
    for events in streams:
        rest = list(events)
        chunks = [e["PayloadChunk"]["Payload"] for e in rest if "PayloadChunk" in e]
        assert b"".join(chunks) == b"second:multi;last"
        assert rest[-1] == {"InvokeComplete": {}}
