"""The source registry: one schedule source for the schedule routes, one poller per polling route, each
under its task name, and the shutdown order (the schedule before the pollers)."""

from __future__ import annotations

import asyncio
from typing import cast

from router.config.models import RouterConfig
from router.core.dispatcher import Dispatch
from router.metrics import Metrics
from router.readiness import Readiness
from router.sources.amqp.source import AmqpSource
from router.sources.registry import POLLERS, SourceParts, Sources, build_sources
from router.sources.schedule.source import ScheduleSource
from router.sources.sqs.source import SqsSource
from router.sources.stream.engine import StreamSource
from router.state.store import StateStore


class _Dispatch:
    def arn(self, name: str) -> str:
        return f"arn:aws:lambda:eu-west-1:123456789012:function:{name}"


def test_every_route_gets_its_source_under_its_task_name() -> None:
    config = RouterConfig.model_validate({
        "functions": {"fn": {"http": {"url": "http://127.0.0.1:9/"}}},
        "routes": [
            {"name": "hook", "function": "fn", "source": {"type": "webhook", "path": "/hook"}},
            {"name": "tick", "function": "fn", "source": {"type": "schedule", "rate": "1h"}},
            {"name": "jobs", "function": "fn", "source": {"type": "sqs", "queue_url": "http://q/1/jobs"}},
            {"name": "orders", "function": "fn",
             "source": {"type": "amqp", "url": "amqp://h/", "queue": "o"}},
            {"name": "clicks", "function": "fn", "source": {
                "type": "kinesis", "stream_arn": "arn:aws:kinesis:eu-west-1:123456789012:stream/c"}},
        ],
    })
    parts = SourceParts(config=config, dispatcher=cast(Dispatch, _Dispatch()), metrics=Metrics(),
                        readiness=Readiness(), store=cast(StateStore, None))
    sources = build_sources(parts)
    assert isinstance(sources.schedule, ScheduleSource)
    assert sources.schedule.route_names == ["tick"]
    assert [(name, type(p)) for name, p in sources.pollers] == [
        ("sqs:jobs", SqsSource), ("amqp:orders", AmqpSource), ("kinesis:clicks", StreamSource)]
    assert [name for name, _ in sources.all()] == ["schedule", "sqs:jobs", "amqp:orders", "kinesis:clicks"]
    assert set(POLLERS) == {"sqs", "amqp", "kinesis", "dynamodb_stream"}


async def test_stop_ends_the_schedule_before_the_pollers() -> None:
    order: list[str] = []

    class Recorder:
        def __init__(self, name: str) -> None:
            self.name = name

        async def run(self) -> None:
            return None

        async def stop(self, timeout: float) -> None:  # noqa: ASYNC109
            order.append(f"{self.name} {timeout:g}")

    sources = Sources(Recorder("schedule"), [("a", Recorder("a")), ("b", Recorder("b"))])
    await sources.stop(7)
    assert order == ["schedule 7", "a 7", "b 7"]


async def test_without_schedule_routes_no_scheduler_runs_until_a_reload_adds_one() -> None:
    def config(*routes: dict[str, object]) -> RouterConfig:
        return RouterConfig.model_validate({
            "functions": {"fn": {"http": {"url": "http://127.0.0.1:9/"}}},
            "routes": [{"name": "hook", "function": "fn", "source": {"type": "webhook", "path": "/hook"}},
                       *routes]})

    def parts(cfg: RouterConfig) -> SourceParts:
        return SourceParts(config=cfg, dispatcher=cast(Dispatch, _Dispatch()), metrics=Metrics(),
                           readiness=Readiness(), store=cast(StateStore, None))

    bare = config()
    sources = build_sources(parts(bare))
    assert not isinstance(sources.schedule, ScheduleSource)  # nothing to fire: APScheduler not started
    idle = asyncio.create_task(sources.schedule.run())
    await asyncio.sleep(0)
    assert not idle.done()  # it runs until stopped, as every source does

    ticking = config({"name": "tick", "function": "fn", "source": {"type": "schedule", "rate": "1h"}})
    await sources.stop_routes(["tick"], ticking, 1.0)
    await asyncio.wait_for(idle, 5)  # the reload stopped it
    started: list[str] = []
    sources.start_routes(parts(ticking), ["tick"], lambda name, poller: started.append(name))
    assert started == ["schedule"]
    assert isinstance(sources.schedule, ScheduleSource)
    assert sources.schedule.route_names == ["tick"]
