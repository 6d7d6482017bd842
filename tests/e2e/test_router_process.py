"""The router as a user runs it: ``router run`` in its own process, driven over real HTTP."""

from __future__ import annotations

import json
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.router_process import RouterFactory, http
from tests.waiting import until_sync

FUNCTIONS = {
    "apigw": """
        import json
        def handler(event, context):
            return {"statusCode": 201, "headers": {"x-who": context.function_name},
                    "cookies": ["a=1"], "body": json.dumps({"path": event["rawPath"],
                    "id": event["pathParameters"]["id"], "q": event.get("queryStringParameters")})}
    """,
    "plain": """
        def handler(event, context):
            return [event["requestContext"]["http"]["method"], context.aws_request_id]
    """,
    "flaky": """
        import json, os
        def handler(event, context):
            path = os.path.join(os.environ["OUT_DIR"], "flaky-" + context.aws_request_id)
            with open(path, "a") as f:
                f.write("x")
            with open(path) as f:
                n = len(f.read())
            if n <= 2:
                raise RuntimeError(f"attempt {n} fails")
            with open(os.path.join(os.environ["OUT_DIR"], "flaky-done"), "a") as f:
                f.write(json.dumps({"request_id": context.aws_request_id, "attempts": n}) + "\\n")
            return {"attempts": n}
    """,
    "broken": """
        def handler(event, context):
            raise ValueError("always broken: " + event.get("body", ""))
    """,
    "sleepy": """
        import json, time
        def handler(event, context):
            time.sleep(float(json.loads(event.get("body") or "{}").get("seconds", 30)))
            return "woke"
    """,
    "ticker": """
        import json, os
        def handler(event, context):
            with open(os.path.join(os.environ["OUT_DIR"], "ticks"), "a") as f:
                f.write(json.dumps(event) + "\\n")
    """,
}


def _config(tmp_path: Path, extra_routes: str = "", extra_functions: str = "") -> str:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    fdir = tmp_path / "functions"
    fns = "\n".join(
        f"""  {name}:
    runtime: python3.11
    handler: app.handler
    code: {fdir / name}
    timeout: 5s
    environment: {{OUT_DIR: "{out}"}}
    async: {{retries: 2, backoff: {{initial: 10ms, max: 50ms}},
             on_failure: {{type: file, path: {out / 'failures.jsonl'}}}}}"""
        for name in FUNCTIONS
    )
    return f"""
version: 1
server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 10s}}
state: sqlite:///{tmp_path / 'state.db'}
functions:
{fns}
{extra_functions}
routes:
  - {{name: apigw, source: {{type: webhook, path: "/items/{{id}}", methods: [GET, POST]}}, function: apigw}}
  - {{name: plain, source: {{type: webhook, path: /plain, methods: [ANY]}}, function: plain}}
  - {{name: flaky, source: {{type: webhook, path: /flaky}}, function: flaky, invocation: async}}
  - {{name: broken, source: {{type: webhook, path: /broken}}, function: broken, invocation: async}}
  - {{name: sleepy, source: {{type: webhook, path: /sleepy}}, function: sleepy}}
{extra_routes}
"""


def _write_functions(router_factory: RouterFactory) -> None:
    for name, code in FUNCTIONS.items():
        router_factory.write_function(name, code)


def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, _, body = http("GET", url + "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_sync_webhook_maps_api_gateway_response_and_plain_json(router_factory: RouterFactory,
                                                                tmp_path: Path) -> None:
    _write_functions(router_factory)
    rp = router_factory(_config(tmp_path))

    status, headers, body = http("GET", rp.url + "/items/42?color=red&color=blue")
    assert status == 201, body
    assert headers["x-who"] == "apigw"
    assert "a=1" in headers.get("set-cookie", "")
    assert json.loads(body) == {"path": "/items/42", "id": "42", "q": {"color": "red,blue"}}

    status, headers, body = http("PUT", rp.url + "/plain", b"hi")
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    method, request_id = json.loads(body)
    assert method == "PUT"
    assert len(request_id) == 36

    # The handler's START/END/REPORT lines carry the request id in the router's JSON log.
    records = until_sync(
        lambda: [r for r in rp.log_records() if r.get("request_id") == request_id
                 and str(r.get("message", "")).startswith("REPORT RequestId")],
        what="REPORT line for the request", deadline=20,
    )
    assert records[0]["function"] == "plain"

    samples = _metrics(rp.url)
    assert samples[("router_invocations_total",
                    (("function", "plain"), ("outcome", "success"), ("source", "webhook")))] == 1
    assert samples[("router_webhook_requests_total", (("route", "apigw"), ("status", "201")))] == 1
    assert samples[("router_cold_starts_total", (("function", "apigw"),))] >= 1
    assert rp.stop() == 0


def test_async_retries_then_success_and_exhausted_goes_to_file_destination(
    router_factory: RouterFactory, tmp_path: Path
) -> None:
    _write_functions(router_factory)
    rp = router_factory(_config(tmp_path))
    out = tmp_path / "out"

    status, _, body = http("POST", rp.url + "/flaky", b'{"n": 1}')
    assert status == 202, body
    flaky_id = json.loads(body)["requestId"]
    status, _, body = http("POST", rp.url + "/broken", b"poison")
    assert status == 202, body
    broken_id = json.loads(body)["requestId"]

    done = until_sync(lambda: (out / "flaky-done").exists() and (out / "flaky-done").read_text(),
                      what="flaky handler to succeed", deadline=20)
    assert json.loads(done.splitlines()[0]) == {"request_id": flaky_id, "attempts": 3}

    failures = until_sync(lambda: (out / "failures.jsonl").exists() and (out / "failures.jsonl").read_text(),
                          what="failure destination record", deadline=20)
    record = json.loads(failures.splitlines()[0])
    assert record["version"] == "1.0"
    assert record["requestContext"]["requestId"] == broken_id
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestContext"]["functionArn"].endswith(":function:broken:$LATEST")
    assert record["requestPayload"]["body"] == "poison"
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorType"] == "ValueError"
    assert record["responsePayload"]["errorMessage"] == "always broken: poison"

    samples = until_sync(
        lambda: (s := _metrics(rp.url)).get(
            ("router_invocations_total",
             (("function", "broken"), ("outcome", "error"), ("source", "webhook")))
        ) == 3 and s,
        what="3 failed attempts counted", deadline=20,
    )
    assert samples[("router_retries_total", (("function", "flaky"),))] == 2
    assert samples[("router_async_events_received_total", (("function", "broken"),))] == 1
    assert rp.stop() == 0


def test_timeout_kills_the_handler_and_reports_it(router_factory: RouterFactory, tmp_path: Path) -> None:
    _write_functions(router_factory)
    rp = router_factory(_config(tmp_path).replace("timeout: 5s", "timeout: 1s"))
    status, _, body = http("POST", rp.url + "/sleepy", b"")
    assert status == 503, body
    records = until_sync(
        lambda: [r for r in rp.log_records() if "Task timed out after 1.00 seconds" in str(r.get("message"))],
        what="timeout log line", deadline=20,
    )
    assert records[0]["function"] == "sleepy"
    samples = _metrics(rp.url)
    assert samples[("router_invocations_total",
                    (("function", "sleepy"), ("outcome", "timeout"), ("source", "webhook")))] == 1
    assert rp.stop() == 0


def test_concurrency_cap_throttles_exactly_the_excess(router_factory: RouterFactory, tmp_path: Path) -> None:
    _write_functions(router_factory)
    gate = tmp_path / "gate"
    router_factory.write_function("gated", f"""
        import os, time
        def handler(event, context):
            open(os.path.join("{tmp_path}", "started-" + context.aws_request_id), "w").close()
            while not os.path.exists("{gate}"):
                time.sleep(0.01)
            return "done"
    """)
    extra_fn = f"""  gated:
    runtime: python3.11
    handler: app.handler
    code: {tmp_path / 'functions' / 'gated'}
    timeout: 30s
    concurrency: 2"""
    extra_route = "  - {name: gated, source: {type: webhook, path: /gated}, function: gated}"
    rp = router_factory(_config(tmp_path, extra_route, extra_fn))

    statuses: list[int] = []
    lock = threading.Lock()

    def call() -> None:
        status = http("POST", rp.url + "/gated", b"{}", timeout=60)[0]
        with lock:
            statuses.append(status)

    with ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(call) for _ in range(5)]
        # The 3 throttled calls answer at once, while 2 handlers hold their slots.
        until_sync(lambda: len(statuses) == 3 and len(list(tmp_path.glob("started-*"))) == 2,
                   what="3 throttled answers while 2 run", deadline=20)
        gate.touch()
        for f in futures:
            f.result()
    assert sorted(statuses) == [200, 200, 429, 429, 429]
    samples = _metrics(rp.url)
    assert samples[("router_throttles_total", (("function", "gated"), ("source", "webhook")))] == 3
    assert rp.stop() == 0


def test_the_account_limit_throttles_across_functions(router_factory: RouterFactory, tmp_path: Path) -> None:
    # limits.concurrent_executions caps the router as a whole (Lambda's account limit): a function with
    # no concurrency of its own is throttled once the router runs that many invocations.
    _write_functions(router_factory)
    gate = tmp_path / "gate"
    router_factory.write_function("gated", f"""
        import os, time
        def handler(event, context):
            open(os.path.join("{tmp_path}", "started-" + context.aws_request_id), "w").close()
            while not os.path.exists("{gate}"):
                time.sleep(0.01)
            return "done"
    """)
    extra_fn = f"""  gated:
    runtime: python3.11
    handler: app.handler
    code: {tmp_path / 'functions' / 'gated'}
    timeout: 30s"""
    extra_route = "  - {name: gated, source: {type: webhook, path: /gated}, function: gated}"
    config = _config(tmp_path, extra_route, extra_fn) + "limits: {concurrent_executions: 2}\n"
    rp = router_factory(config)

    answers: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def call() -> None:
        status, _, body = http("POST", rp.url + "/gated", b"{}", timeout=60)
        with lock:
            answers.append((status, body))

    with ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(call) for _ in range(5)]
        until_sync(lambda: len(answers) == 3 and len(list(tmp_path.glob("started-*"))) == 2,
                   what="3 throttled answers while 2 run", deadline=20)
        gate.touch()
        for f in futures:
            f.result()
    assert sorted(status for status, _ in answers) == [200, 200, 429, 429, 429]
    samples = _metrics(rp.url)
    assert samples[("router_throttles_total", (("function", "gated"), ("source", "webhook")))] == 3
    assert samples[("router_account_concurrent_executions", ())] == 0
    assert rp.stop() == 0


def test_schedule_rate_fires_the_scheduled_event(router_factory: RouterFactory, tmp_path: Path) -> None:
    _write_functions(router_factory)
    route = "  - {name: tick, source: {type: schedule, rate: 1s}, function: ticker}"
    rp = router_factory(_config(tmp_path, route))
    ticks = tmp_path / "out" / "ticks"
    lines = until_sync(lambda: ticks.exists() and len(ticks.read_text().splitlines()) >= 2 and
                       ticks.read_text().splitlines(), what="two schedule fires", deadline=20)
    event = json.loads(lines[0])
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["resources"][0].endswith(":rule/tick")
    samples = _metrics(rp.url)
    assert samples[("router_schedule_runs_total", (("outcome", "fired"), ("route", "tick")))] >= 2
    assert rp.stop() == 0


def test_sigterm_finishes_in_flight_request_then_exits_zero(router_factory: RouterFactory,
                                                           tmp_path: Path) -> None:
    _write_functions(router_factory)
    rp = router_factory(_config(tmp_path))
    result: dict[str, object] = {}

    def call() -> None:
        result["resp"] = http("POST", rp.url + "/sleepy", b'{"seconds": 1.5}', timeout=30)

    t = threading.Thread(target=call)
    t.start()
    until_sync(lambda: any(str(r.get("message", "")).startswith("START RequestId") for r in rp.log_records()),
               what="the sleepy invocation to start", deadline=20)
    assert rp.proc is not None
    rp.proc.send_signal(signal.SIGTERM)
    # Not ready as soon as shutdown begins (or already closed).
    t.join(30)
    status, _, body = result["resp"]  # type: ignore[misc]
    assert (status, json.loads(body)) == (200, "woke")
    assert rp.stop() == 0
    assert "router stopped" in rp.logs()
