"""Contract: storing positions and events, last positions, queries, retention."""

from __future__ import annotations

from typing import Any

import pytest

from storage.models import Fleet, StoreResult
from storage.repository import MapEntry, Store
from storage.sqlite.telemetry import ROWS_PER_STATEMENT
from tests.storage.conftest import ENGINES_WITH_TRANSACTIONS
from tests.storage.factories import event, position
from tests.storage.fakes import FakeTransactions


@pytest.fixture(params=ENGINES_WITH_TRANSACTIONS)
def engine(request: pytest.FixtureRequest) -> str:
    """These paths are written twice on Mongo (in a transaction where the deployment has them):
    every test here also runs on the fake with transactions."""
    name: str = request.param
    return name


DEV = "dev_a"
DEV2 = "dev_b"
VEH = "veh_a"
VEH2 = "veh_b"


async def test_store_counts_and_reads_back(store: Store, fleet: Fleet) -> None:
    positions = [position(fleet.id, DEV, VEH, t) for t in (1_000, 2_000, 3_000)]
    events = [event(fleet.id, DEV, VEH, 2_000, "sos", detail=3)]
    result = await store.telemetry.store(positions, events)
    assert result == StoreResult(3, 0, 1, 0)
    page = await store.telemetry.positions(fleet.id, VEH, from_ms=0, to_ms=10_000)
    assert page.items == positions
    assert (await store.telemetry.events(fleet.id)).items == events


async def test_store_nothing(store: Store) -> None:
    assert await store.telemetry.store([], []) == StoreResult(0, 0, 0, 0)


async def test_same_batch_twice_is_stored_once(store: Store, fleet: Fleet) -> None:
    positions = [position(fleet.id, DEV, VEH, t) for t in (1_000, 2_000)]
    events = [
        event(fleet.id, DEV, VEH, 1_000, "sos"),
        event(fleet.id, DEV, VEH, 1_000, "power_cut"),
    ]
    assert await store.telemetry.store(positions, events) == StoreResult(2, 0, 2, 0)
    assert await store.telemetry.store(positions, events) == StoreResult(
        0,
        2,
        0,
        2,
        # Named, so that processing after the store can leave resends out.
        frozenset({(DEV, 1_000), (DEV, 2_000)}),
        frozenset({(DEV, 1_000, "sos"), (DEV, 1_000, "power_cut")}),
    )
    assert len((await store.telemetry.positions(fleet.id, VEH, from_ms=0, to_ms=10**6)).items) == 2
    assert len((await store.telemetry.events(fleet.id)).items) == 2


async def test_resend_keeps_the_first_copy(store: Store, fleet: Fleet) -> None:
    first = position(fleet.id, DEV, VEH, 1_000, speed_kmh=10.0)
    resend = position(fleet.id, DEV, VEH, 1_000, speed_kmh=99.0, buffered=True)
    await store.telemetry.store([first], [])
    assert await store.telemetry.store([resend, position(fleet.id, DEV, VEH, 2_000)], []) == (
        StoreResult(1, 1, 0, 0, frozenset({(DEV, 1_000)}))
    )
    page = await store.telemetry.positions(fleet.id, VEH, from_ms=0, to_ms=1_001)
    assert page.items == [first]


async def test_duplicates_inside_one_batch(store: Store, fleet: Fleet) -> None:
    p = position(fleet.id, DEV, VEH, 1_000)
    # Two copies refused, but no resend of an earlier batch: nothing is named.
    result = await store.telemetry.store([p, p, p], [])
    assert result == StoreResult(1, 2, 0, 0)
    assert result.new_positions([p, p, p]) == [p]


async def test_same_time_other_box_is_not_a_duplicate(store: Store, fleet: Fleet) -> None:
    result = await store.telemetry.store(
        [position(fleet.id, DEV, VEH, 1_000), position(fleet.id, DEV2, VEH, 1_000)], []
    )
    assert result.positions_inserted == 2
    page = await store.telemetry.positions(fleet.id, VEH, from_ms=0, to_ms=2_000)
    assert [(p.time_ms, p.device_id) for p in page.items] == [(1_000, DEV), (1_000, DEV2)]


async def test_a_big_batch_is_stored_whole_and_its_resends_named(
    store: Store, fleet: Fleet
) -> None:
    # Sized for SQLite's multi-row statements: whole executions and a rest, more vehicles
    # than one execution of the last-position upsert, raw IO on some rows (a JSON column).
    vehicles = ROWS_PER_STATEMENT + 3
    batch = [
        position(
            fleet.id,
            f"dev_{i % vehicles}",
            f"veh_{i % vehicles}",
            1_000 + i,
            lat=i / 1_000,
            io={"io_240": i} if i % 3 == 0 else None,
        )
        for i in range(2 * ROWS_PER_STATEMENT + 7)
    ]
    assert await store.telemetry.store(batch, []) == StoreResult(len(batch), 0, 0, 0)
    for v in (0, vehicles - 1):
        page = await store.telemetry.positions(fleet.id, f"veh_{v}", from_ms=0, to_ms=10**6)
        assert page.items == [p for p in batch if p.vehicle_id == f"veh_{v}"]
    newest = {p.vehicle_id: p for p in batch}  # the batch is in time order
    assert await store.telemetry.last_positions(fleet.id) == sorted(
        newest.values(), key=lambda p: p.vehicle_id or ""
    )
    # Every other record again, amid new ones: only the resends are named.
    again = batch[::2]
    fresh = [position(fleet.id, "dev_new", "veh_new", 10_000 + i) for i in range(150)]
    result = await store.telemetry.store([*fresh[:75], *again, *fresh[75:]], [])
    assert result == StoreResult(
        len(fresh), len(again), 0, 0, frozenset((p.device_id, p.time_ms) for p in again)
    )


async def test_last_position_is_the_newest(store: Store, fleet: Fleet) -> None:
    # Out of order inside the batch too.
    batch = [position(fleet.id, DEV, VEH, t, lat=t / 1_000) for t in (2_000, 3_000, 1_000)]
    await store.telemetry.store(batch, [])
    last = await store.telemetry.last_position(fleet.id, VEH)
    assert last == batch[1]


async def test_late_record_never_moves_last_position_back(store: Store, fleet: Fleet) -> None:
    newer = position(fleet.id, DEV, VEH, 5_000, lat=50.0)
    await store.telemetry.store([newer], [])
    late = position(fleet.id, DEV, VEH, 4_000, lat=40.0, buffered=True)
    assert (await store.telemetry.store([late], [])).positions_inserted == 1
    assert await store.telemetry.last_position(fleet.id, VEH) == newer
    newest = position(fleet.id, DEV, VEH, 6_000, lat=60.0)
    await store.telemetry.store([newest], [])
    assert await store.telemetry.last_position(fleet.id, VEH) == newest


async def test_invalid_fix_does_not_move_last_position(store: Store, fleet: Fleet) -> None:
    valid = position(fleet.id, DEV, VEH, 1_000)
    await store.telemetry.store([valid], [])
    no_fix = position(fleet.id, DEV, VEH, 2_000, fix_valid=False, lat=0.0, lon=0.0)
    assert (await store.telemetry.store([no_fix], [])).positions_inserted == 1  # still history
    assert await store.telemetry.last_position(fleet.id, VEH) == valid


async def test_no_valid_fix_yet_means_no_last_position(store: Store, fleet: Fleet) -> None:
    await store.telemetry.store([position(fleet.id, DEV, VEH, 1_000, fix_valid=False)], [])
    assert await store.telemetry.last_position(fleet.id, VEH) is None
    assert await store.telemetry.last_positions(fleet.id) == []


async def test_unfitted_box_is_not_a_vehicle(store: Store, fleet: Fleet) -> None:
    loose = position(fleet.id, DEV2, None, 9_000)
    fitted = position(fleet.id, DEV, VEH, 1_000)
    await store.telemetry.store([loose, fitted], [])
    assert await store.telemetry.last_positions(fleet.id) == [fitted]
    assert await store.telemetry.last_position(fleet.id, VEH) == fitted
    # The box's id is not a vehicle id.
    assert await store.telemetry.last_position(fleet.id, DEV2) is None


async def test_last_positions_of_every_vehicle(store: Store, fleet: Fleet) -> None:
    a = position(fleet.id, DEV, VEH, 1_000)
    b = position(fleet.id, DEV2, VEH2, 2_000)
    await store.telemetry.store([a, b], [])
    assert sorted(await store.telemetry.last_positions(fleet.id), key=lambda p: p.time_ms) == [a, b]


async def test_last_positions_in_bbox(store: Store, fleet: Fleet) -> None:
    paris = position(fleet.id, "dev_1", "veh_paris", 1_000, lat=48.85, lon=2.35)
    berlin = position(fleet.id, "dev_2", "veh_berlin", 1_000, lat=52.52, lon=13.40)
    fiji = position(fleet.id, "dev_3", "veh_fiji", 1_000, lat=-17.7, lon=178.0)
    samoa = position(fleet.id, "dev_4", "veh_samoa", 1_000, lat=-13.8, lon=-172.1)
    await store.telemetry.store([paris, berlin, fiji, samoa], [])
    france = (-5.0, 41.0, 10.0, 51.5)
    assert await store.telemetry.last_positions(fleet.id, bbox=france) == [paris]
    europe = (-10.0, 35.0, 30.0, 60.0)
    found = await store.telemetry.last_positions(fleet.id, bbox=europe)
    assert sorted(p.vehicle_id or "" for p in found) == ["veh_berlin", "veh_paris"]
    # A box across the antimeridian (min_lon > max_lon, RFC 7946).
    pacific = (170.0, -25.0, -165.0, -5.0)
    found = await store.telemetry.last_positions(fleet.id, bbox=pacific)
    assert sorted(p.vehicle_id or "" for p in found) == ["veh_fiji", "veh_samoa"]
    # Edges are inside.
    edge = (2.35, 48.85, 2.35, 48.85)
    assert await store.telemetry.last_positions(fleet.id, bbox=edge) == [paris]


async def test_fleet_map_names_the_vehicles_that_exist(
    store: Store, fleet: Fleet, other_fleet: Fleet
) -> None:
    van = await store.vehicles.create(fleet.id, vin="VIN-VAN", plate="AB-123", label="van")
    car = await store.vehicles.create(fleet.id, vin="VIN-CAR", plate="CD-456", label="")
    gone = await store.vehicles.create(fleet.id, vin="VIN-GONE", plate="EF-789", label="old")
    theirs = await store.vehicles.create(other_fleet.id, vin="VIN-X", plate="XX", label="x")
    await store.vehicles.delete(fleet.id, gone.id, 500)
    in_paris = position(fleet.id, "dev_1", van.id, 1_000, lat=48.85, lon=2.35)
    in_berlin = position(fleet.id, "dev_2", car.id, 2_000, lat=52.52, lon=13.40)
    await store.telemetry.store(
        [
            in_paris,
            in_berlin,
            # A fix of before the deletion, arriving after it: a last position again, but no
            # vehicle names it.
            position(fleet.id, "dev_3", gone.id, 400, lat=48.86, lon=2.36),
            # A box without a vehicle; another fleet's vehicle id under this fleet.
            position(fleet.id, "dev_4", None, 4_000, lat=48.85, lon=2.35),
            position(fleet.id, "dev_5", theirs.id, 5_000, lat=48.85, lon=2.35),
        ],
        [],
    )
    assert len(await store.telemetry.last_positions(fleet.id)) == 4
    by_id = sorted([van, car], key=lambda v: v.id)
    fixes = {van.id: in_paris, car.id: in_berlin}
    assert await store.telemetry.fleet_map(fleet.id) == [
        MapEntry(v.id, v.plate, v.label, fixes[v.id]) for v in by_id
    ]
    paris = (2.3, 48.8, 2.4, 48.9)
    assert await store.telemetry.fleet_map(fleet.id, bbox=paris) == [
        MapEntry(van.id, "AB-123", "van", in_paris)
    ]
    assert await store.telemetry.fleet_map(fleet.id, bbox=(-10.0, -10.0, -9.0, -9.0)) == []
    assert await store.telemetry.fleet_map(other_fleet.id) == []


async def test_fleet_map_is_in_vehicle_id_order_whatever_the_positions(
    store: Store, fleet: Fleet
) -> None:
    vehicles = [
        await store.vehicles.create(fleet.id, vin=f"VIN-{i}", plate=f"P{i}", label="")
        for i in range(6)
    ]
    by_id = sorted(vehicles, key=lambda v: v.id)
    # The area is read by latitude: the last vehicle by id is the southernmost, and so on.
    fixes = {
        v.id: position(fleet.id, f"dev_{i}", v.id, 1_000, lat=48.89 - i / 100, lon=2.35)
        for i, v in enumerate(by_id)
    }
    await store.telemetry.store(list(fixes.values()), [])
    expected = [MapEntry(v.id, v.plate, v.label, fixes[v.id]) for v in by_id]
    assert await store.telemetry.fleet_map(fleet.id, bbox=(2.3, 48.8, 2.4, 48.9)) == expected
    assert await store.telemetry.fleet_map(fleet.id) == expected


async def test_positions_time_range_is_half_open(store: Store, fleet: Fleet) -> None:
    await store.telemetry.store(
        [position(fleet.id, DEV, VEH, t) for t in range(1_000, 6_000, 1_000)], []
    )
    page = await store.telemetry.positions(fleet.id, VEH, from_ms=2_000, to_ms=4_000)
    assert [p.time_ms for p in page.items] == [2_000, 3_000]


async def test_positions_are_per_vehicle(store: Store, fleet: Fleet) -> None:
    await store.telemetry.store(
        [position(fleet.id, DEV, VEH, 1_000), position(fleet.id, DEV2, VEH2, 1_000)], []
    )
    page = await store.telemetry.positions(fleet.id, VEH2, from_ms=0, to_ms=10_000)
    assert [p.device_id for p in page.items] == [DEV2]


async def test_events_filters(store: Store, fleet: Fleet) -> None:
    events = [
        event(fleet.id, DEV, VEH, 1_000, "sos"),
        event(fleet.id, DEV, VEH, 2_000, "power_cut"),
        event(fleet.id, DEV2, VEH2, 3_000, "sos"),
        event(fleet.id, DEV2, None, 4_000, "tamper"),
    ]
    await store.telemetry.store([], events)

    async def times(**filters: object) -> list[int]:
        page = await store.telemetry.events(fleet.id, **filters)  # type: ignore[arg-type]
        return [e.time_ms for e in page.items]

    assert await times() == [1_000, 2_000, 3_000, 4_000]
    assert await times(code="sos") == [1_000, 3_000]
    assert await times(vehicle_id=VEH) == [1_000, 2_000]
    assert await times(vehicle_id=VEH2, code="power_cut") == []
    assert await times(from_ms=2_000, to_ms=4_000) == [2_000, 3_000]
    assert await times(code="sos", from_ms=2_000) == [3_000]


async def test_event_keeps_its_position(store: Store, fleet: Fleet) -> None:
    e = event(fleet.id, DEV, VEH, 1_000, "harsh_braking", detail=7)
    await store.telemetry.store([], [e])
    [stored] = (await store.telemetry.events(fleet.id)).items
    assert stored == e and stored.position.driver_badge == 77


async def test_purge_before(store: Store, fleet: Fleet, other_fleet: Fleet) -> None:
    await store.telemetry.store(
        [position(fleet.id, DEV, VEH, t) for t in (1_000, 2_000, 3_000)]
        + [position(other_fleet.id, "dev_o", "veh_o", 1_000)],
        [event(fleet.id, DEV, VEH, 1_000), event(fleet.id, DEV, VEH, 3_000)],
    )
    assert await store.telemetry.purge_before(fleet.id, 2_500) == 3  # 2 positions + 1 event
    page = await store.telemetry.positions(fleet.id, VEH, from_ms=0, to_ms=10_000)
    assert [p.time_ms for p in page.items] == [3_000]
    assert [e.time_ms for e in (await store.telemetry.events(fleet.id)).items] == [3_000]
    # Another fleet's data is not touched.
    other = await store.telemetry.positions(other_fleet.id, "veh_o", from_ms=0, to_ms=10_000)
    assert len(other.items) == 1
    assert await store.telemetry.purge_before(fleet.id, 2_500) == 0


async def test_purge_keeps_every_last_position(store: Store, fleet: Fleet) -> None:
    # A vehicle parked long ago: its last fix is older than the cut-off but stays, on the map
    # and in its track; the fixes before it and the invalid one after it go.
    parked = [
        position(fleet.id, DEV, VEH, 1_000),
        position(fleet.id, DEV, VEH, 2_000),
        position(fleet.id, DEV, VEH, 3_000, fix_valid=False),
    ]
    loose = position(fleet.id, DEV2, None, 1_500)  # an unfitted box's last position too
    await store.telemetry.store([*parked, loose], [])
    assert await store.telemetry.purge_before(fleet.id, 5_000) == 2
    assert await store.telemetry.last_position(fleet.id, VEH) == parked[1]
    track = await store.telemetry.positions(fleet.id, VEH, from_ms=0, to_ms=10_000)
    assert track.items == [parked[1]]
    # The loose box's fix is kept as well: it is that box's last position.
    await store.telemetry.store([position(fleet.id, DEV2, None, 9_000)], [])
    assert await store.telemetry.purge_before(fleet.id, 5_000) == 1


async def test_vehicle_delete_drops_its_last_position_not_its_track(
    store: Store, fleet: Fleet
) -> None:
    vehicle = await store.vehicles.create(fleet.id, vin="V", plate="P", label="L")
    await store.telemetry.store([position(fleet.id, DEV, vehicle.id, 1_000)], [])
    await store.vehicles.delete(fleet.id, vehicle.id, 2_000)
    assert await store.telemetry.last_position(fleet.id, vehicle.id) is None
    assert await store.telemetry.last_positions(fleet.id) == []
    track = await store.telemetry.positions(fleet.id, vehicle.id, from_ms=0, to_ms=10_000)
    assert len(track.items) == 1


@pytest.mark.parametrize("limit", [0, -1])
async def test_limit_below_one_is_a_caller_bug(store: Store, fleet: Fleet, limit: int) -> None:
    with pytest.raises(ValueError):
        await store.telemetry.positions(fleet.id, VEH, from_ms=0, to_ms=1, limit=limit)


async def test_mongo_stores_records_and_their_stream_entries_in_one_transaction(
    engine: str, store: Store, fleet: Fleet
) -> None:
    """On a replica set, positions, events, the stream's log and last positions commit together:
    every write of store() carries the transaction's session, and none runs outside it."""
    if engine != "mongo-txn":
        pytest.skip("the transaction path: Mongo with transactions only")
    from storage.mongo import MongoStore
    from storage.mongo.schema import EVENTS, LAST_POSITIONS, POSITIONS
    from storage.mongo.stream_schema import STREAM, STREAM_SEQ
    from storage.mongo.telemetry import MongoTelemetry

    assert isinstance(store, MongoStore) and isinstance(store.telemetry, MongoTelemetry)
    transactions = store.telemetry._transactions
    assert isinstance(transactions, FakeTransactions)
    writes: list[tuple[str, bool, bool]] = []
    database = store._db.database
    spied = {
        name: database[name] for name in (POSITIONS, EVENTS, STREAM, STREAM_SEQ, LAST_POSITIONS)
    }
    for name, collection in spied.items():
        for method in ("insert_many", "find_one_and_update", "bulk_write"):
            original = getattr(collection, method)

            def spy(*args: Any, _o: Any = original, _n: str = name, **kwargs: Any) -> Any:
                in_session = kwargs.get("session") is transactions.session
                writes.append((_n, in_session, transactions.inside))
                return _o(*args, **kwargs)

            setattr(collection, method, spy)
    store._db.collection = lambda name: spied.get(name) or database[name]  # type: ignore[method-assign]
    runs = transactions.runs
    result = await store.telemetry.store(
        [position(fleet.id, DEV, VEH, 1_000), position(fleet.id, DEV, VEH, 2_000)],
        [event(fleet.id, DEV, VEH, 2_000)],
    )
    assert (result.positions_inserted, result.events_inserted) == (2, 1)
    assert transactions.runs == runs + 1
    assert {w[0] for w in writes} == set(spied)
    assert all(in_session and inside for _, in_session, inside in writes), writes
