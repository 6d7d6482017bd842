"""The total-queue checker itself: what it calls lost, unexpected, recovered and duplicated."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fault.checker import History, SideEffects, check, wait_until_complete


def test_every_acknowledged_id_seen_once_is_valid() -> None:
    h = History()
    h.sent_ok(["a1", "a2"])
    report = check(h, ["a2", "a1"])
    assert report.valid
    assert (report.lost, report.unexpected, report.duplicated) == ([], [], {})
    report.assert_valid()


def test_lost_unexpected_recovered_and_duplicated() -> None:
    h = History()
    h.sent_ok([f"e{i}" for i in range(5)])
    h.sent_unknown("e5", "timeout")
    h.sent_refused("e6", "503")
    h.sent_unknown("e7", "reset")
    report = check(h, ["e0", "e0", "e0", "e1", "e2", "e5", "e6", "x9"])
    assert report.lost == ["e3", "e4"]
    assert report.unexpected == ["x9"]
    assert report.recovered == ["e5", "e6"]  # indeterminate or refused, observed anyway: allowed
    assert report.duplicated == {"e0": 3}
    assert report.duplicates == 2
    assert not report.valid
    assert report.summary() == (
        "sent ok 5, indeterminate 3; observed 6 ids in 8 deliveries: lost 2, unexpected 1, recovered 2, "
        "duplicated ids 1 (2 extra deliveries)")
    with pytest.raises(AssertionError, match=r"lost: e3, e4\n  unexpected: x9\n  most duplicated: e0 x3"):
        report.assert_valid()


def test_duplicates_alone_are_valid() -> None:
    h = History()
    h.sent_ok("e1")
    report = check(h, ["e1", "e1"])
    assert report.valid
    assert report.duplicates == 1


def test_an_acknowledgement_wins_over_an_earlier_unknown_and_demote_undoes_it() -> None:
    h = History()
    h.sent_unknown("e1", "timeout")
    h.sent_ok("e1")  # a retry of the same id was acknowledged
    h.sent_unknown("e1", "a later timeout does not undo the acknowledgement")
    assert check(h, []).lost == ["e1"]
    assert h.demote(["e1", "e2"], "held by a service that lost its data") == 1
    assert check(h, []).valid
    assert h.attempted == {"e1"}


def test_long_reports_are_cut() -> None:
    h = History()
    h.sent_ok([f"e{i}" for i in range(100)])
    details = check(h, []).details()
    assert "e0, e1, e2" in details
    assert "... and 80 more" in details
    assert check(h, []).lost[:3] == ["e0", "e1", "e2"]  # numeric order, not e0, e1, e10


def test_side_effects_and_waiting(tmp_path: Path) -> None:
    effects = SideEffects(tmp_path / "seen")
    h = History()
    h.sent_ok(["e1", "e2"])
    (effects.dir / "e1.abc").write_text("r1")
    (effects.dir / "e1.def").write_text("r2")
    assert sorted(effects.observed()) == ["e1", "e1"]
    report = wait_until_complete(h, effects, timeout=0.3)
    assert report.lost == ["e2"]  # gives up at the deadline and says what is missing
    (effects.dir / "e2.abc").write_text("r3")
    report = wait_until_complete(h, effects, timeout=5)
    assert report.valid
    assert report.duplicated == {"e1": 2}
