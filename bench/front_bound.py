"""What a lean HTTP front could save the webhook path: CPU per request of two bare servers answering
``200 ok``, aiohttp (what serves the router's webhooks) and ``router.runtime.http11`` (the lean HTTP/1.1
server of the router's Runtime API), both under uvloop as the router runs, driven by wrk alternately.

Usage: ``.venv/bin/python -m bench.front_bound [--rounds N] [--seconds S]`` (needs wrk)

A bound, not a scenario: neither server does what the router's webhook path does (event shapes, auth,
body limits, the connection guard); the difference is the server's own cost a request, what serving
webhooks on the lean server could take off scenarios 1, 2 and 12 (bench/RESULTS.md, 2026-12-06, third
session). Only 127.0.0.1 is used; each server runs on a free port and is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.harness import HOST, PYTHON, ServerProcess, cpu_seconds, free_port
from bench.load import run_load, wrk_path

SERVERS = ("aiohttp", "http11")


def serve(kind: str, port: int) -> None:
    """Run one bare server until stopped."""
    import uvloop

    if kind == "aiohttp":
        from aiohttp import web

        async def ok(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", ok)
        web.run_app(app, host=HOST, port=port, access_log=None, print=None, loop=uvloop.new_event_loop())
        return

    from router.runtime.http11 import Connection, Listener, Request

    class Ok:
        def handle(self, conn: Connection, request: Request) -> None:
            conn.respond(200, b"ok", "Content-Type: text/plain; charset=utf-8\r\n")

        def lost(self, conn: Connection) -> None:
            pass

        def stream(self, conn: Connection, request: Request, resume: Callable[[], None]) -> None:
            return None  # every body buffered

    async def run() -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        sock.listen(512)
        sock.setblocking(False)
        await Listener.start(sock, Ok(), 1 << 20)
        await asyncio.Event().wait()  # until SIGTERM

    uvloop.run(run())


async def measure(rounds: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="front-bound-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            servers: dict[str, tuple[ServerProcess, str]] = {}
            for kind in SERVERS:
                port = free_port()
                proc = ServerProcess(kind, [PYTHON, "-m", "bench.front_bound", "--serve", kind, "--port",
                                            str(port)], log_path=Path(tmp) / f"{kind}.log")
                await stack.enter_async_context(proc)
                url = f"http://{HOST}:{port}/ok"
                await proc.wait_http(url)
                servers[kind] = (proc, url)
            for connections in (1, 32):
                runs: dict[str, list[tuple[float, float, float]]] = {kind: [] for kind in SERVERS}
                for _ in range(rounds):
                    for kind, (proc, url) in servers.items():
                        before = cpu_seconds([proc.pid])
                        got = await run_load(url, connections=connections, seconds=seconds)
                        cpu = (cpu_seconds([proc.pid]) - before) / max(got.requests, 1) * 1e6
                        runs[kind].append((got.rps, got.p50_ms, cpu))
                for kind, values in runs.items():
                    print(f"{connections:>2} conn  {kind:8s} "
                          f"{statistics.median(v[0] for v in values):>9,.0f} req/s  "
                          f"p50 {statistics.median(v[1] for v in values):.3f} ms  "
                          f"CPU {statistics.median(v[2] for v in values):6.1f} us a request")


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    if not wrk_path():
        sys.exit("front_bound needs wrk (apt-get install -y wrk)")
    asyncio.run(measure(args.rounds, args.seconds))


if __name__ == "__main__":
    main()
