"""Cron expressions (5 fields, or 6 with seconds first) and time zones, checked and turned into triggers.

APScheduler 3.x numbers weekdays from Monday = 0, crontab from Sunday = 0 (7 is Sunday too). The
day-of-week field is rewritten into APScheduler's weekday names so that ``0 3 * * 1-5`` means
Monday to Friday, as in crontab.
"""

from __future__ import annotations

import zoneinfo
from functools import cache
from typing import TYPE_CHECKING

from router.suggest import closest

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class CronError(ValueError):
    """Raised when a cron expression or a time zone is not valid; the message is fit for users."""


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone ``name`` (e.g. ``Europe/Berlin``); raise :class:`CronError` when unknown."""
    try:
        return _zone(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        near = closest(name, _all_zones())
        hint = f"; did you mean {near!r}?" if near else "; use an IANA name such as UTC or Europe/Berlin"
        raise CronError(f"unknown time zone {name!r}{hint}") from None


@cache
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


@cache
def _all_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def cron_trigger(expr: str, timezone: str = "UTC") -> CronTrigger:
    """A :class:`CronTrigger` for a crontab expression: ``min hour day month weekday`` or with
    ``second`` first. Raises :class:`CronError` naming the expression and what is wrong."""
    tz = zone(timezone)
    fields = expr.split()
    if len(fields) not in (5, 6):
        raise CronError(
            f"cron {expr!r} has {len(fields)} fields; expected 5 (minute hour day month weekday) "
            "or 6 (second minute hour day month weekday)"
        )
    if len(fields) == 5:
        fields.insert(0, "0")
    second, minute, hour, day, month, weekday = fields
    from apscheduler.triggers.cron import CronTrigger  # here: a config without a cron never loads it

    try:
        return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                           day_of_week=crontab_weekdays(weekday), timezone=tz)
    except ValueError as exc:
        raise CronError(f"invalid cron {expr!r}: {exc}") from None


def crontab_weekdays(field: str) -> str:
    """Rewrite a crontab day-of-week field (0 or 7 = Sunday) as APScheduler weekday names.

    ``1-5`` -> ``mon,tue,wed,thu,fri``; ``*`` and forms APScheduler has but crontab lacks pass through.
    """
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for item in field.split(","):
        base, _, step_text = item.partition("/")
        if step_text and not step_text.isdigit():
            return field
        step = int(step_text) if step_text else 1
        if step < 1:
            return field
        if base == "*":
            lo, hi = 0, 6
        elif "-" in base:
            a, _, b = base.partition("-")
            lo_day, hi_day = _day(a), _day(b)
            if lo_day is None or hi_day is None:
                return field
            lo, hi = lo_day, hi_day
            if hi == 0 and b.strip() == "7":
                hi = 7  # "5-7" is Friday to Sunday
        else:
            one = _day(base)
            if one is None:
                return field
            lo, hi = one, (6 if step_text else one)
        if lo > hi:
            return field  # let APScheduler report the bad range
        days.update(d % 7 for d in range(lo, hi + 1, step))
    if not days:
        return field
    return ",".join(_NAMES[d] for d in sorted(days))


def _day(text: str) -> int | None:
    text = text.strip().lower()
    if text.isdigit():
        n = int(text)
        return n % 7 if 0 <= n <= 7 else None
    if text[:3] in _NAMES and text in (text[:3], _long_name(text[:3])):
        return _NAMES.index(text[:3])
    return None


def _long_name(short: str) -> str:
    return {"sun": "sunday", "mon": "monday", "tue": "tuesday", "wed": "wednesday", "thu": "thursday",
            "fri": "friday", "sat": "saturday"}[short]
