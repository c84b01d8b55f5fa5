"""A fence's allowed hours (`storage.models.GeofenceSchedule`): parsing and checking. Pure.

Local wall-clock time in the schedule's IANA zone (zoneinfo), so "07:00-19:00 Europe/Paris"
stays 07:00-19:00 across daylight-saving changes. A window whose end is before its start runs
past midnight and belongs to the day it starts on: Friday 22:00-06:00 covers Saturday 05:00.
The alert rules (another handler, after this one) decide "movement outside allowed hours" with
`within_schedule`.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from storage.models import GeofenceSchedule

_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)|24:00")
DAY_MINUTES = 24 * 60


def minutes(hhmm: str) -> int:
    """Minutes after midnight of ``"HH:MM"`` (``"24:00"`` is 1440); ValueError otherwise."""
    if not _HHMM.fullmatch(hhmm):
        raise ValueError(f'{hhmm!r} is not a time of day "HH:MM" (00:00..23:59, or 24:00)')
    hours, mins = hhmm.split(":")
    return int(hours) * 60 + int(mins)


@functools.lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ValueError for an unknown one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Paris)") from exc


def schedule_problem(schedule: GeofenceSchedule) -> str | None:
    """Why ``schedule`` cannot be used, or None."""
    try:
        zone(schedule.timezone)
        start, end = minutes(schedule.start), minutes(schedule.end)
    except ValueError as exc:
        return str(exc)
    if start == DAY_MINUTES:
        return '"from" cannot be 24:00'
    if start == end:
        return '"from" and "to" are the same time: use 00:00 and 24:00 for the whole day'
    if not schedule.days or any(not 1 <= d <= 7 for d in schedule.days):
        return "days are ISO weekdays 1 (Monday) .. 7 (Sunday), at least one"
    return None


def within_schedule(schedule: GeofenceSchedule, time_ms: int) -> bool:
    """Whether ``time_ms`` (UTC epoch ms) falls within the schedule's allowed hours."""
    local = datetime.fromtimestamp(time_ms / 1000, tz=UTC).astimezone(zone(schedule.timezone))
    now = local.hour * 60 + local.minute
    start, end = minutes(schedule.start), minutes(schedule.end)
    day = local.isoweekday()
    if start < end:
        return day in schedule.days and start <= now < end
    # Past midnight: the evening part is today's window, the morning part yesterday's.
    yesterday = (local - timedelta(days=1)).isoweekday()
    return (day in schedule.days and now >= start) or (yesterday in schedule.days and now < end)
