"""Secrets interpolated into URL paths (Slack/Discord-style ``.../services/${TOKEN}``) never show: not in
function error messages, destination logs, ``router routes`` or ``router invoke`` output; the variable's
name stands in for them (issue 9 defect 10, DESIGN §9a)."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

from tests.router_process import RouterFactory, free_port, http, router
from tests.waiting import until_sync

FAILS = """
import os

def handler(event, context):
    print("connecting with", os.environ["DB_PASSWORD"])
    raise RuntimeError("no")
"""


def test_interpolated_secrets_in_url_paths_are_redacted_everywhere(
    router_factory: RouterFactory, tmp_path: Path,
) -> None:
    env = {
        "SLACK_TOKEN": f"T0/B0/{uuid.uuid4().hex}",
        "DEST_TOKEN": f"dest-{uuid.uuid4().hex}",
        "HOOK_TOKEN": f"hook-{uuid.uuid4().hex}",
        "DB_PASSWORD": f"pw-{uuid.uuid4().hex}",
    }
    closed = free_port()  # nothing listens there: every request to it fails
    code = router_factory.write_function("fails", FAILS)
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          slack: {{http: {{url: "http://127.0.0.1:{closed}/services/${{SLACK_TOKEN}}"}}}}
          fails:
            runtime: python3.11
            handler: app.handler
            code: {code}
            environment: {{DB_PASSWORD: "${{DB_PASSWORD}}"}}
            async:
              retries: 0
              backoff: {{initial: 50ms, max: 1s}}
              on_failure: {{type: http, url: "http://127.0.0.1:{closed}/hooks/${{DEST_TOKEN}}"}}
        routes:
          - {{name: hook, source: {{type: webhook, path: "/in/${{HOOK_TOKEN}}"}}, function: fails,
              invocation: async}}
    """, env=env)

    # router routes: the webhook path shows the variable, not its value
    routes = router("routes", "-c", str(rp.config_path), env=env)
    assert routes.returncode == 0, routes.stderr
    assert "/in/${HOOK_TOKEN}" in routes.stdout
    # router invoke: the function's error names its URL with the variable
    invoke = router("invoke", "slack", "-c", str(rp.config_path), env=env)
    assert invoke.returncode == 1
    assert "/services/${SLACK_TOKEN}" in invoke.stdout, invoke.stdout

    # a function error message returned to the caller
    status, headers, body = http("POST", rp.url + "/2015-03-31/functions/slack/invocations", b"{}")
    assert status == 200
    assert headers["x-amz-function-error"] == "Unhandled"
    message = json.loads(body)["errorMessage"]
    assert f"POST http://127.0.0.1:{closed}/services/${{SLACK_TOKEN}} failed" in message

    # the log tail the Invoke API returns, with what the function printed
    status, headers, tail_body = http("POST", rp.url + "/2015-03-31/functions/fails/invocations", b"{}",
                                      {"X-Amz-Log-Type": "Tail"})
    assert status == 200
    tail = base64.b64decode(headers["x-amz-log-result"]).decode()
    assert "connecting with ${DB_PASSWORD}" in tail, tail

    # a destination's failure in the logs
    assert http("POST", rp.url + f"/in/{env['HOOK_TOKEN']}", b"{}")[0] == 202
    until_sync(lambda: "/hooks/${DEST_TOKEN}" in rp.logs(), what="the destination failure in the log",
               deadline=20)
    assert rp.stop() == 0

    assert "connecting with ${DB_PASSWORD}" in rp.logs()  # the function's own output line
    outputs = {"routes": routes.stdout + routes.stderr, "invoke": invoke.stdout + invoke.stderr,
               "invoke api": body.decode(), "log tail": tail + tail_body.decode(), "logs": rp.logs()}
    for where, text in outputs.items():
        for name, value in env.items():
            assert value not in text, f"{name} in {where}"
            assert value.replace("/", "%2F") not in text, f"{name} in {where}"
