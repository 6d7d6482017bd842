"""``router import`` on real public templates (tests/fixtures/import, see NOTICE.md there): the output passes
the real ``router validate``, and an imported serverless.yml app answers over HTTP under ``router run``."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import boto3
import pytest
import yaml

from tests.router_process import ROOT, RouterFactory, http, router

FIXTURES = ROOT / "tests" / "fixtures" / "import"

# (format, file, functions, routes, a line that must be listed as not imported (None: nothing listed))
CASES = [
    ("sam", "sam-function_lambda_event_destinations/template.yaml", 2, 0,
     ":65: DestinationLambda: InlineCode"),
    ("sam", "sam-api_backend/template.yaml", 3, 3, ":63: Resources.Table (AWS::Serverless::SimpleTable)"),
    ("sam", "sam-schedule/template.yaml", 1, 1, ":9: runtime nodejs12.x"),
    ("sam", "sam-stream_processor/template.yaml", 1, 1,
     ":25: StreamProcessor event Stream (Kinesis) OnFailure"),
    ("sam", "sam-sqs/template.yaml", 1, 1, ":15: MySQSQueueFunction event MySQSEvent (SQS)"),
    ("serverless", "sls-aws-python-http-api-with-dynamodb/serverless.yml", 5, 5, None),
    ("serverless", "sls-aws-python-scheduled-cron/serverless.yml", 2, 2, None),
    ("serverless", "sls-aws-node-sqs-worker/serverless.yml", 1, 1, ":22: producer environment QUEUE_URL"),
]


@pytest.mark.parametrize(("kind", "source", "functions", "routes", "listed"), CASES,
                         ids=[c[1].split("/")[0] for c in CASES])
def test_imported_public_template_validates(tmp_path: Path, kind: str, source: str, functions: int,
                                            routes: int, listed: str | None) -> None:
    out = tmp_path / "router.yaml"
    r = router("import", kind, str(FIXTURES / source), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert f"wrote {functions} functions and {routes} routes" in r.stderr
    if listed is not None:
        lines = r.stderr.splitlines()
        assert any(line.startswith(str(FIXTURES / source) + listed) for line in lines), r.stderr
        assert f"#   {Path(source).name}{listed}" in out.read_text()
    v = router("validate", str(out))
    assert v.returncode == 0, v.stderr
    assert f"ok ({functions} functions, {routes} routes)" in v.stdout


def test_import_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "router.yaml"
    out.write_text("keep me\n")
    source = str(FIXTURES / "sam-schedule" / "template.yaml")
    r = router("import", "sam", source, "-o", str(out))
    assert r.returncode == 2
    assert f"{out} exists; give --force" in r.stderr
    assert out.read_text() == "keep me\n"
    r = router("import", "sam", source, "-o", str(out), "--force")
    assert r.returncode == 0, r.stderr
    assert "rate: 5m" in out.read_text()


def test_import_writes_to_stdout_with_code_relative_to_the_current_directory() -> None:
    r = router("import", "serverless", "serverless.yml", cwd=FIXTURES / "sls-aws-python-scheduled-cron")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("# Imported from serverless.yml by `router import serverless`.")
    config = yaml.safe_load(r.stdout)
    assert config["functions"]["cronHandler"]["code"] == "."
    assert config["routes"][1]["source"] == {"type": "schedule", "cron": "0/2 * * * mon-fri"}
    assert "wrote 2 functions and 2 routes to stdout" in r.stderr


def test_import_refuses_an_unreadable_or_wrong_file(tmp_path: Path) -> None:
    r = router("import", "sam", str(tmp_path / "missing.yaml"))
    assert r.returncode == 1
    assert "missing.yaml: cannot read the file" in r.stderr
    r = router("import", "serverless", str(FIXTURES / "sam-sqs" / "template.yaml"))
    assert r.returncode == 1
    assert "not a serverless.yml" in r.stderr
    assert "router import sam" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("Resources:\n  A: [1,\n")
    r = router("import", "sam", str(bad))
    assert r.returncode == 1
    assert f"{bad}:3: invalid YAML" in r.stderr


def test_imported_serverless_http_api_answers_under_router_run(
        tmp_path: Path, router_factory: RouterFactory, moto_server: str) -> None:
    app = tmp_path / "app"
    shutil.copytree(FIXTURES / "sls-aws-python-http-api-with-dynamodb", app)
    out = tmp_path / "router.yaml"
    r = router("import", "serverless", str(app / "serverless.yml"), "-o", str(out))
    assert r.returncode == 0, r.stderr
    config = yaml.safe_load(out.read_text())
    table = config["functions"]["create"]["environment"]["DYNAMODB_TABLE"]
    assert table == "serverless-http-api-dynamodb-dev"  # ${self:service}-${sls:stage}
    boto3.client("dynamodb", region_name="us-east-1", endpoint_url=moto_server).create_table(
        TableName=table, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    # What a user adds to run against a local DynamoDB; and the handlers need boto3, which the router's own
    # interpreter has (Lambda's python runtimes bring it).
    own = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for fn in config["functions"].values():
        fn["environment"]["AWS_ENDPOINT_URL"] = moto_server
        fn["runtime"] = own
    config["server"] = {"port": "@PORT@"}
    rp = router_factory(yaml.safe_dump(config, sort_keys=False), name="router.yaml")

    status, _, body = http("POST", rp.url + "/todos", json.dumps({"text": "buy milk"}).encode())
    assert status == 200, (body, rp.logs())
    created = json.loads(body)
    assert created["text"] == "buy milk"
    status, _, body = http("GET", f"{rp.url}/todos/{created['id']}")
    assert status == 200, (body, rp.logs())
    assert json.loads(body) == {**created, "checked": False}
