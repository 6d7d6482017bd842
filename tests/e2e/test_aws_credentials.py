"""Wrong AWS credentials against a moto_server that checks them (INITIAL_NO_AUTH_ACTION_COUNT): the sqs
route says what is wrong and how to fix it in the log and in /readyz, counts the error, keeps running,
and never writes the secret key anywhere."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.router_process import RouterFactory, http
from tests.waiting import until_sync

SECRET = "wrong-secret-" + uuid.uuid4().hex


@pytest.fixture
def checking_moto(tmp_path: Path) -> Iterator[str]:
    """A moto_server of its own that lets the first request through unauthenticated, then checks
    every request's signature against its (empty) IAM: any access key is unknown to it."""
    exe = Path(sys.executable).with_name("moto_server")
    command = str(exe) if exe.exists() else shutil.which("moto_server")
    if command is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("moto_server not found")
        pytest.skip("moto_server not found; pip install 'moto[server]'")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "moto.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([command, "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "1"})

    def answers() -> bool:
        assert proc.poll() is None, (tmp_path / "moto.log").read_text()
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=1):
                return True
        except OSError:
            return False

    try:
        until_sync(answers, deadline=30, what="moto_server with authentication")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_wrong_credentials_make_the_route_not_ready_with_a_clear_error(
    router_factory: RouterFactory, tmp_path: Path, checking_moto: str,
) -> None:
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=checking_moto,
                       aws_access_key_id="setup", aws_secret_access_key="setup")
    queue_url = sqs.create_queue(QueueName=f"creds-{uuid.uuid4().hex[:8]}")["QueueUrl"]  # the free request
    sqs.close()
    router_factory.write_function("noop", "def handler(event, context):\n    return None\n")
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 2s}}
        state: sqlite:///{tmp_path / 'state.db'}
        aws: {{region: us-east-1, endpoint_url: "{checking_moto}"}}
        functions:
          noop: {{runtime: python3.11, handler: app.handler, code: {tmp_path / 'functions' / 'noop'}}}
        routes:
          - name: jobs
            source: {{type: sqs, queue_url: "{queue_url}"}}
            function: noop
    """, env={"AWS_ACCESS_KEY_ID": "AKIAWRONGKEY", "AWS_SECRET_ACCESS_KEY": SECRET}, start=False)
    rp.start(wait_ready=False)

    def not_ready_for_credentials() -> dict[str, object] | None:
        try:
            status, _, body = http("GET", rp.url + "/readyz", timeout=2)
        except OSError:
            return None
        text = body.decode()
        return json.loads(text) if status == 503 and "credentials" in text else None

    readyz = until_sync(not_ready_for_credentials, deadline=30, what="/readyz naming the credentials")
    assert "route jobs" in json.dumps(readyz)
    until_sync(lambda: "router_source_errors_total{route=\"jobs\",type=\"sqs\"}"
               in http("GET", rp.url + "/metrics")[2].decode(), deadline=10, what="the error counted")
    assert rp.proc is not None
    assert rp.proc.poll() is None  # still running, retrying with backoff
    assert rp.stop() == 0
    errors = [r for r in rp.log_records() if r.get("level") == "error" and r.get("route") == "jobs"]
    assert errors, rp.logs()
    assert "access denied (InvalidClientTokenId)" in errors[0]["message"], errors[0]
    assert "check the AWS credentials" in errors[0]["message"]
    assert SECRET not in rp.logs()
