"""Contract: the live stream's log (storage/stream.py), on each engine. The repositories write
it as they store; a fleet's cursors only increase; a pruned cursor is a typed error."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from storage import stream
from storage.errors import CursorExpired
from storage.models import (
    Alert,
    AlertKind,
    CommandState,
    Fleet,
    StreamEntry,
    StreamKind,
    Vehicle,
    new_id,
    now_ms,
)
from storage.repository import Store
from tests.storage.conftest import ENGINES_WITH_TRANSACTIONS
from tests.storage.factories import event, position
from tests.storage.test_commands import (  # noqa: F401
    IMEI,
    T0,
    command,
    create,
    device_id,
    one_step,
)


@pytest.fixture(params=ENGINES_WITH_TRANSACTIONS)
def engine(request: pytest.FixtureRequest) -> str:
    """These paths are written twice on Mongo (in a transaction where the deployment has them):
    every test here also runs on the fake with transactions."""
    name: str = request.param
    return name


DEV = "dev_a"
VEH = "veh_a"


async def entries(store: Store, fleet_id: str, cursor: int = 0, **kw: object) -> list[StreamEntry]:
    page = await store.stream.after(fleet_id, cursor, **kw)  # type: ignore[arg-type]
    return page.entries


async def test_stored_records_appear_in_storage_order(store: Store, fleet: Fleet) -> None:
    positions = [position(fleet.id, DEV, VEH, t) for t in (1_000, 2_000)]
    events = [event(fleet.id, DEV, VEH, 1_500, "sos", detail=3)]
    await store.telemetry.store(positions, events)
    await store.telemetry.store([position(fleet.id, DEV, None, 3_000)], [])
    found = await entries(store, fleet.id)
    cursors = [e.cursor for e in found]
    assert cursors == sorted(set(cursors)) and cursors[0] > 0  # increasing, no repeats
    # One block per write: the flush's three entries, then the next write's one.
    assert [stream.split_cursor(c) for c in cursors] == [(1, 0), (1, 1), (1, 2), (2, 0)]
    assert [e.kind for e in found] == [
        StreamKind.POSITION,
        StreamKind.POSITION,
        StreamKind.EVENT,
        StreamKind.POSITION,
    ]
    assert [e.item for e in found] == [*positions, *events, position(fleet.id, DEV, None, 3_000)]
    assert [e.vehicle_id for e in found] == [VEH, VEH, VEH, None]
    assert await store.stream.head(fleet.id) == cursors[-1]
    assert [e.cursor for e in await entries(store, fleet.id, cursors[1])] == cursors[2:]
    assert await entries(store, fleet.id, cursors[-1]) == []


async def test_the_head_is_the_last_entry_of_an_append_split_into_blocks(
    store: Store, fleet: Fleet
) -> None:
    await store.telemetry.store([position(fleet.id, DEV, VEH, 1)], [])
    assert await store.stream.head(fleet.id) == stream.cursor_of(1, 0)
    many = [position(fleet.id, DEV, VEH, 10 + i) for i in range(stream.BLOCK_SIZE + 3)]
    await store.telemetry.store(many, [])
    # Blocks 2 (BLOCK_SIZE entries) and 3 (three): the head is block 3's third entry.
    assert await store.stream.head(fleet.id) == stream.cursor_of(3, 2)


async def test_a_resend_is_not_announced_again(store: Store, fleet: Fleet) -> None:
    first = [position(fleet.id, DEV, VEH, t) for t in (1_000, 2_000)]
    await store.telemetry.store(first, [])
    await store.telemetry.store([*first, position(fleet.id, DEV, VEH, 3_000)], [])
    found = await entries(store, fleet.id)
    assert [e.item.time_ms for e in found] == [1_000, 2_000, 3_000]  # type: ignore[attr-defined]


async def test_each_fleet_has_its_own_cursors(
    store: Store, fleet: Fleet, other_fleet: Fleet
) -> None:
    await store.telemetry.store(
        [position(fleet.id, DEV, VEH, 1_000), position(other_fleet.id, "dev_b", "veh_b", 1_000)],
        [],
    )
    await store.telemetry.store([position(other_fleet.id, "dev_b", "veh_b", 2_000)], [])
    found = await entries(store, fleet.id)
    assert [(e.fleet_id, e.item.time_ms) for e in found] == [(fleet.id, 1_000)]  # type: ignore[attr-defined]
    other = await entries(store, other_fleet.id)
    assert [e.item.time_ms for e in other] == [1_000, 2_000]  # type: ignore[attr-defined]
    assert [stream.split_cursor(e.cursor)[0] for e in other] == [1, 2]  # numbered per fleet
    assert await entries(store, "flt_nobody") == []


async def test_filters_and_the_cursor_to_ask_after_next(store: Store, fleet: Fleet) -> None:
    await store.telemetry.store(
        [position(fleet.id, DEV, VEH, 1_000), position(fleet.id, "dev_b", "veh_b", 1_000)],
        [event(fleet.id, DEV, VEH, 1_000, "sos")],
    )
    every = (await store.stream.after(fleet.id, 0)).entries
    c = [e.cursor for e in every]
    page = await store.stream.after(fleet.id, 0, kinds={StreamKind.EVENT})
    assert [e.cursor for e in page.entries] == [c[2]] and page.cursor == c[2]
    page = await store.stream.after(fleet.id, 0, vehicle_id="veh_b")
    assert [e.cursor for e in page.entries] == [c[1]]
    assert page.cursor == c[2]  # past what the filter left out: it is not scanned again
    page = await store.stream.after(fleet.id, 0, limit=2)
    assert [e.cursor for e in page.entries] == c[:2] and page.cursor == c[1]
    page = await store.stream.after(fleet.id, page.cursor, limit=2)  # the rest of the block
    assert [e.cursor for e in page.entries] == c[2:]


async def test_alerts_and_commands_are_announced(
    store: Store,
    fleet: Fleet,
    vehicle: Vehicle,
    device_id: str,  # noqa: F811
) -> None:
    alert = Alert(new_id("alr"), fleet.id, AlertKind.DUPLICATE_BOX, T0, device_id, vehicle.id)
    await store.alerts.raise_alert(alert)
    cleared = await store.alerts.clear(fleet.id, alert.id, by="key:1", at_ms=T0 + 1)
    created = await create(store, command(fleet.id, vehicle.id, device_id))
    sent = await one_step(
        store, created.id, expected=[CommandState.QUEUED], status=CommandState.SENT, at_ms=T0 + 2
    )
    found = await entries(store, fleet.id)
    assert [(e.kind, e.vehicle_id) for e in found] == [
        (StreamKind.ALERT, vehicle.id),
        (StreamKind.ALERT, vehicle.id),
        (StreamKind.COMMAND, vehicle.id),
        (StreamKind.COMMAND, vehicle.id),
    ]
    assert [e.item for e in found] == [alert, cleared, created, sent]


async def test_pruned_cursors_are_refused_not_skipped(store: Store, fleet: Fleet) -> None:
    await store.telemetry.store([position(fleet.id, DEV, VEH, t) for t in (1_000, 2_000)], [])
    first, last = (e.cursor for e in await entries(store, fleet.id))
    assert await store.stream.prune(now_ms() + 1) == 2
    assert await store.stream.horizon(fleet.id) == last
    with pytest.raises(CursorExpired) as expired:
        await store.stream.after(fleet.id, first)
    assert (expired.value.cursor, expired.value.horizon) == (first, last)
    assert await store.stream.head(fleet.id) == last  # "from now" still starts after them
    await store.telemetry.store([position(fleet.id, DEV, VEH, 3_000)], [])
    (new,) = await entries(store, fleet.id, last)  # resuming from the horizon is fine
    assert new.cursor > last  # no cursor reused
    assert await store.stream.prune(now_ms() - 60_000) == 0  # nothing that old


async def test_append_carries_other_resources(store: Store, fleet: Fleet) -> None:
    alert = Alert(new_id("alr"), fleet.id, AlertKind.ENGINE_START_CAP, T0)
    await store.stream.append([alert])
    (found,) = await entries(store, fleet.id)
    assert found.item == alert and found.vehicle_id is None


# --- the hole rule, engine-neutral -------------------------------------------------------------


def _block(number: int, created_ms: int, size: int = 1) -> tuple[int, int, object]:
    items = [position("flt", DEV, VEH, number * 100 + i) for i in range(size)]
    ((_, data),) = stream.pack(items)
    return (number, created_ms, data)


def _page(blocks: list[tuple[int, int, object]], cursor: int, now: int) -> list[tuple[int, int]]:
    page = stream.page(blocks, "flt", cursor, kinds=None, vehicle_id=None, limit=100, now_ms=now)
    return [stream.split_cursor(e.cursor) for e in page.entries]


def test_a_young_hole_is_waited_for() -> None:
    now = 10_000_000
    blocks = [_block(1, now), _block(3, now)]  # 2 is numbered, not yet visible
    assert _page(blocks, 0, now) == [(1, 0)]


def test_an_old_hole_is_a_lost_write_and_is_passed() -> None:
    now = 10_000_000
    old = now - stream.HOLE_GRACE_MS - 1
    assert _page([_block(1, old), _block(3, old)], 0, now) == [(1, 0), (3, 0)]


def test_resuming_inside_a_block() -> None:
    now = 10_000_000
    blocks = [_block(4, now, size=3), _block(5, now, size=2)]
    assert _page(blocks, stream.cursor_of(4, 0), now) == [(4, 1), (4, 2), (5, 0), (5, 1)]
    assert _page(blocks, stream.cursor_of(4, 2), now) == [(5, 0), (5, 1)]


def test_a_big_append_is_split_into_blocks() -> None:
    items = [position("flt", DEV, VEH, i) for i in range(stream.BLOCK_SIZE + 3)]
    assert [count for count, _ in stream.pack(items)] == [stream.BLOCK_SIZE, 3]


def test_every_kind_round_trips() -> None:
    alert = Alert(new_id("alr"), "flt", AlertKind.DUPLICATE_BOX, T0, "dev", "veh", "x", True)
    p = position("flt", DEV, VEH, 5)
    e = event("flt", DEV, VEH, 5, "towing")
    c = dataclasses.replace(command("flt", "veh", "dev"), status=CommandState.ACKNOWLEDGED)
    for item in (e, alert, c):
        kind = stream.kind_of(item)
        assert stream.decode(kind, stream.encode(item)) == item
    # A position travels as its key; the engine reads it back from the positions.
    assert stream.decode(StreamKind.POSITION, stream.encode(p)) == stream.PositionRef(DEV, 5)


def _generic(items: list[object]) -> list[object]:
    """The entries of ``items`` spelled one by one, as any block but a positions-only one is."""
    return [
        (stream.kind_of(item).value, stream.vehicle_of(item), stream.encode(item)) for item in items
    ]


def test_a_mixed_block_spells_each_entry_as_encode_does() -> None:
    p = position("flt", DEV, VEH, 5)
    e = event("flt", DEV, VEH, 5, "towing")
    ((count, data),) = stream.pack([p, e])
    assert count == 2
    assert data == _generic([p, e])
    assert stream.block_entries(data) == data  # a list block is read as it is


def test_a_positions_block_is_written_as_runs_and_read_back_entry_by_entry() -> None:
    # An ingest flush: runs of each box's fixes; times may step back (a replayed buffer) and
    # a box may come back after another (two of its frames in one flush); a box not fitted.
    items = (
        [position("flt", "dev-a", "veh-a", t) for t in (1_000, 2_000, 1_500, 9_000)]
        + [position("flt", "dev-b", None, 7)]
        + [position("flt", "dev-a", "veh-a", 3_000)]
    )
    ((count, data),) = stream.pack(items)
    assert count == len(items)
    assert data == {
        "runs": [
            ("veh-a", "dev-a", 1_000, [1_000, -500, 7_500]),
            (None, "dev-b", 7, []),
            ("veh-a", "dev-a", 3_000, []),
        ]
    }
    assert stream.block_entries(data) == _generic(items)
    # Through JSON, as both engines store it, and the cursors of a page over it.
    stored = orjson.loads(orjson.dumps(data))
    assert orjson.dumps(stream.block_entries(stored)) == orjson.dumps(_generic(items))
    page = stream.page(
        [(7, 0, stored)],
        "flt",
        stream.cursor_of(7, 1),
        kinds=None,
        vehicle_id="veh-a",
        limit=100,
        now_ms=0,
    )
    assert [(stream.split_cursor(e.cursor), e.item) for e in page.entries] == [
        ((7, 2), stream.PositionRef("dev-a", 1_500)),
        ((7, 3), stream.PositionRef("dev-a", 9_000)),
        ((7, 5), stream.PositionRef("dev-a", 3_000)),
    ]
    assert page.cursor == stream.cursor_of(7, 5)


def test_a_block_written_before_runs_is_still_read() -> None:
    # Blocks a gp8 before this one wrote (a list of entries) stay in the log for its retention.
    items = [position("flt", DEV, VEH, t) for t in (10, 20)]
    old = orjson.loads(orjson.dumps(_generic(items)))
    page = stream.page([(1, 0, old)], "flt", 0, kinds=None, vehicle_id=None, limit=10, now_ms=0)
    assert [e.item for e in page.entries] == [
        stream.PositionRef(DEV, 10),
        stream.PositionRef(DEV, 20),
    ]
