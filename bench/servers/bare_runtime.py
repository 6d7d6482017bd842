"""A bare Lambda Runtime API server, run inside the bench process: one queue of events, one future per
invocation, nothing else. ``spawn`` starts a worker process speaking to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from bench.harness import HOST, free_port

PREFIX = "/2018-06-01/runtime"
ARN = "arn:aws:lambda:us-east-1:000000000000:function:bare"


class BareRuntimeApi:
    def __init__(self) -> None:
        self._events: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=1)
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._runner: web.AppRunner | None = None
        self._waiting: set[asyncio.Task[object]] = set()
        self.port = 0

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(f"{PREFIX}/invocation/next", self._next)
        app.router.add_post(f"{PREFIX}/invocation/{{id}}/response", self._done)
        app.router.add_post(f"{PREFIX}/invocation/{{id}}/error", self._done)
        app.router.add_post(f"{PREFIX}/init/error", self._init_error)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, HOST, self.port).start()

    async def close(self) -> None:
        for fut in self._pending.values():
            fut.cancel()
        for task in list(self._waiting):  # /next handlers of workers that are gone
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def invoke(self, payload: bytes, timeout: float = 10.0) -> bytes:  # noqa: ASYNC109
        request_id = str(uuid.uuid4())
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = fut
        try:
            await self._events.put((request_id, payload))
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(request_id, None)

    async def _next(self, request: web.Request) -> web.Response:
        task = asyncio.current_task()
        assert task is not None
        self._waiting.add(task)
        try:
            request_id, payload = await self._events.get()
        finally:
            self._waiting.discard(task)
        return web.Response(body=payload, content_type="application/json", headers={
            "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 10_000),
            "Lambda-Runtime-Invoked-Function-Arn": ARN,
            "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000",
        })

    async def _done(self, request: web.Request) -> web.Response:
        body = await request.read()
        fut = self._pending.get(request.match_info["id"])
        if fut is not None and not fut.done():
            fut.set_result(body)
        return web.json_response({"status": "OK"}, status=202)

    async def _init_error(self, request: web.Request) -> web.Response:
        body = await request.read()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(RuntimeError(f"init error: {body[:300]!r}"))
        return web.json_response({"status": "OK"}, status=202)

    async def spawn(self, argv: Sequence[str], task_root: Path, handler: str = "app.handler") -> Worker:
        env = dict(os.environ)
        env.update({
            "AWS_LAMBDA_RUNTIME_API": self.address, "LAMBDA_TASK_ROOT": str(task_root), "_HANDLER": handler,
            "AWS_LAMBDA_FUNCTION_NAME": "bare", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256", "AWS_REGION": "us-east-1",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/bare", "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        })
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, cwd=str(task_root), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
        )
        return Worker(proc)


class Worker:
    """A worker process of the bare API; ``stop`` kills it (SIGTERM, then SIGKILL)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
