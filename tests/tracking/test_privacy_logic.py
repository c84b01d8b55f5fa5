"""tracking/privacy.py: schedule windows as UTC intervals, history, toggles, the override."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from storage.privacy import PrivacySchedule, PrivacyWindow, ScheduleChange
from tracking.privacy import PrivacyState, VehiclePrivacy

PARIS = ZoneInfo("Europe/Paris")
NIGHTS = PrivacySchedule("Europe/Paris", (PrivacyWindow((1, 2, 3, 4, 5), "19:00", "07:00"),))


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=PARIS).timestamp() * 1000)  # type: ignore[misc]


def test_night_window_runs_past_midnight_and_is_not_retroactive() -> None:
    vp = VehiclePrivacy(changes=(ScheduleChange("v", ms(2026, 3, 2, 12), NIGHTS),))
    spans = vp.spans(ms(2026, 3, 1), ms(2026, 3, 8))
    assert not spans.covers(ms(2026, 3, 2, 6))  # Monday 06:00: before the schedule existed
    assert spans.covers(ms(2026, 3, 2, 23)) and spans.covers(ms(2026, 3, 3, 6, 59))
    assert not spans.covers(ms(2026, 3, 3, 7)) and not spans.covers(ms(2026, 3, 3, 12))
    assert spans.covers(ms(2026, 3, 7, 6))  # Friday night's window ends Saturday 07:00
    assert not spans.covers(ms(2026, 3, 7, 20))  # no window starts on Saturday


def test_toggles_pair_up_and_theft_case_overrides() -> None:
    vp = VehiclePrivacy(toggles=(1_000, 2_000, 5_000))
    spans = vp.spans(0, 10_000)
    assert [spans.covers(t) for t in (999, 1_000, 1_999, 2_000, 5_000, 9_999)] == [
        False,
        True,
        True,
        False,
        True,
        True,
    ]
    stolen = VehiclePrivacy(toggles=(1_000,), theft_case=True)
    assert not stolen.spans(0, 10_000) and stolen.state(0, 10_000) is PrivacyState.OVERRIDDEN
