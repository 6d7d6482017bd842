"""Start-up checks of local functions: clear errors naming the function and the fix."""

from __future__ import annotations

import pytest

from router.errors import EnvironmentStartError

from .conftest import MakeInvoker


async def test_missing_code_directory(make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("does_not_exist", start=False)
    with pytest.raises(EnvironmentStartError, match=r"function 'does_not_exist': code directory does not "
                       r"exist, got '.*does_not_exist'; check functions.does_not_exist.code"):
        await invoker.start()


async def test_provided_without_bootstrap(make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("echo", runtime="provided", start=False)
    with pytest.raises(EnvironmentStartError,
                       match=r"function 'echo': runtime provided needs an executable file "
                             r"'bootstrap' in the code directory"):
        await invoker.start()


async def test_python_runtime_without_interpreter(make_invoker: MakeInvoker) -> None:
    invoker = await make_invoker("echo", runtime="python3.99", start=False)
    with pytest.raises(EnvironmentStartError, match=r"function 'echo': runtime python3.99 needs a python3.99 "
                       r"interpreter, got none on PATH .*; install python3.99 or set "
                       r"functions.echo.runtime: python3\.\d+"):
        await invoker.start()
