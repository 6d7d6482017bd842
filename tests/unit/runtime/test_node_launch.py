"""How a Node.js worker is started: Lambda's node flags and variables, the memory limit, parent death."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from router.config.models import AwsConfig, FunctionConfig
from router.errors import EnvironmentStartError
from router.runtime import node_bundle
from router.runtime.launch import NODE_BOOTSTRAP_DIR, resolve_launch
from router.runtime.memory import CgroupV2
from router.runtime.nodejs import node_flags

from .conftest import FUNCTIONS, MakeInvoker, environment_pids, invocation, process_gone
from .node_support import NODE_RUNTIME, require_node

CODE = FUNCTIONS / "node_basic"


def spec_for(**fields: object):  # type: ignore[no-untyped-def]
    config = FunctionConfig(runtime=NODE_RUNTIME, handler="index.echo", code=str(CODE), **fields)  # type: ignore[arg-type]
    return resolve_launch("web", config, CODE, AwsConfig(region="eu-west-1"))


@pytest.mark.parametrize(("version", "options", "expected"), [
    ("v20.16.0", "", ["--max-semi-space-size=6", "--max-old-space-size=116"]),
    ("v20.20.2", "", ["--no-experimental-require-module", "--max-semi-space-size=6",
                      "--max-old-space-size=116"]),
    ("v22.12.0", "", ["--no-experimental-require-module", "--no-experimental-detect-module",
                      "--max-semi-space-size=6", "--max-old-space-size=116"]),
    ("v22.12.0", "--experimental-require-module --max-old-space-size=64",
     ["--no-experimental-detect-module"]),
    ("v24.1.0", "", ["--max-semi-space-size=6", "--max-old-space-size=116"]),
])
def test_node_flags_as_lambdas_bootstrap(version: str, options: str, expected: list[str]) -> None:
    assert node_flags(version, 128, options) == ["--expose-gc", "--max-http-header-size", "81920", *expected]


def test_heap_flags_follow_memory() -> None:
    flags = node_flags("v24.1.0", 1024, "")
    assert flags[-2:] == ["--max-semi-space-size=51", "--max-old-space-size=922"]


def test_command_and_environment() -> None:
    require_node()
    spec = spec_for(memory=512, environment={"NODE_OPTIONS": "--enable-source-maps"})
    argv = list(spec.argv)
    node = shutil.which("node")
    assert argv[0] == node  # no shell, no setpriv: the spawner sets limits and prctls before the exec
    assert spec.prctl_in_child is True
    assert spec.limit_data is True  # RLIMIT_DATA, not RLIMIT_AS (V8 reserves much address space)
    assert argv[-1] == str(node_bundle.path(NODE_BOOTSTRAP_DIR))  # the bootstrap as one file
    assert "--max-old-space-size=461" in argv
    assert spec.self_limits is False
    env = spec.env
    assert env["AWS_EXECUTION_ENV"] == f"AWS_Lambda_{NODE_RUNTIME}"
    assert env["NODE_OPTIONS"] == "--enable-source-maps"
    assert env["NODE_PATH"] == str(CODE.resolve())
    assert env["LAMBDA_RUNTIME_DIR"] == str(NODE_BOOTSTRAP_DIR)
    assert env["_HANDLER"] == "index.echo"
    assert env["AWS_REGION"] == "eu-west-1"
    assert "PYTHONUNBUFFERED" not in env
    assert "PYTHONPATH" not in env


def test_the_users_node_path_wins() -> None:
    require_node()
    assert spec_for(environment={"NODE_PATH": "/opt/libs"}).env["NODE_PATH"] == "/opt/libs"


def test_missing_node_names_the_function_and_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EnvironmentStartError,
                       match=rf"function 'web': runtime {NODE_RUNTIME} needs node \d+ on "
                       r"PATH, got no node on PATH; install Node.js \d+ or add its bin directory to PATH"):
        spec_for()


@pytest.mark.parametrize(("pool_size", "pool_mb"), [(None, 4 * 8), ("2", 2 * 8), ("nonsense", 4 * 8)])
async def test_data_limit_without_cgroup(
        make_invoker: MakeInvoker, pool_size: str | None, pool_mb: int) -> None:
    """memory + 64 MB of headroom + the stacks of libuv's thread pool (8 MB a thread, UV_THREADPOOL_SIZE)."""
    require_node()
    if CgroupV2.detect() is not None:
        pytest.skip("a delegated cgroup v2 limits the environment's memory instead")
    environment = {"UV_THREADPOOL_SIZE": pool_size} if pool_size is not None else {}
    invoker = await make_invoker("node_basic", runtime=NODE_RUNTIME, handler="index.context", memory=128,
                                 environment=environment)
    result = await invoker.invoke(invocation())
    assert result.ok
    (pid,) = environment_pids(invoker)
    limits = Path(f"/proc/{pid}/limits").read_text()  # noqa: ASYNC240 - procfs, no disk
    data = next(line for line in limits.splitlines() if line.startswith("Max data size"))
    assert data.split()[3:5] == [str((128 + 64 + pool_mb) << 20)] * 2


def test_a_node_worker_dies_with_the_router(tmp_path: Path) -> None:
    """SIGKILL a router process (here: a small script using the router's launch path) while its Node
    worker runs a long handler: the worker dies too."""
    require_node()
    script = tmp_path / "router_stub.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, json, sys
        sys.path.insert(0, {str(Path.cwd())!r})
        from pathlib import Path
        from router.config.models import AwsConfig, FunctionConfig
        from router.invocation import Invocation
        from router.invokers.local import LocalInvoker
        from router.metrics import Metrics
        from router.runtime.api import RuntimeApiServer
        from tests.unit.runtime.conftest import environment_pids

        async def main():
            api = RuntimeApiServer()
            await api.start()
            code = Path({str(CODE)!r})
            config = FunctionConfig(runtime={NODE_RUNTIME!r}, handler="index.sleep", code=str(code),
                                    timeout=600)
            invoker = LocalInvoker("web", config, code_dir=code, aws=AwsConfig(), metrics=Metrics(),
                                   runtime_api=api, arn="arn:aws:lambda:us-east-1:0:function:web")
            await invoker.start()
            task = asyncio.ensure_future(invoker.invoke(Invocation(
                function="web", payload=json.dumps({{"seconds": 600}}).encode(), source="test")))
            while not environment_pids(invoker):
                await asyncio.sleep(0.01)
            print(*environment_pids(invoker), flush=True)
            await task

        asyncio.run(main())
    """))
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            worker = int(proc.stdout.readline())
            assert not process_gone(worker)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
    deadline = time.monotonic() + 30
    while not process_gone(worker):
        assert time.monotonic() < deadline, f"node worker {worker} outlived its router"
        time.sleep(0.05)
