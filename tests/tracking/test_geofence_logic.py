"""The pure enter/exit rule (tracking/geofence_logic.py): margin, dwell, late records."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from storage.models import FenceSide, GeofenceEventKind, GeofenceState
from tests.tracking.helpers import (
    ORIGIN,
    T0,
    VEHICLE,
    circle_fence,
    east_of_border,
    fix,
    square_fence,
)
from tracking import CompiledFence, decide, initial_state, step

FENCE = CompiledFence.of(square_fence(margin_m=25.0, dwell_s=30))
MARGIN = 25.0
DWELL_MS = 30_000
REPORT_MS = 5_000  # a fast report interval: six fixes per dwell


def start() -> GeofenceState:
    return initial_state(FENCE.fence.fleet_id, VEHICLE, FENCE.id)


def run(
    offsets_m: list[float], state: GeofenceState | None = None, t0: int = T0
) -> tuple[GeofenceState, list[tuple[int, GeofenceEventKind]]]:
    """Feed fixes ``offsets_m`` metres east of the border, REPORT_MS apart."""
    state = state or start()
    crossings = []
    for i, d in enumerate(offsets_m):
        t = t0 + i * REPORT_MS
        state, kind = decide(state, FENCE, fix(t, east_of_border(d)))
        if kind is not None:
            crossings.append((t, kind))
    return state, crossings


def test_decide_drive_in_and_out_one_enter_one_exit() -> None:
    track = [300.0 - 20 * i for i in range(40)] + [-500 + 20 * i for i in range(60)]
    _, crossings = run(track)
    assert [k for _, k in crossings] == [GeofenceEventKind.ENTER, GeofenceEventKind.EXIT]


def test_decide_enter_waits_for_dwell_then_commits_with_that_fix() -> None:
    # Deep inside from the first fix: the candidate starts at T0, commits at T0 + dwell.
    state, crossings = run([-100.0] * 7)
    assert crossings == [(T0 + DWELL_MS, GeofenceEventKind.ENTER)]
    assert state.side is FenceSide.INSIDE and state.since_ms == T0 + DWELL_MS
    assert state.candidate is None


def test_decide_shorter_than_dwell_no_crossing() -> None:
    state, crossings = run([-100.0] * 6 + [0.0])  # 25 s inside, then back on the border
    assert crossings == []
    assert state.side is FenceSide.OUTSIDE and state.candidate is None


def test_decide_dwell_zero_commits_on_first_fix_beyond_margin() -> None:
    fence = CompiledFence.of(square_fence(margin_m=25.0, dwell_s=0))
    state, kind = decide(start(), fence, fix(T0, east_of_border(-30)))
    assert kind is GeofenceEventKind.ENTER and state.side is FenceSide.INSIDE


def test_decide_the_band_keeps_the_committed_side() -> None:
    inside, _ = run([-100.0] * 7)
    for d in (-24.0, 0.0, 24.0):
        state, kind = decide(inside, FENCE, fix(T0 + 3_600_000, east_of_border(d)))
        assert kind is None and state.side is FenceSide.INSIDE


def test_decide_a_long_gap_still_needs_two_fixes() -> None:
    """Dwell counts device time between fixes beyond the margin, so a box reporting once an
    hour crosses on its second fix out, not on its first."""
    inside, _ = run([-100.0] * 7)
    out, kind = decide(inside, FENCE, fix(T0 + 3_600_000, east_of_border(200)))
    assert kind is None and out.candidate is FenceSide.OUTSIDE
    _, kind = decide(out, FENCE, fix(T0 + 7_200_000, east_of_border(200)))
    assert kind is GeofenceEventKind.EXIT


def test_decide_circle_radius_and_margin() -> None:
    circle = CompiledFence.of(circle_fence(radius_m=300.0, margin_m=25.0, dwell_s=0))
    x_of = {"inside": 270.0, "band_in": 280.0, "band_out": 320.0, "outside": 330.0}
    seen = {name: circle.shape.classify(*ORIGIN.lonlat(x, 0.0)) for name, x in x_of.items()}
    assert seen == {
        "inside": FenceSide.INSIDE,
        "band_in": None,
        "band_out": None,
        "outside": FenceSide.OUTSIDE,
    }


# --- properties ------------------------------------------------------------------------------

# GPS jitter of a box parked on the border: inside the margin, whatever its pattern.
_BAND = st.floats(min_value=-(MARGIN - 0.5), max_value=MARGIN - 0.5, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(_BAND, min_size=1, max_size=200), st.sampled_from(list(FenceSide)))
def test_decide_jitter_within_margin_never_changes_side(
    jitter: list[float], side: FenceSide
) -> None:
    state, crossings = run(jitter, dataclasses.replace(start(), side=side))
    assert crossings == [] and state.side is side


@st.composite
def border_parking(draw: st.DrawFn) -> list[float]:
    """Jitter within the margin, with wild fixes beyond it that last less than the dwell time
    (at most five in a row at 5 s: 25 s < 30 s), on either side."""
    out: list[float] = []
    for _ in range(draw(st.integers(1, 30))):
        out.extend(draw(st.lists(_BAND, min_size=1, max_size=10)))
        wild = draw(st.floats(min_value=MARGIN, max_value=150.0) | st.floats(-150.0, -MARGIN))
        out.extend([wild] * draw(st.integers(1, DWELL_MS // REPORT_MS - 1)))
    out.extend(draw(st.lists(_BAND, min_size=1, max_size=5)))
    return out


@settings(max_examples=200, deadline=None)
@given(border_parking())
def test_decide_parked_on_the_border_with_gps_jitter_exactly_one_enter_one_exit(
    parked: list[float],
) -> None:
    """Drive in, park on the border with jitter and wild fixes, drive away: one of each."""
    drive_in = [400.0 - 25 * i for i in range(33)]  # from 400 m outside to 400 m inside
    back_to_border = [-400.0 + 25 * i for i in range(16)]
    drive_away = [25.0 * i for i in range(40)]
    _, crossings = run(drive_in + back_to_border + parked + drive_away)
    assert [k for _, k in crossings] == [GeofenceEventKind.ENTER, GeofenceEventKind.EXIT]


_STATES = st.builds(
    GeofenceState,
    fleet_id=st.just("flt"),
    vehicle_id=st.just(VEHICLE),
    geofence_id=st.just(FENCE.id),
    side=st.sampled_from(list(FenceSide)),
    since_ms=st.integers(0, T0),
    candidate=st.none() | st.sampled_from(list(FenceSide)),
    candidate_ms=st.none() | st.integers(T0 - 60_000, T0),
    checked_ms=st.integers(T0, T0 + 86_400_000),
)


@settings(max_examples=300, deadline=None)
@given(_STATES, st.integers(0, 86_400_000), st.floats(-2000, 2000, allow_nan=False))
def test_decide_a_late_record_never_changes_anything(
    state: GeofenceState, age_ms: int, d_m: float
) -> None:
    late = fix(state.checked_ms - age_ms, east_of_border(d_m))
    assert decide(state, FENCE, late) == (state, None)


@settings(max_examples=300, deadline=None)
@given(
    _STATES,
    st.none() | st.sampled_from(list(FenceSide)),
    st.integers(1, 600_000),
    st.sampled_from([0, 1_000, 30_000, 120_000]),
)
def test_step_invariants(
    state: GeofenceState, seen: FenceSide | None, after_ms: int, dwell_ms: int
) -> None:
    t = state.checked_ms + after_ms
    new, kind = step(state, seen, t, dwell_ms)
    assert new.checked_ms == t
    # A crossing is exactly a change of side, towards what was seen, stamped now.
    assert (kind is not None) == (new.side is not state.side)
    if kind is not None:
        assert new.side is seen and new.since_ms == t and new.candidate is None
        assert kind is (
            GeofenceEventKind.ENTER if seen is FenceSide.INSIDE else GeofenceEventKind.EXIT
        )
    # A candidate is always the other side, with the time it was first seen.
    if new.candidate is not None:
        assert new.candidate is not new.side and new.candidate_ms is not None
        assert t - new.candidate_ms < dwell_ms
    # Seeing the band or the committed side never leaves a candidate.
    if seen is None or seen is state.side:
        assert new.side is state.side and new.candidate is None
