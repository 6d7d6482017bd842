"""config/example.yaml's commented SQS route, uncommented as a user would, works against an SQS endpoint
(moto_server here): messages reach the function, filtered ones are deleted without invoking it."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import boto3

from tests.router_process import ROOT, RouterFactory, free_port, http
from tests.waiting import until_sync

MARKER = "# An SQS route: uncomment it"


def uncommented_example() -> str:
    """config/example.yaml with the commented route after MARKER uncommented."""
    lines = (ROOT / "config" / "example.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if MARKER in line)
    out = lines[:start]
    for line in lines[start:]:
        m = re.match(r"^(\s*)# (\s*[-a-z].*)$", line)
        if m and (m.group(2).lstrip().startswith(("- name:", "source:", "filters:", "function:"))
                  or line.startswith(m.group(1) + "#    ")):
            out.append(m.group(1) + m.group(2))
        elif line.lstrip().startswith("#"):
            continue  # the explanation
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name}{{{want}}} in /metrics")


def test_example_sqs_route_uncommented_runs_against_an_sqs_endpoint(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str,
) -> None:
    config = uncommented_example()
    assert "\n  - name: uploads\n" in config, config  # the route is really uncommented
    # As a user developing against a local endpoint might: a 1 s long poll, so that the stop at the end
    # does not wait out the default 20 s one (tests/e2e/test_sqs.py keeps the default).
    source = "{type: sqs, queue_url: \"${UPLOADS_QUEUE_URL}\", batch_size: 10,"
    assert config.count(source) == 1, config
    config = config.replace(source, source + " wait_time: 1s,")
    (tmp_path / "config").mkdir()
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    sqs: Any = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto_server)
    queue_url = sqs.create_queue(QueueName=f"uploads-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    port = free_port()
    rp = router_factory(config, name="config/example.yaml", port=port, env={
        "UPLOADS_QUEUE_URL": queue_url, "AWS_ENDPOINT_URL": moto_server, "ROUTER_PORT": str(port),
        "ROUTER_STATE_DIR": str(tmp_path / "var"), "ROUTER_LOG_FORMAT": "json",
    })
    sqs.send_message(QueueUrl=queue_url, MessageBody='{"kind": "upload", "key": "a.png"}')
    sqs.send_message(QueueUrl=queue_url, MessageBody='{"kind": "other"}')

    def counts() -> tuple[float, float] | None:
        status, _, body = http("GET", rp.url + "/metrics")
        text = body.decode()
        if status != 200 or 'route="uploads"' not in text or 'source="sqs"' not in text:
            return None
        return (_metric(text, "router_invocations_total", function="tick", source="sqs", outcome="success"),
                _metric(text, "router_source_events_filtered_total", route="uploads", type="sqs"))

    until_sync(lambda: counts() == (1.0, 1.0), deadline=60, what="one invocation and one filtered message")
    until_sync(lambda: sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages",
                                            "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"},
        deadline=30, what="both messages deleted")
    assert rp.stop() == 0
    sqs.close()
