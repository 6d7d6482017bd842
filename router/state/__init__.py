"""The SQL state store (SQLite by default, PostgreSQL for several replicas)."""

from router.state.store import QueuedEvent, StateStore

__all__ = ["QueuedEvent", "StateStore"]
