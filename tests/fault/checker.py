"""A Jepsen-style total-queue checker: what was sent against what was observed.

A fault test keeps a :class:`History` of the ids it sent: ``ok`` when the router or the broker
acknowledged the send (202 from a webhook or the Invoke API, a publisher confirm, a successful
SendMessage / PutRecord / PutItem), ``unknown`` when the answer is indeterminate (a timeout, a 5xx, a
refused connection, or a message held by a service that lost its data, such as moto killed with
messages on its queue). The side effects the test function left (one file per id and delivery in a
directory, see ``functions/recorder``) are the observations.

:func:`check` sorts them as Jepsen's total-queue checker does:

- **lost**: acknowledged and never observed: a bug, the test fails;
- **unexpected**: observed but never sent at all: a bug, the test fails;
- **recovered**: sent with an indeterminate answer and observed anyway (allowed);
- **duplicated**: observed more than once (allowed: delivery is at least once; counted and printed).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

SHOW = 20  # ids shown per category in a report


class History:
    """The ids a test sent, by how their send ended; safe to use from several sender threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ok: set[str] = set()
        self.unknown: dict[str, str] = {}  # id -> why the answer is indeterminate
        self.refused: dict[str, str] = {}  # id -> the refusal: surely not accepted (e.g. 503 + Retry-After)

    def sent_ok(self, ids: str | Iterable[str]) -> None:
        with self._lock:
            for i in [ids] if isinstance(ids, str) else ids:
                self.ok.add(i)
                self.unknown.pop(i, None)

    def sent_unknown(self, ids: str | Iterable[str], why: str) -> None:
        with self._lock:
            for i in [ids] if isinstance(ids, str) else ids:
                if i not in self.ok:
                    self.unknown[i] = why

    def sent_refused(self, ids: str | Iterable[str], why: str) -> None:
        """A definite refusal: the id was not accepted (it may still not appear; if it does, it counts
        as recovered, not unexpected, because a refusal after a commit is indistinguishable)."""
        with self._lock:
            for i in [ids] if isinstance(ids, str) else ids:
                if i not in self.ok:
                    self.refused[i] = why

    def demote(self, ids: Iterable[str], why: str) -> int:
        """Move acknowledged ids to ``unknown`` (their holder lost them, e.g. moto restarted): how many."""
        n = 0
        with self._lock:
            for i in ids:
                if i in self.ok:
                    self.ok.discard(i)
                    self.unknown[i] = why
                    n += 1
        return n

    @property
    def attempted(self) -> set[str]:
        with self._lock:
            return self.ok | set(self.unknown) | set(self.refused)


@dataclass
class Report:
    """The checker's verdict on one history and its observations."""

    sent_ok: int
    sent_unknown: int
    observed_ids: int
    deliveries: int
    lost: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    duplicated: dict[str, int] = field(default_factory=dict)  # id -> times observed (> 1)

    @property
    def valid(self) -> bool:
        return not self.lost and not self.unexpected

    @property
    def duplicates(self) -> int:
        """Deliveries beyond the first, over all ids."""
        return sum(n - 1 for n in self.duplicated.values())

    def summary(self) -> str:
        return (f"sent ok {self.sent_ok}, indeterminate {self.sent_unknown}; observed {self.observed_ids} "
                f"ids in {self.deliveries} deliveries: lost {len(self.lost)}, unexpected "
                f"{len(self.unexpected)}, recovered {len(self.recovered)}, duplicated ids "
                f"{len(self.duplicated)} ({self.duplicates} extra deliveries)")

    def details(self) -> str:
        lines = [self.summary()]
        for name, ids in (("lost", self.lost), ("unexpected", self.unexpected)):
            if ids:
                more = f" ... and {len(ids) - SHOW} more" if len(ids) > SHOW else ""
                lines.append(f"  {name}: {', '.join(ids[:SHOW])}{more}")
        if self.duplicated:
            worst = sorted(self.duplicated.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
            lines.append("  most duplicated: " + ", ".join(f"{i} x{n}" for i, n in worst))
        return "\n".join(lines)

    def assert_valid(self) -> None:
        assert self.valid, "total-queue check failed: " + self.details()


def _sort_key(i: str) -> tuple[int, str]:
    digits = "".join(c for c in i if c.isdigit())
    return (int(digits) if digits else -1, i)


def check(history: History, observed: Iterable[str]) -> Report:
    """Compare ``history`` with ``observed`` (one id per delivery; an id may repeat)."""
    counts = Counter(observed)
    with history._lock:
        ok, unknown, refused = set(history.ok), set(history.unknown), set(history.refused)
    seen = set(counts)
    return Report(
        sent_ok=len(ok),
        sent_unknown=len(unknown) + len(refused),
        observed_ids=len(seen),
        deliveries=sum(counts.values()),
        lost=sorted(ok - seen, key=_sort_key),
        unexpected=sorted(seen - ok - unknown - refused, key=_sort_key),
        recovered=sorted((unknown | refused) & seen, key=_sort_key),
        duplicated={i: n for i, n in counts.items() if n > 1},
    )


# --- observations: one file per (id, delivery) -----------------------------------------------------------


class SideEffects:
    """The directory where the recorder function writes one file ``<id>.<unique>`` per id and delivery."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory

    def observed(self) -> list[str]:
        """One id per delivery seen so far (files being written count: the name is the record)."""
        return [name.split(".", 1)[0] for name in os.listdir(self.dir) if not name.startswith(".")]

    def ids(self) -> set[str]:
        return set(self.observed())


class Recovery:
    """Times one recovery: from the end of a fault to the first new side effect and to completeness."""

    def __init__(self, effects: SideEffects, what: str) -> None:
        self.effects, self.what = effects, what
        self.fault_ended = time.monotonic()
        self.count_at_end = len(effects.observed())
        self.first_effect: float | None = None
        self.complete: float | None = None

    def fault_over(self) -> None:
        """Call when the fault ends (router restarted, broker back): the clock starts."""
        self.fault_ended = time.monotonic()
        self.count_at_end = len(self.effects.observed())
        self.first_effect = self.complete = None

    def poll(self, observed: int) -> None:
        if self.first_effect is None and observed > self.count_at_end:
            self.first_effect = time.monotonic() - self.fault_ended

    def line(self) -> str:
        first = "none" if self.first_effect is None else f"{self.first_effect:.2f}s"
        done = "not reached" if self.complete is None else f"{self.complete:.2f}s"
        return f"recovery after {self.what}: first new side effect {first}, every acknowledged id seen {done}"


def wait_until_complete(history: History, effects: SideEffects, *, timeout: float,
                        recovery: Recovery | None = None,
                        settle: Callable[[], bool] | None = None) -> Report:
    """Poll until every acknowledged id was observed (and ``settle()`` holds, when given), or ``timeout``.

    Returns the last report; does not assert (the caller prints, then asserts). With ``recovery``, its
    first-effect and completion times are filled in.
    """
    deadline = time.monotonic() + timeout
    while True:
        observed = effects.observed()
        report = check(history, observed)
        if recovery is not None:
            recovery.poll(len(observed))
        if not report.lost and (settle is None or settle()):
            if recovery is not None:
                recovery.complete = time.monotonic() - recovery.fault_ended
            return report
        if time.monotonic() > deadline:
            return report
        time.sleep(0.1)
