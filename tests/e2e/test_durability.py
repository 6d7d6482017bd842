"""Accepted async events survive a SIGKILL of the router (DESIGN §9): 0 lost, duplicates counted."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.router_process import RouterFactory, http
from tests.waiting import process_gone, until_sync

EVENTS = 1000


def test_sigkill_after_accepting_1000_async_events_loses_none(router_factory: RouterFactory,
                                                              tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    seen.mkdir()
    router_factory.write_function("record", f"""
        import os, time
        def handler(event, context):
            # The side effect: one file per (event, attempt); a slow handler keeps events in flight.
            time.sleep(0.05)
            n = event["body"]
            path = os.path.join("{seen}", n + "." + context.aws_request_id)
            with open(path, "a") as f:
                f.write("x")
    """)
    config = f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          record:
            runtime: python3.11
            handler: app.handler
            code: {tmp_path / 'functions' / 'record'}
            concurrency: 4
            async: {{retries: 2, backoff: {{initial: 10ms, max: 100ms}}}}
        routes:
          - {{name: ingest, source: {{type: webhook, path: /ingest}}, function: record, invocation: async}}
    """
    rp = router_factory(config)

    def post(i: int) -> str:
        status, _, body = http("POST", rp.url + "/ingest", str(i).encode())
        assert status == 202, body
        return str(json.loads(body)["requestId"])

    with ThreadPoolExecutor(16) as pool:
        accepted = list(pool.map(post, range(EVENTS)))
    assert len(set(accepted)) == EVENTS

    # SIGKILL while events are still being delivered.
    rp.kill()
    done_before = len(list(seen.iterdir()))
    assert done_before < EVENTS, "all events were delivered before the kill; the test proves nothing"

    rp2 = router_factory(config, port=rp.port, start=False)
    rp2.start()

    def delivered() -> set[str]:
        return {p.name.split(".")[0] for p in seen.iterdir()}

    got = until_sync(lambda: len(delivered()) == EVENTS and delivered(), deadline=120,
                     what=f"{EVENTS} events observed")
    assert got == {str(i) for i in range(EVENTS)}
    files = list(seen.iterdir())
    duplicates = len(files) - EVENTS
    print(f"delivered before kill: {done_before}, duplicates after restart: {duplicates}")
    assert rp2.stop() == 0


def test_workers_die_with_a_killed_router(router_factory: RouterFactory, tmp_path: Path) -> None:
    pid_file = tmp_path / "worker.pid"
    router_factory.write_function("busy", f"""
        import os, time
        def handler(event, context):
            with open("{pid_file}", "w") as f:
                f.write(str(os.getpid()))
            time.sleep(60)
    """)
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          busy: {{runtime: python3.11, handler: app.handler, code: {tmp_path / 'functions' / 'busy'},
                  timeout: 120s}}
        routes:
          - {{name: busy, source: {{type: webhook, path: /busy}}, function: busy, invocation: async}}
    """)
    assert http("POST", rp.url + "/busy", b"{}")[0] == 202
    pid = int(until_sync(lambda: pid_file.exists() and pid_file.read_text(), what="worker pid", deadline=20))
    rp.kill()


    until_sync(lambda: process_gone(pid), deadline=10,
               what=f"worker {pid} to exit after the router was killed")
