"""Plausibility checks on position records (docs/protocol.md §4.4).

A frame can be well formed and still describe an impossible fix: a latitude of 123°, a time in
1970 after an RTC reset. Such a record is rejected alone, with a reason, so the good records of
the same batch are still stored. Pure functions: the caller passes "now".

`check_record` is the rule, record by record, with the reason. `all_plausible` answers the
question a whole frame asks first — is every record plausible? — in one pass of plain
comparisons (no call, no attribute lookup per record): it is the ingest hot path, where nearly
every frame passes, and only a frame that fails it is gone through with `check_record`. Both read
the same limits below; tests/protocol/gp8/test_validation.py checks they agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from protocol.gp8.frames import PositionRecord

# 2015-01-01T00:00:00Z: older than any GP8 box; earlier times come from a reset clock.
MIN_TIME_MS = 1_420_070_400_000
# Boxes take UTC from GPS; more than this ahead of our clock is a broken RTC, not drift.
MAX_CLOCK_SKEW_MS = 10 * 60 * 1000
_MAX_LAT = 900_000_000
_MAX_LON = 1_800_000_000
MAX_HEADING_DDEG = 3599
# Badge ids are u64 on the wire; real ones (iButton 48 bits, RFID 56) fit a signed 64-bit
# integer, which is what SQLite and MongoDB hold: a larger one would fail its whole batch.
MAX_BADGE = 2**63 - 1


class RecordRejection(StrEnum):
    LATITUDE = "latitude_out_of_range"
    LONGITUDE = "longitude_out_of_range"
    TIME_TOO_OLD = "time_too_old"
    TIME_IN_FUTURE = "time_in_future"
    HEADING = "heading_out_of_range"
    BADGE = "badge_out_of_range"


def check_record(record: PositionRecord, now_ms: int) -> RecordRejection | None:
    """Why ``record`` is impossible, or None when it is plausible."""
    if not -_MAX_LAT <= record.lat_e7 <= _MAX_LAT:
        return RecordRejection.LATITUDE
    if not -_MAX_LON <= record.lon_e7 <= _MAX_LON:
        return RecordRejection.LONGITUDE
    if record.time_ms < MIN_TIME_MS:
        return RecordRejection.TIME_TOO_OLD
    if record.time_ms > now_ms + MAX_CLOCK_SKEW_MS:
        return RecordRejection.TIME_IN_FUTURE
    if record.heading_ddeg > MAX_HEADING_DDEG:
        return RecordRejection.HEADING
    if record.badge > MAX_BADGE:
        return RecordRejection.BADGE
    return None


def all_plausible(records: Iterable[PositionRecord], now_ms: int) -> bool:
    """Whether `check_record` finds every record plausible (stops at the first that is not)."""
    latest = now_ms + MAX_CLOCK_SKEW_MS
    # Indexed by position (RECORD's field order: time 0, lat 1, lon 2, heading 5, badge 14): a
    # tuple index is cheaper than a NamedTuple attribute.
    for r in records:
        if not (
            MIN_TIME_MS <= r[0] <= latest
            and -_MAX_LAT <= r[1] <= _MAX_LAT
            and -_MAX_LON <= r[2] <= _MAX_LON
            and r[5] <= MAX_HEADING_DDEG
            and r[14] <= MAX_BADGE
        ):
            return False
    return True
