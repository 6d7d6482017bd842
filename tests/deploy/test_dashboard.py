"""The Grafana dashboard (deploy/grafana/router.json) asks only for metrics the router exports: every metric
name in every PromQL expression (panel targets and template variables) is checked against the ``/metrics``
of a real ``router run`` with a webhook, an async function and an SQS route (moto_server). A family's
sample names follow its ``# TYPE``: a histogram is read as ``_bucket``/``_sum``/``_count``, never bare."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.router_process import RouterFactory, http
from tests.waiting import until_sync

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "router.json"
REGION = "us-east-1"

# What the dashboard must show (issue 11): one metric each for invocations, errors, throttles, duration
# percentiles, concurrency, cold starts, async queue depth and event age, iterator age per shard, source
# errors, destinations.
REQUIRED = {
    "router_invocations_total", "router_throttles_total", "router_invocation_duration_seconds_bucket",
    "router_concurrent_executions", "router_cold_starts_total", "router_async_queue_depth",
    "router_async_event_age_seconds_bucket", "router_iterator_age_seconds", "router_source_errors_total",
    "router_destination_deliveries_total",
}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_MODIFIER = re.compile(r"\b(?:offset|@)\s*-?[\w.$]+")
_IDENTIFIER = re.compile(r"[A-Za-z_:][\w:]*")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
             "offset", "inf", "nan", "start", "end"}
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.*)\s*,\s*[A-Za-z_]\w*\s*\)\s*$", re.S)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers left once strings, label matchers, range
    and subquery brackets, grouping clauses and offsets are gone, other than function calls and keywords."""
    text = _STRING.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _MODIFIER.sub(" ", text)
    names = set()
    for m in _IDENTIFIER.finditer(text):
        before = text[m.start() - 1] if m.start() else " "
        if before.isdigit() or before == "." or before == "$":  # 1e3, 0.99, a Grafana variable
            continue
        if text[m.end():].lstrip().startswith("("):  # a function or an aggregation
            continue
        if m.group().lower() in _KEYWORDS:
            continue
        names.add(m.group())
    return names


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = _LABEL_VALUES.match(query)
            yield f"variable {var['name']!r}", m.group(1) if m else query


def exported_sample_names(exposition: str) -> set[str]:
    """Every sample name the exposition's families can carry, from their ``# TYPE`` lines (printed for a
    labelled family even before its first sample)."""
    names = set()
    for line in exposition.splitlines():
        if not line.startswith("# TYPE "):
            continue
        _, _, name, kind = line.split()
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "summary":
            names |= {name, f"{name}_sum", f"{name}_count"}
        else:  # counter (named with _total), gauge, untyped, info
            names.add(name)
    return names


def test_metric_names_reads_promql_as_prometheus_does() -> None:
    expr = ('histogram_quantile(0.99, sum by (function, le) (rate(a_seconds_bucket{x="y", z=~"$v|w"}'
            '[$__rate_interval]))) / on (f) group_left (g) b_total offset 5m'
            ' + sum without (le) (c:recorded:rate5m) * 1e3 + max_over_time(d[5m:1m]) > bool 2')
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c:recorded:rate5m", "d"}
    assert metric_names('count(router_build_info{namespace=~"$namespace"})') == {"router_build_info"}


def test_exported_sample_names_follow_the_type() -> None:
    text = ("# HELP h_seconds x\n# TYPE h_seconds histogram\n# HELP c_total y\n# TYPE c_total counter\n"
            "c_total 1.0\n# TYPE g gauge\n")
    assert exported_sample_names(text) == {"h_seconds_bucket", "h_seconds_sum", "h_seconds_count", "c_total",
                                           "g"}


def test_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
    names = set().union(*(metric_names(q) for _, q in dashboard_queries(dashboard)))
    missing = REQUIRED - names
    assert not missing, f"the dashboard shows nothing of {sorted(missing)}"


@pytest.fixture
def sqs_queue(moto_server: str) -> Iterator[str]:
    client = boto3.client("sqs", region_name=REGION, endpoint_url=moto_server)
    url = client.create_queue(QueueName=f"dashboard-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    try:
        yield url
    finally:
        client.delete_queue(QueueUrl=url)
        client.close()


def test_every_dashboard_metric_is_exported_by_a_running_router(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str, sqs_queue: str,
) -> None:
    code = router_factory.write_function("echo", """
        def handler(event, context):
            return {"statusCode": 200, "body": "ok"}
    """)
    router = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 5s}}
        state: sqlite:///{tmp_path / 'state.db'}
        aws: {{region: {REGION}, endpoint_url: "{moto_server}"}}
        functions:
          echo:
            runtime: python3.11
            handler: app.handler
            code: {code}
            timeout: 10s
            concurrency: 4
            async: {{retries: 0, on_success: {{type: file, path: {tmp_path / 'done.jsonl'}}}}}
        routes:
          - name: hello
            source: {{type: webhook, path: /hello, methods: [POST]}}
            function: echo
          - name: later
            source: {{type: webhook, path: /later, methods: [POST]}}
            function: echo
            invocation: async
          - name: jobs
            source: {{type: sqs, queue_url: "{sqs_queue}", batch_size: 10}}
            function: echo
    """)
    assert http("POST", router.url + "/hello", b"{}")[0] == 200
    assert http("POST", router.url + "/later", b"{}")[0] == 202
    until_sync(lambda: (tmp_path / "done.jsonl").exists(), "the async event's destination record")
    status, _, body = http("GET", router.url + "/metrics")
    assert status == 200
    exposition = body.decode()
    exported = exported_sample_names(exposition)
    assert 'router_invocations_total{function="echo"' in exposition  # the families carry real samples

    dashboard = json.loads(DASHBOARD.read_text())
    unknown = {}
    checked = 0
    for where, query in dashboard_queries(dashboard):
        names = metric_names(query)
        assert names, f"{where}: no metric found in {query!r}"
        checked += len(names)
        for name in names - exported:
            unknown[name] = where
    assert checked >= len(REQUIRED)
    assert not unknown, f"the dashboard asks for metrics the router does not export: {unknown}"
