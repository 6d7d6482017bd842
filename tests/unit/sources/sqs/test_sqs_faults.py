"""Faults of the sqs source against real servers: a queue that does not exist yet, an endpoint restart."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest

from router.aws import create_client
from router.config.models import AwsConfig
from tests.unit.sources.functions import FunctionInvoker
from tests.unit.sources.sqs.support import Harness, Sqs
from tests.waiting import until


async def test_queue_not_found_is_reported_then_recovers(
    harness: Harness, sqs: Sqs, moto_server: str, caplog: pytest.LogCaptureFixture,
) -> None:
    name = f"later-{uuid.uuid4().hex[:8]}"
    url = f"{moto_server}/123456789012/{name}"
    fn = FunctionInvoker()
    caplog.set_level(logging.INFO, logger="router.sources.sqs")
    async with harness.source(url, fn):
        await until(lambda: harness.errors() >= 2, what="errors counted")
        reasons = await harness.readiness.reasons()
        assert any(r.startswith("route uploads: queue not found (") for r in reasons), reasons
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert errors
        assert errors[0].getMessage() in (
            "route 'uploads': queue not found (AWS.SimpleQueueService.NonExistentQueue); "
            "check source.queue_url and aws.region",
            "route 'uploads': queue not found (QueueDoesNotExist); check source.queue_url and aws.region",
        )
        assert errors[0].__dict__["error_type"] == "config"
        assert len(errors) < harness.errors()  # the same error is logged once, counted every time

        assert await sqs.create(name=name) == url
        await sqs.send(url, "hello")
        await until(lambda: fn.bodies() == ["hello"], deadline=15, what="processed after recovery")
        assert await harness.readiness.reasons() == ["starting"]  # only the app's own start is missing
    assert any(r.getMessage() == "route 'uploads': the queue answers again" for r in caplog.records)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoProcess:
    """A moto_server of this test alone, so that it can be stopped and started again on its port."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        exe = Path(sys.executable).with_name("moto_server")
        self.proc = await asyncio.create_subprocess_exec(
            str(exe), "-H", "127.0.0.1", "-p", str(self.port),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        async with aiohttp.ClientSession() as session:
            async def up() -> bool:
                assert self.proc is not None
                assert self.proc.returncode is None, "moto_server exited"
                try:
                    async with session.get(self.url + "/moto-api/") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await until(up, "moto_server answering", deadline=30, interval=0.05)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


async def test_endpoint_restart_marks_not_ready_and_recovers(
    tmp_path: Path, moto_server: str, caplog: pytest.LogCaptureFixture,
) -> None:
    moto = MotoProcess(_free_port())
    aws = AwsConfig(region="eu-west-1", endpoint_url=moto.url)
    fn = FunctionInvoker()

    async def queue_with(body: str) -> str:
        async with create_client("sqs", aws) as client:
            url = await Sqs(client, aws).create(name="restart")
            await Sqs(client, aws).send(url, body)
            return url

    await moto.start()
    try:
        async with aiohttp.ClientSession() as session:
            harness = Harness(tmp_path, aws, session)
            try:
                url = await queue_with("before")
                async with harness.source(url, fn):
                    await until(lambda: fn.bodies() == ["before"], deadline=15, what="first message")
                    await moto.stop()
                    await until(lambda: harness.errors() >= 1, deadline=30, what="connection errors")
                    reasons = await harness.readiness.reasons()
                    assert any(r.startswith("route uploads: cannot reach AWS (") for r in reasons), reasons
                    await moto.start()  # back, but empty: the queue is created again
                    assert await queue_with("after") == url
                    await until(lambda: fn.bodies() == ["before", "after"], deadline=40,
                                what="recovered")
                    assert await harness.readiness.reasons() == ["starting"]
            finally:
                await harness.close()
    finally:
        await moto.stop()
    assert any("cannot reach AWS" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
