"""Cron expressions with crontab weekday numbering, and time zones."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from router.config.cron import CronError, cron_trigger, crontab_weekdays, zone


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("*", "*"),
        ("0", "sun"),
        ("7", "sun"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("5-7", "sun,fri,sat"),
        ("*/2", "sun,tue,thu,sat"),
        ("1-5/2", "mon,wed,fri"),
        ("0,6", "sun,sat"),
        ("mon-fri", "mon,tue,wed,thu,fri"),
        ("SUN", "sun"),
        ("last fri", "last fri"),  # APScheduler's own forms pass through
        ("6-1", "6-1"),  # a reversed range is left for APScheduler to report
    ],
)
def test_crontab_weekdays(field: str, expected: str) -> None:
    assert crontab_weekdays(field) == expected


def test_five_fields_with_crontab_weekday_numbers() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    trigger = cron_trigger("0 3 * * 1", "Europe/Berlin")  # Mondays at 03:00, crontab numbering
    wednesday = datetime(2024, 1, 3, 12, 0, tzinfo=berlin)
    assert trigger.get_next_fire_time(None, wednesday) == datetime(2024, 1, 8, 3, 0, tzinfo=berlin)


def test_sunday_is_zero() -> None:
    trigger = cron_trigger("15 6 * * 0")
    wednesday = datetime(2024, 1, 3, 12, 0, tzinfo=ZoneInfo("UTC"))
    assert trigger.get_next_fire_time(None, wednesday) == datetime(2024, 1, 7, 6, 15, tzinfo=ZoneInfo("UTC"))


def test_six_fields_take_seconds_first() -> None:
    trigger = cron_trigger("30 */5 * * * *")
    start = datetime(2024, 1, 3, 12, 1, 0, tzinfo=ZoneInfo("UTC"))
    assert trigger.get_next_fire_time(None, start) == datetime(2024, 1, 3, 12, 5, 30, tzinfo=ZoneInfo("UTC"))


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("* * * * * * *", "cron '* * * * * * *' has 7 fields; expected 5"),
        ("0 25 * * *", "invalid cron '0 25 * * *': Error validating expression '25'"),
        ("0 0 32 * *", "invalid cron '0 0 32 * *': Error validating expression '32'"),
    ],
)
def test_bad_cron(expr: str, message: str) -> None:
    with pytest.raises(CronError, match=f"^{re.escape(message)}"):
        cron_trigger(expr)


def test_zone() -> None:
    assert zone("Europe/Berlin") == ZoneInfo("Europe/Berlin")
    with pytest.raises(
        CronError, match=r"^unknown time zone 'america/new_york'; did you mean 'America/New_York'\?$"
    ):
        zone("america/new_york")
    with pytest.raises(CronError, match=r"^unknown time zone '\.\./etc'; use an IANA name such as UTC"):
        zone("../etc")
