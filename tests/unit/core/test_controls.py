"""Controls: pause and resume, reserved concurrency and event invoke overrides, kept in the state store and
seen by another replica (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from router.core.controls import ControlError, Controls, minimum_unreserved
from router.metrics import Metrics
from tests.stores import StoreFactory
from tests.unit.core.helpers import make_config


def _config():  # type: ignore[no-untyped-def]
    return make_config({"resize": {"concurrency": 5}, "mail": {"async": {"retries": 2}}}, routes=[
        {"name": "uploads", "function": "resize", "source": {"type": "webhook", "path": "/up"}}])


async def test_changes_are_kept_and_seen_by_another_replica(new_store: StoreFactory) -> None:
    config = _config()
    metrics = Metrics()
    mine = Controls(config, store=await new_store(), metrics=metrics, account_limit=1000)
    await mine.load()
    theirs = Controls(config, store=await new_store(), account_limit=1000)
    caps: list[tuple[str, int | None]] = []
    theirs.on_reserved(lambda name, cap: caps.append((name, cap)))
    assert caps == [("resize", 5), ("mail", None)]  # the config's, at once

    await mine.set_route_enabled("uploads", False)
    await mine.set_reserved("mail", 0)
    await mine.set_invoke_config("resize", retries=0, max_age=90.0)
    assert not mine.route_enabled("uploads")
    assert mine.paused("mail")
    assert metrics.registry.get_sample_value("router_route_enabled", {"route": "uploads"}) == 0
    assert metrics.registry.get_sample_value("router_function_paused", {"function": "mail"}) == 1
    reserved = metrics.registry.get_sample_value("router_function_reserved_concurrency",
                                                 {"function": "resize"})
    assert reserved == 5

    await theirs.load()  # what its poll loop does every few seconds
    assert not theirs.route_enabled("uploads")
    assert caps[-1] == ("mail", 0)
    assert theirs.async_config("resize").retries == 0
    assert theirs.async_config("resize").max_event_age == 90.0
    assert theirs.async_config("mail").retries == 2  # untouched: the config's

    await theirs.set_reserved("mail", None)  # back to the config's (none)
    await theirs.set_route_enabled("uploads", True)
    await mine.load()
    assert mine.route_enabled("uploads")
    assert not mine.paused("mail")
    assert mine.reserved("mail") is None


async def test_wait_route_enabled_returns_on_resume() -> None:
    import asyncio

    controls = Controls(_config())
    await controls.set_route_enabled("uploads", False)
    waiter = asyncio.create_task(controls.wait_route_enabled("uploads"))
    await asyncio.sleep(0)
    assert not waiter.done()
    await controls.set_route_enabled("uploads", True)
    await asyncio.wait_for(waiter, 5)


async def test_refusals_say_what_and_how() -> None:
    controls = Controls(_config(), account_limit=200)
    assert minimum_unreserved(200) == 20
    assert minimum_unreserved(1000) == 100
    with pytest.raises(ControlError, match=r"below its minimum value of \[20\].*ask for at most 175"):
        await controls.set_reserved("mail", 176)  # resize reserves 5: 200 - 20 - 5 = 175
    await controls.set_reserved("mail", 175)
    with pytest.raises(ControlError, match="function 'nope': no such function") as info:
        await controls.set_reserved("nope", 1)
    assert info.value.code == "ResourceNotFoundException"
    with pytest.raises(ControlError, match="route 'nope': no such route"):
        await controls.set_route_enabled("nope", False)


async def test_shutdown_wakes_waiting_pollers_but_the_route_stays_paused() -> None:
    import asyncio

    controls = Controls(_config())
    await controls.set_route_enabled("uploads", False)
    waiter = asyncio.create_task(controls.wait_route_enabled("uploads"))
    await asyncio.sleep(0)
    controls.wake_for_shutdown()
    await asyncio.wait_for(waiter, 5)
    assert not controls.route_enabled("uploads")
