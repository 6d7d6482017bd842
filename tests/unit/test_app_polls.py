"""How often the router re-reads its state store for what other replicas wrote
(``router.app.poll_intervals``): on PostgreSQL, which replicas share, often enough that one sees
another's pause or async event within a second or two; on SQLite, which serves one router, only as a
rare safety net, since every change there is the router's own and wakes its waiters at once
(tests/unit/queues/test_sql_queue.py: a publish wakes an idle taker, a retry is taken when due, with a
30 s poll)."""

from __future__ import annotations

from router.app import ALONE_POLL_INTERVAL, QUEUE_POLL_INTERVAL, poll_intervals
from router.core.controls import POLL_INTERVAL
from tests.stores import StoreFactory


async def test_only_a_store_replicas_share_is_re_read_often(new_store: StoreFactory) -> None:
    store = await new_store()
    if store.dialect == "sqlite":
        assert not store.shared
        assert poll_intervals(store) == (ALONE_POLL_INTERVAL, ALONE_POLL_INTERVAL)
    else:
        assert store.shared
        assert poll_intervals(store) == (POLL_INTERVAL, QUEUE_POLL_INTERVAL)
    assert max(POLL_INTERVAL, QUEUE_POLL_INTERVAL) <= 2.0 < ALONE_POLL_INTERVAL
