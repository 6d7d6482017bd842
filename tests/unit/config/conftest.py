"""Helpers for the config tests: write a config into tmp_path, load it, collect its problem lines."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from router.config.loader import load_config
from router.config.models import RouterConfig
from router.errors import ConfigError

# DESIGN §3's example, with the "..." placeholders filled in.
EXAMPLE = """\
version: 1
server:
  host: 0.0.0.0
  port: 8080              # webhooks, Invoke API, /healthz, /readyz, /metrics
  max_body: 6MB
  invoke_token: ${INVOKE_TOKEN}   # DESIGN §9a: an Invoke API on 0.0.0.0 needs credentials
state: sqlite:///var/lib/router/state.db   # or postgresql://user:pass@host/db
aws:                      # defaults for every AWS client
  region: us-east-1
  endpoint_url: ${AWS_ENDPOINT_URL:-}
functions:
  resize:                 # local function
    runtime: python3.11
    handler: app.handler
    code: ./functions/resize
    timeout: 30s
    memory: 256
    environment: {BUCKET: thumbs}
    concurrency: 10
    provisioned: 2
    async:
      retries: 2
      max_event_age: 6h
      backoff: {initial: 1s, max: 5m}
      on_success: {type: sqs, queue_url: http://localhost:4566/000000000000/done}
      on_failure: {type: amqp, url: "amqp://guest:guest@rabbitmq/", exchange: dlx, routing_key: resize}
  cleanup:
    runtime: python3.11
    handler: app.cleanup
    code: ./functions/resize
    async:
      on_failure: {type: file, path: ./failures.jsonl}
      on_success: {type: function, function: resize}
  billing:                # remote HTTP function
    http: {url: http://billing:8080/invoke, headers: {Authorization: "Bearer ${BILLING_TOKEN}"}}
    timeout: 10s
  thumbs:                 # real AWS Lambda function
    lambda: {function_name: thumbs, qualifier: prod}
routes:
  - name: github
    source: {type: webhook, path: /hooks/github, methods: [POST],
             auth: {type: hmac, secret: "${GH_SECRET}", header: X-Hub-Signature-256, prefix: "sha256="}}
    function: billing
    invocation: async
  - name: nightly
    source: {type: schedule, cron: "0 3 * * *", timezone: Europe/Berlin}
    input: {task: cleanup}
    function: resize
  - name: every-5m
    source: {type: schedule, rate: 5m}
    function: cleanup
  - name: uploads
    source: {type: sqs, queue_url: http://localhost:4566/000000000000/uploads, batch_size: 10,
             batch_window: 0s, max_concurrency: 5, report_batch_item_failures: true}
    filters: [{body: {type: [image.uploaded]}}]
    function: resize
  - name: clicks
    source: {type: kinesis, stream_arn: "arn:aws:kinesis:us-east-1:000000000000:stream/clicks",
             starting_position: TRIM_HORIZON, batch_size: 100,
             batch_window: 1s, parallelization: 1, bisect_on_error: true,
             max_retry_attempts: 3, max_record_age: 1h,
             on_failure: {type: sqs, queue_url: http://localhost:4566/000000000000/dlq}}
    function: resize
  - name: table-changes
    source: {type: dynamodb_stream, stream_arn: "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/x",
             starting_position: LATEST, batch_size: 100}
    function: resize
  - name: orders
    source: {type: amqp, url: "amqp://guest:guest@rabbitmq/", queue: orders, prefetch: 10,
             on_error: dead_letter}
    function: billing
"""

EXAMPLE_ENV = {"BILLING_TOKEN": "tok-123", "GH_SECRET": "gh-secret", "INVOKE_TOKEN": "inv-456"}

# A small valid config that tests extend: one local function whose code dir exists.
BASE = """\
functions:
  resize:
    runtime: python3.11
    handler: app.handler
    code: ./fn
"""


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    (tmp_path / "fn").mkdir()
    (tmp_path / "functions" / "resize").mkdir(parents=True)
    return tmp_path


@pytest.fixture
def write(config_dir: Path) -> Callable[[str], Path]:
    def _write(text: str) -> Path:
        path = config_dir / "router.yaml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return _write


@pytest.fixture
def load(write: Callable[[str], Path]) -> Callable[..., RouterConfig]:
    def _load(text: str, env: Mapping[str, str] | None = None) -> RouterConfig:
        return load_config(write(text), env={} if env is None else env)

    return _load


@pytest.fixture
def problems(write: Callable[[str], Path]) -> Callable[..., list[str]]:
    """The problem lines for ``text``, with the file's directory stripped from the file name."""

    def _problems(text: str, env: Mapping[str, str] | None = None) -> list[str]:
        path = write(text)
        with pytest.raises(ConfigError) as info:
            load_config(path, env={} if env is None else env)
        assert str(info.value) == "\n".join(info.value.problems)
        prefix = f"{path}:"
        assert all(p.startswith(prefix) for p in info.value.problems), info.value.problems
        return ["router.yaml:" + p[len(prefix):] for p in info.value.problems]

    return _problems
