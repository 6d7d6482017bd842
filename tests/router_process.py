"""A real ``router run`` process for tests: its config and functions written to a temporary directory,
started on a free port, talked to over HTTP (the e2e, fault and fuzz tests, and the LambdaInvoker's).
The ``router_factory`` fixture (tests/conftest.py) stops every router it started."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.waiting import until_sync

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def router(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
           stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``router`` command once (``router validate``, ``routes``, ``invoke``, a ``run`` that must
    refuse to start), without the caller's ``ROUTER_*`` variables."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "router", *args], capture_output=True, text=True, timeout=60,
        cwd=cwd or ROOT, env=full_env, input=stdin.decode() if stdin else None,
    )


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    headers = dict(headers or {})
    if body is not None and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json"  # urllib would say form-urlencoded
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def metric_sample(url: str, sample: str) -> float | None:
    """The value of one sample of the router's ``/metrics`` at ``url`` (the base URL), given as printed
    before its value (``router_config_generation``, ``name{label="value"}``); None if absent."""
    _, _, body = http("GET", url + "/metrics", timeout=10)
    for line in body.decode().splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


@dataclass
class RouterProcess:
    config_path: Path
    port: int
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    preexec_fn: Callable[[], None] | None = None  # run in the child before exec (e.g. setrlimit)
    _log: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True) -> RouterProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "router", "run", "--config", str(self.config_path)],
            stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=str(self.config_path.parent),
            preexec_fn=self.preexec_fn,
        )
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"router exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                return http("GET", self.url + "/readyz", timeout=2)[0] == 200
            except OSError:
                return False

        until_sync(ready, "router /readyz", deadline=timeout)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.logs().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"router did not stop within {timeout}s:\n{self.logs()}") from None
        if self._log:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class RouterFactory:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[RouterProcess] = []

    def write_function(self, name: str, code: str) -> Path:
        d = self.tmp_path / "functions" / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "app.py").write_text(textwrap.dedent(code))
        return d

    def __call__(self, config_yaml: str, *, env: dict[str, str] | None = None, start: bool = True,
                 port: int | None = None, name: str = "config.yaml",
                 preexec_fn: Callable[[], None] | None = None) -> RouterProcess:
        port = port or free_port()
        path = self.tmp_path / name
        path.write_text(textwrap.dedent(config_yaml).replace("@PORT@", str(port)))
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
        full_env.update(env or {})
        rp = RouterProcess(path, port, self.tmp_path / f"router-{len(self.started)}.log", full_env,
                           preexec_fn=preexec_fn)
        self.started.append(rp)
        if start:
            rp.start()
        return rp

    def close(self) -> None:
        for rp in self.started:
            if rp.proc is not None:
                rp.stop(signal.SIGKILL)
