"""Destinations: file (JSON lines, one lock per file), http (real server), function (submit), factory."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from router.destinations.factory import build_destinations
from router.destinations.file import FileDestination
from router.destinations.function import FunctionDestination
from router.destinations.http import HttpDestination
from router.errors import ConfigError, DestinationError
from router.invocation import Invocation
from tests.unit.core.helpers import make_config, read_records, serve

RECORD = {"version": "1.0", "requestContext": {"condition": "Success"}, "requestPayload": {"ü": "x" * 5000}}


async def _no_submit(inv: Invocation) -> str:
    raise AssertionError("not expected")


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_file_records_never_interleave(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    config = make_config({
        "a": {"async": {"on_success": {"type": "file", "path": "out/records.jsonl"}}},
        "b": {"async": {"on_failure": {"type": "file", "path": "./out/../out/records.jsonl"}}},
    }, config_dir=tmp_path)
    dests = build_destinations(config, session=session, submit=_no_submit)
    a, b = dests["a"].on_success, dests["b"].on_failure
    assert isinstance(a, FileDestination)
    assert isinstance(b, FileDestination)
    assert a.path == b.path == tmp_path / "out" / "records.jsonl"  # relative to the config's directory
    await asyncio.gather(*(d.send({**RECORD, "n": i}) for i in range(40) for d in (a, b)))
    records = read_records(a.path)
    assert len(records) == 80
    assert sorted(r["n"] for r in records) == sorted(list(range(40)) * 2)
    assert records[0]["requestPayload"] == RECORD["requestPayload"]


async def test_file_failure_raises(tmp_path: Path) -> None:
    (tmp_path / "dir-is-a-file").write_text("")
    dest = FileDestination(tmp_path / "dir-is-a-file" / "x.jsonl", asyncio.Lock())
    with pytest.raises(DestinationError, match=r"^file destination '.*x\.jsonl': cannot append the record: "):
        await dest.send(RECORD)


async def test_http_posts_json_with_headers(session: aiohttp.ClientSession) -> None:
    got: list[tuple[dict[str, Any], str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        got.append((await request.json(), request.headers["Authorization"], request.content_type))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/records", handler)
    async with serve(app) as base:
        dest = HttpDestination(f"{base}/records", headers={"Authorization": "Bearer s3cret"}, timeout=5,
                               session=session)
        await dest.send(RECORD)
    assert got == [(RECORD, "Bearer s3cret", "application/json")]


async def test_http_non_2xx_raises_without_secrets(session: aiohttp.ClientSession) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=503, text="down for maintenance " + "z" * 500)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/records")

    app = web.Application()
    app.router.add_post("/records", handler)
    app.router.add_post("/moved", redirect)
    async with serve(app) as base:
        url = base.replace("http://", "http://user:pw@") + "/records?token=abc"
        dest = HttpDestination(url, headers={}, timeout=5, session=session)
        with pytest.raises(DestinationError) as info:
            await dest.send(RECORD)
        msg = str(info.value)
        assert msg.startswith(f"http destination POST {base}/records: returned 503: down for maintenance")
        assert "token" not in msg
        assert "pw" not in msg
        assert len(msg) < 300
        moved = HttpDestination(f"{base}/moved", headers={}, timeout=5, session=session)
        with pytest.raises(DestinationError, match="returned 302"):
            await moved.send(RECORD)


async def test_http_connection_refused_raises(session: aiohttp.ClientSession) -> None:
    app = web.Application()
    async with serve(app) as base:
        pass  # the port is closed now
    dest = HttpDestination(f"{base}/x", headers={}, timeout=5, session=session)
    with pytest.raises(DestinationError, match=r"^http destination POST http://127\.0\.0\.1:\d+/x: "):
        await dest.send(RECORD)


async def test_function_destination_submits_an_async_invocation() -> None:
    submitted: list[Invocation] = []

    async def submit(inv: Invocation) -> str:
        submitted.append(inv)
        return inv.request_id

    await FunctionDestination("cleanup", submit).send(RECORD)
    [inv] = submitted
    assert (inv.function, inv.source, inv.invocation_type) == ("cleanup", "function", "async")
    assert json.loads(inv.payload) == RECORD


async def test_factory_builds_each_kind(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    config = make_config({
        "a": {"async": {"on_success": {"type": "function", "function": "b"},
                        "on_failure": {"type": "http", "url": "http://127.0.0.1:9/x", "timeout": "2s"}}},
        "b": {},
    }, config_dir=tmp_path)
    dests = build_destinations(config, session=session, submit=_no_submit)
    assert dests["a"].on_success is not None
    assert dests["a"].on_success.kind == "function"
    assert dests["a"].on_failure is not None
    assert dests["a"].on_failure.kind == "http"
    assert dests["a"].get("on_failure") is dests["a"].on_failure
    assert dests["b"].on_success is None
    assert dests["b"].on_failure is None


async def test_factory_refuses_unsupported_and_unknown(session: aiohttp.ClientSession) -> None:
    config = make_config({
        "a": {"async": {"on_success": {"type": "sqs", "queue_url": "http://q"},
                        "on_failure": {"type": "amqp", "url": "amqp://x"}}},  # both supported
        "b": {"async": {"on_failure": {"type": "function", "function": "cleanpu"}}},
        "cleanup": {},
    })
    with pytest.raises(ConfigError) as info:
        build_destinations(config, session=session, submit=_no_submit)
    assert info.value.problems == [
        "functions.b.async.on_failure.function: unknown function 'cleanpu'; did you mean 'cleanup'?",
    ]
