"""Property tests of store(): whatever the batches, resends and order, every engine keeps
exactly one copy of each record and the newest valid fix as the last position."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.models import Position, StoreResult
from storage.repository import Store
from tests.storage.factories import position

# Small on purpose: the Mongo fake is slow per document. Device and vehicle names are made
# unique per example below: ids are global (a position's key is (device_id, time_ms)).
records = st.lists(
    st.tuples(
        st.sampled_from(["dev_a", "dev_b"]),
        st.integers(min_value=0, max_value=40),  # few distinct times: many duplicates
    ),
    max_size=25,
)


def fix_valid(device: str, time_ms: int) -> bool:
    # A resend carries the same record as the first send (the box replays its buffer), so
    # validity is a function of the key; about one fix in three is invalid.
    return (time_ms + (device == "dev_b")) % 3 != 0


SETTINGS = settings(
    max_examples=25,
    deadline=None,
    # One store per test; each example uses its own fleet, so examples do not see each other.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@SETTINGS
@given(batches=st.lists(records, min_size=1, max_size=3))
async def test_stored_set_is_the_unique_keys(
    store: Store, batches: list[list[tuple[str, int]]]
) -> None:
    fleet = await store.fleets.create("prop")
    vehicle_id = f"veh_of_{fleet.id}"
    totals = StoreResult(0, 0, 0, 0)
    first_seen: dict[tuple[str, int], Position] = {}
    for batch in batches:
        positions = [
            position(fleet.id, f"{dev}_{fleet.id}", vehicle_id, t, fix_valid=fix_valid(dev, t))
            for dev, t in batch
        ]
        resent = {(p.device_id, p.time_ms) for p in positions} & first_seen.keys()
        for p in positions:
            first_seen.setdefault((p.device_id, p.time_ms), p)
        result = await store.telemetry.store(positions, [])
        assert result.positions_inserted + result.positions_duplicate == len(positions)
        assert result.duplicate_positions == resent  # the resends of earlier batches, named
        totals = StoreResult(
            totals.positions_inserted + result.positions_inserted,
            totals.positions_duplicate + result.positions_duplicate,
            0,
            0,
        )

    page = await store.telemetry.positions(fleet.id, vehicle_id, from_ms=0, to_ms=100, limit=1_000)
    expected = sorted(first_seen.values(), key=lambda p: (p.time_ms, p.device_id))
    assert page.items == expected  # one copy each, the first one sent, in order
    assert totals.positions_inserted == len(first_seen)
    assert totals.positions_duplicate == sum(map(len, batches)) - len(first_seen)

    valid_times = [p.time_ms for p in first_seen.values() if p.fix_valid]
    last = await store.telemetry.last_position(fleet.id, vehicle_id)
    if not valid_times:
        assert last is None
    else:
        assert last is not None and last.fix_valid and last.time_ms == max(valid_times)


@SETTINGS
@given(
    times=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=12, unique=True)
)
async def test_last_position_is_newest_whatever_the_arrival_order(
    store: Store, times: list[int]
) -> None:
    fleet = await store.fleets.create("order")
    device_id, vehicle_id = f"dev_of_{fleet.id}", f"veh_of_{fleet.id}"
    for t in times:  # one record per batch, in the drawn (arbitrary) order
        await store.telemetry.store([position(fleet.id, device_id, vehicle_id, t)], [])
    last = await store.telemetry.last_position(fleet.id, vehicle_id)
    assert last is not None and last.time_ms == max(times)
