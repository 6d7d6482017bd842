"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy.engine import make_url

POSTGRES_DSN_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
POSTGRES_DSN_FALLBACK = "postgresql://root@127.0.0.1:5432/test"


async def _postgres_problem(dsn: str) -> str | None:
    """Connect once to ``dsn``; return why it failed, or None when the server answers."""
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()
    return None


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """DSN of the test PostgreSQL server (``ROUTER_TEST_POSTGRES_DSN``, trust auth, database ``test``).

    Without the variable, tries the ``postgres`` role, then ``root``. Skips the test when the server
    cannot be reached, except under ``CI=true`` where that fails it.
    """
    configured = os.environ.get("ROUTER_TEST_POSTGRES_DSN")
    candidates = [configured] if configured else [POSTGRES_DSN_DEFAULT, POSTGRES_DSN_FALLBACK]
    problems = []
    # In a thread of its own: this may be requested from inside a running event loop (async fixtures).
    with ThreadPoolExecutor(1) as pool:
        for dsn in candidates:
            problem = pool.submit(asyncio.run, _postgres_problem(dsn)).result()
            if problem is None:
                return dsn
            shown = make_url(dsn).render_as_string(hide_password=True)
            problems.append(f"{shown} ({problem})")
    reason = f"PostgreSQL not reachable: {'; '.join(problems)}; set ROUTER_TEST_POSTGRES_DSN"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)
