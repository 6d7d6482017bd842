"""Fixtures of the fault suite: the router as a subprocess (tests/router_process.py), the recorder
function, the total-queue checker, and services the tests may break without disturbing anyone else: a
RabbitMQ node of their own, a moto_server of their own, a PostgreSQL database of their own.

Each test's figures (the checker's counts, recovery times) are kept as the test's ``user_properties``
(junit XML) and printed in a "fault suite" section at the end of the pytest run (tests/conftest.py's
hooks: they see the reports in the run's main process, also when pytest-xdist runs the tests elsewhere).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fault.checker import History, SideEffects
from tests.unavailable import unavailable

RECORDER = Path(__file__).resolve().parent / "functions" / "recorder"
# Multiplies the load of the fault tests (default 1: the whole suite in a few minutes); e.g.
# ROUTER_FAULT_SCALE=10 for a longer run before a release.
SCALE = float(os.environ.get("ROUTER_FAULT_SCALE", "1"))



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- what each test reports ---------------------------------------------------------------------------


class FaultLog:
    """Lines a test wants in the run's output: printed at once (-s) and in the end-of-run section."""

    def __init__(self, node: pytest.Item) -> None:
        self.node = node

    def __call__(self, line: str) -> None:
        print(f"{self.node.name}: {line}")
        self.node.user_properties.append(("fault", line))


@pytest.fixture
def fault_log(request: pytest.FixtureRequest) -> FaultLog:
    return FaultLog(request.node)


@pytest.fixture
def history() -> History:
    return History()


@pytest.fixture
def effects(tmp_path: Path) -> SideEffects:
    return SideEffects(tmp_path / "seen")


def recorder(name: str, effects: SideEffects, *, concurrency: int = 4, sleep: float = 0.0,
             timeout: str = "30s", extra: str = "") -> str:
    """The YAML of function ``name`` running the recorder (under ``functions:``, indented 2)."""
    return f"""
          {name}:
            runtime: python3.11
            handler: app.handler
            code: {RECORDER}
            timeout: {timeout}
            concurrency: {concurrency}
            environment: {{SEEN_DIR: "{effects.dir}", SLEEP: "{sleep}"}}
            {extra}
    """.rstrip()


# --- a RabbitMQ node of the test's own ---------------------------------------------------------------


def _rabbit_bin(name: str) -> str | None:
    direct = Path("/usr/lib/rabbitmq/bin") / name  # the scripts themselves: no switch to the rabbitmq user
    if direct.exists():
        return str(direct)
    return shutil.which(name)


class RabbitNode:
    """A RabbitMQ node started for one test on free loopback ports, with its own data directory and
    Erlang cookie, so ``stop_app`` / ``start_app`` disturb nobody else using the machine's broker."""

    def __init__(self, server: str, ctl: str) -> None:
        self.ctl_exe = ctl
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="fault-rabbit-"))
        self.name = f"fault{self.port}@localhost"
        (self.base / ".erlang.cookie").write_text(uuid.uuid4().hex.upper())
        (self.base / ".erlang.cookie").chmod(0o400)
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users.guest = true\n")
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq-env.conf").write_text("")
        self.env = {
            **os.environ,
            "HOME": str(self.base),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "node.pid"),
            "RABBITMQ_LOGS": str(self.base / "node.log"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",  # loopback only, like the distribution port below
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        self._out = open(self.base / "server.out", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([server], env=self.env, stdout=self._out, stderr=subprocess.STDOUT,
                                     cwd=self.base, start_new_session=True)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def ctl(self, *args: str, timeout: float = 90) -> str:
        done = subprocess.run([self.ctl_exe, "-n", self.name, "-q", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed ({done.returncode}): "
                               f"{(done.stderr or done.stdout)[-800:]}")
        return done.stdout

    def wait_started(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited with {self.proc.returncode}: {self.output()}")
            try:
                self.ctl("await_startup", "--timeout", "5", timeout=30)
                return
            except (RuntimeError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def output(self) -> str:
        text = (self.base / "server.out").read_text(errors="replace")
        return text[-1500:]

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.ctl("shutdown", timeout=60)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._out.close()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def rabbit_node() -> Iterator[RabbitNode]:
    """A private RabbitMQ node, shared by a module's tests (skipped, or failed under CI=true, when
    rabbitmq-server is missing). A test that stops its app starts it again before it ends."""
    server, ctl = _rabbit_bin("rabbitmq-server"), _rabbit_bin("rabbitmqctl")
    if server is None or ctl is None:
        unavailable("rabbitmq-server / rabbitmqctl not found: the broker-restart faults need them")
    assert server is not None
    assert ctl is not None
    node = RabbitNode(server, ctl)
    try:
        node.wait_started()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        node.close()
        unavailable(f"a private RabbitMQ node did not start: {exc}")
    try:
        yield node
    finally:
        node.close()


# --- a moto_server of the test's own, killed and restarted on the same port ----------------------------


class MotoProcess:
    """``moto_server`` on a fixed loopback port; ``kill()`` and ``start()`` again (moto keeps no state)."""

    def __init__(self, command: str, log_dir: Path) -> None:
        self.command = command
        self.port = free_port()
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/moto-api/", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def start(self, timeout: float = 30) -> None:
        self.starts += 1
        log = open(self.log_dir / f"moto-{self.starts}.log", "wb")  # noqa: SIM115 - the child holds it
        try:
            self.proc = subprocess.Popen([self.command, "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                text = (self.log_dir / f"moto-{self.starts}.log").read_text(errors="replace")[-800:]
                raise RuntimeError(f"moto_server did not start on port {self.port}: {text}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def own_moto(tmp_path: Path) -> Iterator[MotoProcess]:
    exe = Path(sys.executable).with_name("moto_server")
    command = str(exe) if exe.exists() else shutil.which("moto_server")
    if command is None:
        unavailable("moto_server not found; pip install 'moto[server]'")
    assert command is not None
    moto = MotoProcess(command, tmp_path)
    try:
        moto.start()
    except RuntimeError as exc:
        moto.kill()
        unavailable(str(exc))
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    try:
        yield moto
    finally:
        moto.kill()
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)


# --- a PostgreSQL database of the test's own ------------------------------------------------------------


@pytest.fixture
def pg_database(postgres_dsn: str) -> Iterator[str]:
    """The DSN of a fresh database (dropped afterwards), so terminating its backends disturbs nobody."""
    import asyncio

    import asyncpg
    from sqlalchemy.engine import make_url

    name = f"fault_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(postgres_dsn, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except asyncpg.PostgresError as exc:
        unavailable(f"cannot create a database for the test ({exc}); the role needs CREATEDB")
    try:
        yield make_url(postgres_dsn).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
