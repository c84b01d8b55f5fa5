"""Which fix becomes a last position (storage/latest.py): the newest valid fix per subject."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from storage.latest import newest_valid_fixes, subject_key
from storage.models import Position
from tests.storage.factories import position

# Few boxes, vehicles and times: many ties, boxes sharing a vehicle, unfitted boxes.
fixes = st.lists(
    st.tuples(
        st.sampled_from(["dev_a", "dev_b", "dev_c"]),
        st.sampled_from([None, "veh_1", "veh_2"]),
        st.integers(min_value=0, max_value=5),
        st.booleans(),
    ),
    max_size=30,
)


def reference(positions: list[Position]) -> dict[str, Position]:
    """The rule written plainly: per subject, the valid fix greatest by (time, device id)."""
    by_subject: dict[str, list[Position]] = {}
    for p in positions:
        if p.fix_valid:
            by_subject.setdefault(subject_key(p.vehicle_id, p.device_id), []).append(p)
    return {
        key: max(group, key=lambda p: (p.time_ms, p.device_id)) for key, group in by_subject.items()
    }


@given(fixes)
def test_the_newest_valid_fix_of_each_subject_whatever_the_order(
    drawn: list[tuple[str, str | None, int, bool]],
) -> None:
    positions = [
        position("flt_1", device, vehicle, t, fix_valid=valid)
        for device, vehicle, t, valid in drawn
    ]
    expected = reference(positions)
    assert newest_valid_fixes(positions) == expected
    assert newest_valid_fixes(positions[::-1]) == expected


def test_a_box_without_a_vehicle_is_its_own_subject_beside_a_vehicle() -> None:
    fitted = position("flt_1", "dev_a", "veh_1", 10)
    unfitted = position("flt_1", "dev_b", None, 20)
    older = position("flt_1", "dev_b", None, 5)
    tied = position("flt_1", "dev_c", "veh_1", 10)  # same time on the same vehicle: dev_c wins
    invalid = position("flt_1", "dev_a", "veh_1", 30, fix_valid=False)
    assert newest_valid_fixes([fitted, unfitted, older, tied, invalid]) == {
        "v:veh_1": tied,
        "d:dev_b": unfitted,
    }
