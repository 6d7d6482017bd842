"""The bare async-accept server: persist each POSTed event in SQLite (WAL), then answer 202.

One aiosqlite connection, one INSERT and one COMMIT per request: the plainest way to make an event
durable before acknowledging it. ``/count`` answers the number of stored rows.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import AsyncIterator

import aiosqlite
from aiohttp import web

DB = web.AppKey("db", aiosqlite.Connection)
PATH = web.AppKey("path", str)


async def accept(request: web.Request) -> web.Response:
    body = await request.read()
    request_id = str(uuid.uuid4())
    db = request.app[DB]
    await db.execute("INSERT INTO events (id, payload) VALUES (?, ?)", (request_id, body))
    await db.commit()
    return web.json_response({"requestId": request_id}, status=202)


async def count(request: web.Request) -> web.Response:
    async with request.app[DB].execute("SELECT count(*) FROM events") as cur:
        row = await cur.fetchone()
    return web.Response(text=str(row[0] if row else 0))


async def ready(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def db_ctx(app: web.Application) -> AsyncIterator[None]:
    db = await aiosqlite.connect(app[PATH])
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=FULL")  # as the router's default state.durability: fsync
    await db.execute("CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, payload BLOB NOT NULL)")
    await db.commit()
    app[DB] = db
    yield
    await db.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--db", required=True)
    args = p.parse_args()
    app = web.Application()
    app[PATH] = args.db
    app.cleanup_ctx.append(db_ctx)
    app.router.add_post("/accept", accept)
    app.router.add_get("/count", count)
    app.router.add_get("/ready", ready)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
