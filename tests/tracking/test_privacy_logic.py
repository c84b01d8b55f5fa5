"""tracking/privacy.py: schedule windows as UTC intervals, history, toggles, the override."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

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


_HOUR_MS = 3_600_000
# Forty days from 1 March: across the change to summer time (Europe: 29 March; US: 8 March).
_START = ms(2026, 3, 1)
_times = st.integers(_START, _START + 40 * 24 * _HOUR_MS)
_windows = st.builds(
    PrivacyWindow,
    st.lists(st.integers(1, 7), min_size=1, max_size=7, unique=True).map(tuple),
    st.sampled_from(["00:00", "07:00", "19:00", "23:30"]),
    st.sampled_from(["00:00", "02:00", "07:00", "19:00"]),
)
_schedules = st.one_of(
    st.none(),
    st.builds(
        PrivacySchedule,
        st.sampled_from(["Europe/Paris", "UTC", "America/New_York"]),
        st.lists(_windows, min_size=1, max_size=3).map(tuple),
    ),
)


@settings(max_examples=150, deadline=None)
@given(
    toggles=st.lists(_times, max_size=5, unique=True).map(lambda ts: tuple(sorted(ts))),
    changes=st.lists(st.tuples(_times, _schedules), max_size=3, unique_by=lambda c: c[0]),
    theft_case=st.booleans(),
    at=st.lists(_times, min_size=1, max_size=8),
)
def test_private_at_is_the_spans_of_that_instant(
    toggles: tuple[int, ...],
    changes: list[tuple[int, PrivacySchedule | None]],
    theft_case: bool,
    at: list[int],
) -> None:
    """The map's point question answers as the intervals do (every edge: toggles, schedule
    changes, windows across midnight and daylight-saving changes)."""
    vp = VehiclePrivacy(
        changes=tuple(ScheduleChange("v", t, s) for t, s in sorted(changes, key=lambda c: c[0])),
        toggles=toggles,
        theft_case=theft_case,
    )
    edges = [t + d for t in (*toggles, *(t for t, _ in changes)) for d in (-1, 0, 1)]
    for t in [*at, *edges]:
        assert vp.private_at(t) is bool(vp.spans(t, t + 1)), t
