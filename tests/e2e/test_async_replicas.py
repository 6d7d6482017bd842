"""Three ``router run`` replicas on one PostgreSQL database (a fresh one for the test) share the async queue:
5,000 async webhook events of a hot function spread over their ports, one replica SIGKILLed mid-way, and a
cold function's few events sent while the hot backlog is deep.

Judged by the fault suite's total-queue checker (tests/fault/checker.py) over what a recorder server saw
(each delivery with the replica that made it): 0 lost, nothing unexpected, no event delivered twice except
one the killed replica had in flight; the cold events all delivered while most of the hot backlog ahead of
them was still queued (each function's events are claimed on their own: no function waits behind another's
backlog); and no replica ran more of a function at once than its ``concurrency`` (a per-replica cap).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.e2e.recorder_server import RecorderServer
from tests.fault import conftest as fault
from tests.fault.checker import History, check
from tests.fault.harness import REFUSED, Sender, http_post
from tests.router_process import RouterFactory, RouterProcess
from tests.waiting import until_sync

pg_database = fault.pg_database  # a database of the test's own, dropped afterwards

HOT_EVENTS = 5000
COLD_EVENTS = 30
CAP = 4  # each function's concurrency, per replica
HOT_DELAY = 0.04  # the recorder answers a hot delivery after this: at most 3 * CAP / HOT_DELAY = 300/s
BACKLOG = 1500  # hot events accepted and not yet delivered when the cold ones are sent
KILLED = 2  # the replica SIGKILLed


def _config(replica: int, database: str, recorder: RecorderServer) -> str:
    functions = "\n".join(f"""
          {name}:
            http: {{url: "{recorder.url}/{name}", headers: {{X-Replica: r{replica}}}}}
            timeout: 2s
            concurrency: {CAP}
            async: {{retries: 2, backoff: {{initial: 10ms, max: 100ms}}}}""" for name in ("hot", "cold"))
    return f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 5s}}
        state: "{database}"
        functions:{functions}
        routes:
          - {{name: hot, source: {{type: webhook, path: /hot}}, function: hot, invocation: async}}
          - {{name: cold, source: {{type: webhook, path: /cold}}, function: cold, invocation: async}}
    """


class Spread:
    """Sends each id to a live replica in turn, as a load balancer would; a replica that refuses the
    connection (killed) is left out from then on and the id goes to the next one."""

    def __init__(self, replicas: list[RouterProcess], path: str) -> None:
        self.ports = [rp.port for rp in replicas]
        self.path = path
        self.dead: set[int] = set()
        self._n = 0
        self._lock = threading.Lock()

    def __call__(self, ids: list[str]) -> tuple[str, str]:
        with self._lock:
            self._n += 1
            start = self._n
        for k in range(len(self.ports)):
            port = self.ports[(start + k) % len(self.ports)]
            if port in self.dead:
                continue
            status, why = http_post(port, self.path, ids[0].encode(), {"Content-Type": "text/plain"},
                                    timeout=30)
            if status == REFUSED and why == "connection refused":
                self.dead.add(port)
                continue
            return status, why
        return REFUSED, "no replica left"


@pytest.mark.postgres
@pytest.mark.timeout(400)
def test_three_replicas_share_the_async_queue_fairly_and_lose_nothing_when_one_is_killed(
    pg_database: str, router_factory: RouterFactory, tmp_path: Path,
) -> None:
    recorder = RecorderServer(delays={"hot": HOT_DELAY}).start()
    try:
        replicas = [router_factory(_config(i, pg_database, recorder), name=f"r{i}.yaml") for i in range(3)]
        hot, cold = History(), History()
        started = time.monotonic()
        sender = Sender(Spread(replicas, "/hot"), hot, prefix="h", limit=HOT_EVENTS, workers=8,
                        deadline=started + 150)
        sender.start()
        try:
            # A deep hot backlog, then the cold function's few events.
            until_sync(lambda: sender.accepted - len(set(recorder.ids("hot"))) >= BACKLOG, deadline=90,
                       what=f"a hot backlog of {BACKLOG} events")
            backlog = sender.accepted - len(set(recorder.ids("hot")))
            hot_before = len(recorder.ids("hot"))
            cold_sender = Sender(Spread(replicas, "/cold"), cold, prefix="c", limit=COLD_EVENTS, workers=3)
            cold_sender.start()
            cold_sender.join(60)
            cold_sender.stop()
            assert len(cold.ok) == COLD_EVENTS, cold_sender.outcomes
            until_sync(lambda: set(recorder.ids("cold")) >= cold.ok, deadline=60,
                       what="every cold event delivered")
            hot_meanwhile = len(recorder.ids("hot")) - hot_before
            # Had the cold events waited behind the hot backlog, all of it would have been delivered first.
            assert hot_meanwhile < backlog / 2, (
                f"the cold events waited for {hot_meanwhile} of the {backlog} hot events queued before them")

            # One replica SIGKILLed mid-way; the load goes on to the other two.
            until_sync(lambda: sender.accepted >= HOT_EVENTS * 0.6, deadline=120,
                       what="60% of the hot events accepted")
            replicas[KILLED].kill()
            killed_at = time.monotonic()
            sender.join(150)
        finally:
            sender.stop()
        accept_seconds = time.monotonic() - started

        # The killed replica's leased events come back when their lease ends (timeout + 60 s).
        def complete() -> bool:
            return set(recorder.ids("hot")) >= hot.ok and set(recorder.ids("cold")) >= cold.ok

        until_sync(complete, deadline=150, interval=0.5, what="every acknowledged event delivered")
        total_seconds = time.monotonic() - started
        for name, history in (("hot", hot), ("cold", cold)):
            report = check(history, recorder.ids(name))
            print(f"{name}: {report.summary()}")
            report.assert_valid()
            killed = f"r{KILLED}"
            for event_id, times in report.duplicated.items():
                seen = [d for d in recorder.deliveries(name) if d.id == event_id]
                assert times == 2, f"{name} event {event_id} delivered {times} times: {seen}"
                assert any(d.replica == killed and d.at <= killed_at for d in seen), (
                    f"{name} event {event_id} delivered twice, not across the kill: {seen}")
        print(f"hot: {HOT_EVENTS} sent, accepted in {accept_seconds:.1f}s, all delivered after "
              f"{total_seconds:.1f}s (the killed replica's leases included); "
              f"send outcomes {sender.outcomes}; "
              f"cold delivered while {hot_meanwhile} of a {backlog} hot backlog were; "
              f"most at once per replica {recorder.max_in_flight}")
        assert len(hot.ok) >= HOT_EVENTS * 0.99, sender.outcomes  # the load mostly went through
        assert all(n <= CAP for n in recorder.max_in_flight.values()), recorder.max_in_flight
        for rp in replicas:
            if rp is not replicas[KILLED]:
                assert rp.stop() == 0
    finally:
        recorder.close()

