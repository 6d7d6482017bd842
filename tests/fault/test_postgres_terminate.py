"""PostgreSQL state store: the router's connections terminated (``pg_terminate_backend``) three times
while async webhooks are accepted and delivered: every event answered 202 is delivered, none twice
unexpectedly; answers during the fault are 202 or a refusal, and the router recovers by itself.

The database is the test's own (``pg_database``), so terminating its backends disturbs nobody else.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from tests.fault.checker import History, Recovery, SideEffects, wait_until_complete
from tests.fault.conftest import FaultLog, recorder
from tests.fault.harness import Sender, http_post
from tests.router_process import RouterFactory
from tests.waiting import until_sync

pytestmark = pytest.mark.fault

CYCLES = 3


def terminate_backends(dsn: str) -> int:
    """Terminate every other connection to ``dsn``'s database; how many were terminated."""

    async def go() -> int:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            rows = await conn.fetch(
                "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        finally:
            await conn.close()
        return sum(1 for r in rows if r["done"])

    return asyncio.run(go())


@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_postgres_backends_terminated_during_async_accepts_loses_nothing(
    pg_database: str, router_factory: RouterFactory, tmp_path: Path, effects: SideEffects,
    history: History, fault_log: FaultLog,
) -> None:
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 5s}}
        state: "{pg_database}"
        functions:{recorder("record", effects, concurrency=4, sleep=0.02, timeout="5s",
                            extra="async: {retries: 2, backoff: {initial: 10ms, max: 100ms}}")}
        routes:
          - {{name: ingest, source: {{type: webhook, path: /ingest}}, function: record, invocation: async}}
    """)

    def send(ids: list[str]) -> tuple[str, str]:
        return http_post(rp.port, "/ingest", ids[0].encode(), {"Content-Type": "text/plain"}, timeout=30)

    sender = Sender(send, history, limit=100_000, workers=6, rate=100, deadline=time.monotonic() + 200)
    sender.start()
    try:
        for cycle in range(1, CYCLES + 1):
            sender.wait_accepted(sender.accepted + 100, timeout=60)
            terminated = terminate_backends(pg_database)
            recovery = Recovery(effects, f"pg_terminate_backend {cycle}")
            accepted = sender.accepted
            sender.wait_accepted(accepted + 1, timeout=60)
            accepted_after = time.monotonic() - recovery.fault_ended
            count = len(effects.observed())
            until_sync(lambda count=count: len(effects.observed()) > count, deadline=90,  # type: ignore[misc]
                       what=f"a delivery after termination {cycle}")
            delivered_after = time.monotonic() - recovery.fault_ended
            fault_log(f"termination {cycle}: {terminated} backends terminated; next 202 after "
                      f"{accepted_after:.2f}s, next delivery after {delivered_after:.2f}s")
        sender.wait_accepted(sender.accepted + 100, timeout=60)
    finally:
        sender.stop()
    recovery = Recovery(effects, "the last termination (load finished)")
    report = wait_until_complete(history, effects, timeout=150, recovery=recovery)
    fault_log(f"{report.summary()}; send outcomes {dict(sorted(sender.outcomes.items()))}")
    fault_log(recovery.line())
    report.assert_valid()
    assert rp.stop() == 0
