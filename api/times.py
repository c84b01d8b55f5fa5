"""Time values at the API boundary: storage speaks epoch milliseconds, clients RFC 3339.

Every time the API writes is UTC with exactly three decimals (``2024-05-01T12:00:00.250Z``) so
clients can compare them as strings; every time it reads may be RFC 3339 or epoch milliseconds.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Bounds of what the API accepts as a query time: datetime's own range, kept inside years
# 1..9999 so formatting any accepted value back can never overflow.
MIN_MS = -62_135_596_800_000 + 86_400_000  # 0001-01-02
MAX_MS = 253_402_300_799_999 - 86_400_000  # 9999-12-30


def ms_to_datetime(ms: int) -> datetime:
    # timedelta arithmetic is exact; datetime.fromtimestamp(ms / 1000) would round through float
    return _EPOCH + timedelta(milliseconds=ms)


# iso_ms runs twice per position of every export (a day of 1 s fixes is 172,800 calls), so it
# assembles precomputed pieces instead of formatting a datetime: about 5x faster.
_HOUR_MINUTE = [f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60)]
_SECOND = [f"{s:02d}." for s in range(60)]
_MILLI = [f"{r:03d}Z" for r in range(1000)]


@functools.lru_cache(maxsize=4096)
def _date_prefix(day: int) -> str:
    d = _EPOCH + timedelta(days=day)
    # Not strftime: "%Y" does not zero-pad years before 1000 on glibc.
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}T"


def iso_ms(ms: int) -> str:
    """Epoch ms as ISO-8601 UTC with millisecond precision and a ``Z``."""
    seconds, milli = divmod(ms, 1000)
    day, second_of_day = divmod(seconds, 86_400)
    minute, second = divmod(second_of_day, 60)
    return _date_prefix(day) + _HOUR_MINUTE[minute] + _SECOND[second] + _MILLI[milli]


def age_s(time_ms: int, now_ms: int) -> float:
    """Seconds from ``time_ms`` to ``now_ms``, to the millisecond. Not ``round(..., 3)``: an
    integer of milliseconds over 1000 is already the float nearest that decimal, which is what
    round would give, at a seventh of its cost (the map computes one per vehicle)."""
    return (now_ms - time_ms) / 1000


def datetime_to_ms(value: datetime) -> int:
    """An aware datetime as epoch ms; a naive one is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


# Epoch numbers are milliseconds; one below this (before 1973-03-03 as ms) that is a plausible
# time in seconds (after 2001-09-09) was most likely meant as seconds: the messages say so.
_SECONDS_HINT_MIN = 1_000_000_000
_SECONDS_HINT_MAX = 100_000_000_000


def is_epoch_number(text: str) -> bool:
    return text.strip().lstrip("-").isdigit()


def parse_time(text: str) -> int:
    """Parse a query time: RFC 3339 / ISO-8601 (``2024-05-01T12:00:00Z``, a date alone, no
    zone = UTC) or epoch milliseconds (digits).

    Raises ValueError with a message fit for a client.
    """
    value = text.strip()
    if is_epoch_number(value):
        ms = int(value)
    else:
        try:
            # RFC 3339 allows a lower-case t/z and a space for the T; fromisoformat wants "T".
            parsed = datetime.fromisoformat(value.upper().replace(" ", "T", 1))
            ms = datetime_to_ms(parsed)
        except (ValueError, OverflowError):
            raise ValueError(
                f"{text!r} is neither RFC 3339 (2024-05-01T12:00:00Z) nor epoch milliseconds"
            ) from None
    if not MIN_MS <= ms <= MAX_MS:
        raise ValueError(f"{text!r} is out of the supported time range")
    return ms


def understood(text: str, ms: int) -> str:
    """How ``text`` was read, for an error message: ``'1796150000' (read as epoch milliseconds:
    1970-01-21T18:55:50.000Z; epoch seconds need 3 more digits)``."""
    if not is_epoch_number(text):
        return f"{text!r} (read as {iso_ms(ms)})"
    hint = ""
    if _SECONDS_HINT_MIN <= abs(ms) < _SECONDS_HINT_MAX:
        hint = f"; for epoch seconds, send {ms * 1000} or an RFC 3339 time"
    return f"{text!r} (read as epoch milliseconds: {iso_ms(ms)}{hint})"
