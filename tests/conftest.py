"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from router.state.store import StateStore
from tests.router_process import RouterFactory
from tests.stores import StoreFactory, store_factory
from tests.unavailable import unavailable

POSTGRES_DSN_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
POSTGRES_DSN_FALLBACK = "postgresql://root@127.0.0.1:5432/test"

# --- the fault suite's end-of-run section --------------------------------------------------------------

_FAULT_LINES: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collect the ``("fault", line)`` user properties of the fault suite's tests (tests/fault/conftest.py:
    ``fault_log``) from their reports: in the run's main process, where pytest-xdist sends the reports of
    the tests its workers ran, as a plain run's own."""
    if report.when == "teardown":
        name = report.nodeid.rsplit("::", 1)[-1]
        _FAULT_LINES.extend(f"{name}: {value}" for key, value in report.user_properties if key == "fault")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FAULT_LINES:
        terminalreporter.section("fault suite")
        for line in _FAULT_LINES:
            terminalreporter.write_line(line)


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
    unavailable(reason)



@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Opens state stores on one fresh database (SQLite file, or a PostgreSQL schema of its own)."""
    dsn = request.getfixturevalue("postgres_dsn") if request.param == "postgres" else None
    async with store_factory(request.param, tmp_path, dsn) as factory:
        yield factory


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    """One open SQLite state store in the test's tmp_path (directories may define their own)."""
    s = StateStore.from_url(f"sqlite:///{tmp_path / 'state.db'}", tmp_path)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


# --- moto_server (AWS APIs) ---------------------------------------------------------------------------

MOTO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def _moto_answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/moto-api/", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a ``moto_server`` (SQS, Kinesis, DynamoDB, Lambda APIs) started for the test session on a
    free loopback port. Sets dummy AWS credentials in the environment when none are set. Tests keep
    apart by using unique resource names; ``moto_reset(url)`` clears everything.

    Skips when moto_server cannot start, except under ``CI=true`` where that fails the test.
    """
    import shutil
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    exe = Path(sys.executable).with_name("moto_server")
    command = str(exe) if exe.exists() else shutil.which("moto_server")
    problem = None
    proc = None
    url = ""
    if command is None:
        problem = "moto_server not found; pip install 'moto[server]'"
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        log_path = tmp_path_factory.mktemp("moto") / "moto_server.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen([command, "-H", "127.0.0.1", "-p", str(port)],
                                    stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not _moto_answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                problem = f"moto_server did not start: {log_path.read_text(errors='replace')[-500:]}"
                break
            time.sleep(0.05)
    if problem is not None:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        unavailable(problem)
    assert proc is not None
    saved = {k: os.environ.get(k) for k in MOTO_CREDENTIALS}
    for key, value in MOTO_CREDENTIALS.items():
        os.environ.setdefault(key, value)
    try:
        yield url
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def sqs_client(moto_server: str) -> Iterator[Any]:
    """A boto3 SQS client of the session's moto server (us-east-1)."""
    import boto3

    client = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto_server, aws_access_key_id="x",
                          aws_secret_access_key="x")
    yield client
    client.close()


def moto_reset(url: str) -> None:
    """Clear every resource of the moto server at ``url``."""
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(url + "/moto-api/reset", method="POST"), timeout=10):
        pass


# --- RabbitMQ -----------------------------------------------------------------------------------------

AMQP_URL_DEFAULT = "amqp://guest:guest@127.0.0.1:5672/"


async def _amqp_problem(url: str) -> str | None:
    """Connect once to ``url``; return why it failed, or None when the broker answers."""
    import aio_pika

    try:
        conn = await aio_pika.connect(url, timeout=5)
    except Exception as exc:  # aiormq raises several unrelated types for refused / auth / timeout
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """URL of the test RabbitMQ broker (``ROUTER_TEST_AMQP_URL``, default guest@127.0.0.1:5672).

    Skips the test when the broker cannot be reached, except under ``CI=true`` where that fails it.
    Tests keep apart by using unique queue and exchange names.
    """
    url = os.environ.get("ROUTER_TEST_AMQP_URL", AMQP_URL_DEFAULT)
    with ThreadPoolExecutor(1) as pool:
        problem = pool.submit(asyncio.run, _amqp_problem(url)).result()
    if problem is None:
        return url
    from yarl import URL

    shown = URL(url).with_password("***") if URL(url).password else URL(url)
    reason = f"RabbitMQ not reachable at {shown} ({problem}); set ROUTER_TEST_AMQP_URL"
    unavailable(reason)


# --- the router as a process --------------------------------------------------------------------------


@pytest.fixture
def router_factory(tmp_path: Path) -> Iterator[RouterFactory]:
    """Starts ``router run`` processes (``factory(config_yaml)``); every one is killed at teardown."""
    factory = RouterFactory(tmp_path)
    yield factory
    factory.close()
