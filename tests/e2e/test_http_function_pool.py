"""The HTTP connection pool of ``http`` functions is no hidden limit: a function with ``concurrency`` above
aiohttp's default pool size (100) runs that many requests at once."""

from __future__ import annotations

from tests.e2e.recorder_server import RecorderServer
from tests.router_process import RouterFactory, http
from tests.waiting import until_sync

WIDE = 120  # above aiohttp's default of 100 connections per session


def test_an_http_function_runs_its_whole_concurrency_at_once(router_factory: RouterFactory) -> None:
    recorder = RecorderServer(delays={"wide": 5.0}).start()  # each delivery is held: they pile up
    try:
        rp = router_factory(f"""
            version: 1
            server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 2s}}
            limits: {{concurrent_executions: 400}}
            functions:
              wide:
                http: {{url: "{recorder.url}/wide", headers: {{X-Replica: r0}}}}
                timeout: 30s
                concurrency: {WIDE}
                async: {{retries: 0}}
            routes:
              - {{name: wide, source: {{type: webhook, path: /wide}}, function: wide, invocation: async}}
        """)
        for i in range(WIDE):
            status, _, _ = http("POST", rp.url + "/wide", str(i).encode(), timeout=10)
            assert status == 202
        until_sync(lambda: recorder.max_in_flight.get(("wide", "r0"), 0) >= WIDE,
                   what=f"{WIDE} deliveries in flight at once", deadline=30)
        assert recorder.max_in_flight[("wide", "r0")] == WIDE  # and never more than its concurrency
    finally:
        recorder.close()
