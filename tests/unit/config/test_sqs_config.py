"""The sqs source's config: Lambda's defaults, and ``wait_time`` (the long poll's wait) in users' words."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from router.config.diff import diff
from router.config.models import RouterConfig, SqsSourceConfig
from router.config.schema import json_schema

from .conftest import BASE, EXAMPLE, EXAMPLE_ENV

Problems = Callable[..., list[str]]
Load = Callable[..., RouterConfig]

QUEUE = "http://localhost:4566/000000000000/jobs"


def make(**kw: Any) -> SqsSourceConfig:
    return SqsSourceConfig.model_validate({"type": "sqs", "queue_url": QUEUE, **kw})


def route(wait_time: str) -> str:
    return BASE + f"""\
routes:
  - name: jobs
    function: resize
    source:
      type: sqs
      queue_url: {QUEUE}
      wait_time: {wait_time}
"""


def test_defaults_are_lambdas() -> None:
    cfg = make()
    assert (cfg.batch_size, cfg.batch_window, cfg.max_concurrency) == (10, 0, 2)
    assert cfg.wait_time == 20  # Lambda long-polls with the longest wait SQS allows
    assert not cfg.report_batch_item_failures
    assert not cfg.bisect_on_error


@pytest.mark.parametrize(("value", "seconds"), [
    ("1s", 1), (1, 1), (5, 5), ("20s", 20), ("20", 20), (20.0, 20),
])
def test_wait_time_in_whole_seconds_from_1_to_20(value: Any, seconds: int) -> None:
    assert make(wait_time=value).wait_time == seconds


@pytest.mark.parametrize(("value", "got"), [
    ("1.5s", "1.5s"),
    ("500ms", "0.5s"),  # SQS's WaitTimeSeconds is whole seconds
    ("21s", "21s"),
    ("1m", "60s"),
    ("-1", "-1s"),
    ("0s", "0s"),  # short polling: the pollers of an empty queue would ask without pause
    (0, "0s"),
])
def test_wait_time_outside_1_to_20_or_a_fraction_is_refused_at_its_line(
    problems: Problems, value: str, got: str,
) -> None:
    assert problems(route(value)) == [
        "router.yaml:12:18: routes[0].source.wait_time: should be whole seconds from 1s to "
        "20s (SQS's WaitTimeSeconds; 0s, short polling, would have the pollers of an empty queue ask "
        f"without pause), got {got}"
    ]


def test_wait_time_must_be_a_duration(problems: Problems) -> None:
    assert problems(route("soon")) == [
        "router.yaml:12:18: routes[0].source.wait_time: expected a duration such as 30s, "
        "500ms or 5m, got 'soon'"
    ]


def test_the_schema_knows_the_range() -> None:
    prop = json_schema()["definitions"]["SqsSourceConfig"]["properties"]["wait_time"]
    assert (prop["minimum"], prop["maximum"], prop["multipleOf"], prop["default"]) == (1, 20, 1, 20)
    assert "SQS bills each request" in prop["description"]


def test_a_changed_wait_time_restarts_the_route_alone(load: Load) -> None:
    old = "batch_window: 0s, max_concurrency: 5,"
    assert old in EXAMPLE
    new = EXAMPLE.replace(old, "batch_window: 0s, wait_time: 1s, max_concurrency: 5,")
    change = diff(load(EXAMPLE, EXAMPLE_ENV), load(new, EXAMPLE_ENV))
    assert change.routes_changed == ("uploads",)
    assert change.functions_changed == change.restart_only == ()
    assert change.applicable
    assert change.summary() == "routes changed: uploads"


@pytest.mark.parametrize(("kw", "message"), [
    ({"queue_url": QUEUE + ".fifo", "batch_size": 11, "batch_window": "1s"},
     "batch_size: a FIFO queue takes at most 10 messages a batch (as on Lambda), got 11"),
    ({"queue_url": QUEUE + ".fifo", "batch_window": "1s"},
     "batch_window: a FIFO queue has no batching window (as on Lambda), got 1s; remove it"),
    ({"batch_window": "301s"},
     "batch_window: at most 300s (Lambda's MaximumBatchingWindowInSeconds), got 301s"),
    ({"batch_size": 100}, "batch_size: more than 10 needs a batch_window to gather them in (as on Lambda: at "
                          "least 1s), got batch_size 100 and no batch_window"),
])
def test_lambdas_batching_limits_are_refused_with_what_to_change(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        make(**kw)


def test_lambdas_batching_limits_accepted_at_their_edges() -> None:
    assert make(queue_url=QUEUE + ".fifo", batch_size=10).batch_size == 10
    assert make(batch_size=10_000, batch_window="300s").batch_window == 300
    assert make(batch_size=10).batch_window == 0
