"""/metrics carries the process (RSS, open fds, CPU), Python and asyncio task series beside router_*."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from router.metrics import Metrics


async def test_process_platform_and_task_series_are_scraped(serve: Any) -> None:
    server = await serve()
    async with server.session.get(server.url + "/metrics") as r:
        assert r.status == 200
        text = await r.text()
    samples = {s.name: s for family in text_string_to_metric_families(text) for s in family.samples}
    for name in ("process_resident_memory_bytes", "process_open_fds", "process_max_fds",
                 "process_cpu_seconds_total", "process_start_time_seconds", "python_info",
                 "python_gc_collections_total", "router_asyncio_tasks"):
        assert name in samples, name
    assert samples["process_open_fds"].value > 0
    assert samples["process_resident_memory_bytes"].value > 0
    assert samples["router_asyncio_tasks"].value >= 1  # at least the task serving this scrape


async def test_task_gauge_counts_the_tasks_of_the_scraping_loop() -> None:
    metrics = Metrics()
    before = metrics.registry.get_sample_value("router_asyncio_tasks")
    assert before is not None
    release = asyncio.Event()
    waiting = [asyncio.create_task(release.wait()) for _ in range(5)]
    try:
        assert metrics.registry.get_sample_value("router_asyncio_tasks") == before + 5
    finally:
        release.set()
        await asyncio.gather(*waiting)
    assert metrics.registry.get_sample_value("router_asyncio_tasks") == before
    # Off any loop (a thread), there is no loop to count: no sample rather than a wrong one.
    assert await asyncio.to_thread(metrics.registry.get_sample_value, "router_asyncio_tasks") is None
