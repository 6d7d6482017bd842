"""Hot reload of a running ``router run``: ``router reload`` and SIGHUP re-read the config file; functions and
routes that changed are drained and restarted while the rest keep running (and keep their environments);
no accepted event is lost under load; a broken file, or a change only a restart applies, is refused with
the file's errors and the running config kept."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.router_process import RouterFactory, RouterProcess, http, metric_sample
from tests.waiting import until_sync

STEADY = """
    import os

    def handler(event, context):
        return {"statusCode": 200, "body": str(os.getpid())}
"""
VERSIONED = """
    import os

    def handler(event, context):
        return {"statusCode": 200, "body": os.environ["VERSION"]}
"""
SINK = """
    import os

    def handler(event, context):
        with open(os.environ["SINK"], "a") as f:
            f.write(event["body"] + "\\n")
"""


def _config(tmp_path: Path, router_factory: RouterFactory, *, version: str, extra_route: str = "",
            with_versioned: bool = True) -> str:
    steady = router_factory.write_function("steady", STEADY)
    versioned = router_factory.write_function("versioned", VERSIONED)
    sink = router_factory.write_function("sink", SINK)
    versioned_function = (f"""versioned: {{runtime: python3.11, handler: app.handler, code: {versioned},
                      timeout: 10s, environment: {{VERSION: "{version}"}}}}""" if with_versioned else "")
    versioned_route = ("- {name: versioned, source: {type: webhook, path: /versioned}, function: versioned}"
                       if with_versioned else "")
    return f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 10s}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          steady: {{runtime: python3.11, handler: app.handler, code: {steady}, timeout: 10s}}
          {versioned_function}
          sink: {{runtime: python3.11, handler: app.handler, code: {sink}, timeout: 10s,
                 environment: {{SINK: "{tmp_path / 'sink.txt'}", VERSION: "{version}"}},
                 async: {{retries: 2, backoff: {{initial: 0.1s, max: 0.5s}}}}}}
        routes:
          - {{name: steady, source: {{type: webhook, path: /steady}}, function: steady}}
          {versioned_route}
          - {{name: events, source: {{type: webhook, path: /events}}, function: sink, invocation: async}}
        {extra_route}
    """


def _write(rp: RouterProcess, text: str) -> None:
    import textwrap

    rp.config_path.write_text(textwrap.dedent(text).replace("@PORT@", str(rp.port)))


def _reload(rp: RouterProcess) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router", "reload", "--config", str(rp.config_path), "--url", rp.url],
        capture_output=True, text=True, timeout=120, check=False)



class _Load:
    """Sync requests to /steady and /versioned and numbered async events to /events, from two threads,
    bounded in count; every answer kept."""

    def __init__(self, rp: RouterProcess, limit: int = 3000) -> None:
        self.rp = rp
        self.limit = limit
        self.stop = threading.Event()
        self.sync_answers: list[tuple[str, int, str]] = []
        self.accepted: list[int] = []
        self.refused: list[tuple[int, int]] = []
        self._threads = [threading.Thread(target=self._sync, daemon=True),
                         threading.Thread(target=self._async, daemon=True)]

    def __enter__(self) -> _Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def _sync(self) -> None:
        for i in range(self.limit):
            if self.stop.is_set():
                return
            path = "/steady" if i % 2 else "/versioned"
            try:
                status, _, body = http("POST", self.rp.url + path, b"{}", timeout=20)
            except OSError as exc:
                self.sync_answers.append((path, -1, str(exc)))
                continue
            self.sync_answers.append((path, status, body.decode()))

    def _async(self) -> None:
        for i in range(self.limit):
            if self.stop.is_set():
                return
            try:
                status, _, _ = http("POST", self.rp.url + "/events", str(i).encode(), timeout=20)
            except OSError:
                status = -1
            (self.accepted.append(i) if status == 202 else self.refused.append((i, status)))


def test_reload_under_load_loses_nothing_and_keeps_what_did_not_change(
        router_factory: RouterFactory, tmp_path: Path) -> None:
    rp = router_factory(_config(tmp_path, router_factory, version="1"))
    with _Load(rp) as load:
        until_sync(lambda: len(load.sync_answers) > 40 and len(load.accepted) > 40, deadline=60,
                   what="load before the reload")
        steady_before = {b for p, s, b in load.sync_answers if p == "/steady" and s == 200}
        _write(rp, _config(tmp_path, router_factory, version="2", extra_route=(
            "  - {name: added, source: {type: webhook, path: /added}, function: steady}")))
        done = _reload(rp)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("reloaded: generation 2: functions changed: sink, versioned; "
                                      "routes added: added"), done.stdout
        mark = len(load.sync_answers)
        until_sync(lambda: sum(1 for p, _, _ in load.sync_answers[mark:] if p == "/steady") > 20
                   and len(load.accepted) > 100, deadline=60, what="load after the reload")
    answers = load.sync_answers
    assert [a for a in answers if a[1] != 200] == []  # nothing refused or lost during the switch
    after = answers[mark:]
    versions_after = [b for p, _, b in after if p == "/versioned"]
    assert versions_after[-1] == "2"
    assert all(v in ("1", "2") for v in versions_after)  # in flight at the switch: the old version
    assert versions_after[-5:] == ["2"] * 5
    # The unchanged function kept its environments: the same processes answer.
    steady_after = {b for p, s, b in after if p == "/steady"}
    assert steady_after <= steady_before, (steady_before, steady_after)
    assert load.refused == []
    # Every accepted async event ran (the sink function was replaced while events were in flight).
    sink = tmp_path / "sink.txt"

    def delivered() -> set[int]:
        return {int(line) for line in sink.read_text().split()} if sink.exists() else set()

    until_sync(lambda: set(load.accepted) <= delivered(), deadline=60, what="every accepted event delivered")
    status, _, body = http("POST", rp.url + "/added", b"{}", timeout=10)
    assert (status, body.decode() in steady_after | steady_before) == (200, True)
    assert metric_sample(rp.url, "router_config_generation") == 2
    assert metric_sample(rp.url, 'router_config_reloads_total{result="applied"}') == 1
    assert rp.stop() == 0


def test_a_broken_file_or_a_restart_only_change_is_refused_and_the_router_keeps_serving(
        router_factory: RouterFactory, tmp_path: Path) -> None:
    rp = router_factory(_config(tmp_path, router_factory, version="1"))
    good = rp.config_path.read_text()
    rp.config_path.write_text(good.replace("runtime: python3.11, handler: app.handler, code:",
                                           "runtime: python3.11, handlr: app.handler, code:", 1))
    refused = _reload(rp)  # the command checks the file itself first
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"{rp.config_path}:6:33: functions.steady.handlr: unknown key 'handlr'; did you mean 'handler'?",
        "router reload: not asked; fix the file first (the running router keeps its config)"]
    status, _, body = http("POST", rp.url + "/admin/reload", b"", timeout=60)  # the router checks it too
    assert status == 400
    answer = json.loads(body)
    assert answer["result"] == "refused"
    assert answer["generation"] == 1
    assert answer["problems"] == [
        f"{rp.config_path}:6:33: functions.steady.handlr: unknown key 'handlr'; did you mean 'handler'?"]
    rp.config_path.write_text(good.replace(f"port: {rp.port}", f"port: {rp.port + 1}"))
    refused = _reload(rp)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        "reload refused, still serving generation 1:",
        "  server changed: only a restart applies this setting; the running config is kept (restart the "
        "router, or undo the change to reload the rest)"], refused.stderr
    assert http("POST", rp.url + "/versioned", b"{}", timeout=10)[2] == b"1"
    assert metric_sample(rp.url, 'router_config_reloads_total{result="refused"}') == 2
    assert metric_sample(rp.url, "router_config_generation") == 1
    rp.config_path.write_text(good)
    same = _reload(rp)
    assert (same.returncode, same.stdout.strip()) == (0, "no change (generation 1)")
    records = [r for r in rp.log_records() if str(r.get("message", "")).startswith("reload refused")]
    assert len(records) >= 2
    assert rp.stop() == 0


def test_sighup_reloads_and_a_removed_route_and_function_are_gone(
        router_factory: RouterFactory, tmp_path: Path) -> None:
    rp = router_factory(_config(tmp_path, router_factory, version="1"))
    assert http("POST", rp.url + "/versioned", b"{}", timeout=10)[0] == 200
    assert http("GET", rp.url + "/2015-03-31/functions/versioned", timeout=10)[0] == 200  # control API
    _write(rp, _config(tmp_path, router_factory, version="1", with_versioned=False))
    assert rp.proc is not None
    rp.proc.send_signal(signal.SIGHUP)
    until_sync(lambda: metric_sample(rp.url, "router_config_generation") == 2, deadline=60,
               what="generation 2")
    status, _, body = http("POST", rp.url + "/versioned", b"{}", timeout=10)
    assert status == 404, body
    assert http("POST", rp.url + "/steady", b"{}", timeout=10)[0] == 200
    status, _, body = http("POST", rp.url + "/2015-03-31/functions/versioned/invocations", b"{}", timeout=10)
    assert status == 404
    assert json.loads(body)["Message"].startswith("Function not found: arn:aws:lambda:")
    # Lambda's control API answers from the running config, not the one the router started with
    assert http("GET", rp.url + "/2015-03-31/functions/versioned", timeout=10)[0] == 404
    status, _, body = http("GET", rp.url + "/2015-03-31/functions", timeout=10)
    assert status == 200, body
    assert sorted(f["FunctionName"] for f in json.loads(body)["Functions"]) == ["sink", "steady"]
    assert rp.stop() == 0


RECORD = """
    import os

    def handler(event, context):
        with open(os.environ["OUT"], "a") as f:
            for record in event["Records"]:
                f.write(record["body"] + " " + os.environ["VERSION"] + "\\n")
"""


def _sqs_config(tmp_path: Path, code: Path, moto_server: str, queue_url: str, *, batch: int,
                version: str) -> str:
    return f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 10s}}
        state: sqlite:///{tmp_path / 'state.db'}
        aws: {{region: us-east-1, endpoint_url: "{moto_server}"}}
        functions:
          record: {{runtime: python3.11, handler: app.handler, code: {code}, timeout: 10s, concurrency: 4,
                   environment: {{OUT: "{tmp_path / 'out.txt'}", VERSION: "{version}"}}}}
        routes:
          - name: jobs
            source: {{type: sqs, queue_url: "{queue_url}", batch_size: {batch}, max_concurrency: 4,
                     wait_time: 1s}}
            function: record
    """


def test_a_changed_poller_route_hands_back_and_starts_again_losing_nothing(
        router_factory: RouterFactory, tmp_path: Path, moto_server: str) -> None:
    import uuid

    import boto3

    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto_server)
    queue_url = sqs.create_queue(QueueName=f"reload-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    code = router_factory.write_function("record", RECORD)
    rp = router_factory(_sqs_config(tmp_path, code, moto_server, queue_url, batch=10, version="1"))
    out = tmp_path / "out.txt"

    def seen() -> dict[str, set[str]]:
        got: dict[str, set[str]] = {}
        for line in out.read_text().splitlines() if out.exists() else []:
            body, version = line.split()
            got.setdefault(body, set()).add(version)
        return got

    def send(first: int, count: int) -> None:
        for i in range(first, first + count, 10):
            sqs.send_message_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(n), "MessageBody": f"m{n}"} for n in range(i, min(i + 10, first + count))])

    send(0, 60)
    until_sync(lambda: len(seen()) >= 20, deadline=60, what="some messages delivered before the reload")
    _write(rp, _sqs_config(tmp_path, code, moto_server, queue_url, batch=5, version="2"))
    done = _reload(rp)  # waits for the route's poller to finish its long poll and hand back
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("reloaded: generation 2: functions changed: record; routes changed: jobs")
    send(60, 60)
    until_sync(lambda: len(seen()) == 120, deadline=120, what="every message delivered")
    got = seen()
    assert set(got) == {f"m{n}" for n in range(120)}
    assert all(got[f"m{n}"] == {"2"} for n in range(60, 120))  # sent after: the new function only
    assert rp.stop() == 0
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0"
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
    sqs.close()


def test_what_was_paused_at_run_time_stays_paused_across_a_reload(
        router_factory: RouterFactory, tmp_path: Path) -> None:
    rp = router_factory(_config(tmp_path, router_factory, version="1"))
    assert http("POST", rp.url + "/admin/routes/versioned/pause", b"", timeout=10)[0] == 200
    status, _, _ = http("PUT", rp.url + "/2017-10-31/functions/steady/concurrency",
                        json.dumps({"ReservedConcurrentExecutions": 0}).encode(), timeout=10)
    assert status == 200
    assert http("POST", rp.url + "/versioned", b"{}", timeout=10)[0] == 503
    assert http("POST", rp.url + "/steady", b"{}", timeout=10)[0] == 429
    # Both the paused route and the paused function change in the file: still paused after the reload.
    text = _config(tmp_path, router_factory, version="2").replace(
        "path: /versioned}", "path: /versioned, methods: [POST, PUT]}").replace(
        "code: " + str(tmp_path / "functions" / "steady") + ", timeout: 10s",
        "code: " + str(tmp_path / "functions" / "steady") + ", timeout: 11s")
    _write(rp, text)
    done = _reload(rp)
    assert done.returncode == 0, done.stderr
    assert "functions changed: sink, steady, versioned; routes changed: versioned" in done.stdout
    assert http("POST", rp.url + "/versioned", b"{}", timeout=10)[0] == 503
    assert http("POST", rp.url + "/steady", b"{}", timeout=10)[0] == 429
    assert http("POST", rp.url + "/admin/routes/versioned/resume", b"", timeout=10)[0] == 200
    assert http("DELETE", rp.url + "/2017-10-31/functions/steady/concurrency", timeout=10)[0] == 204
    assert http("PUT", rp.url + "/versioned", b"{}", timeout=10)[2] == b"2"
    assert http("POST", rp.url + "/steady", b"{}", timeout=10)[0] == 200
    assert rp.stop() == 0
