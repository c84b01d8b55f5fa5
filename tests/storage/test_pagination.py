"""Contract: walking every listing page by page gives each item once, in order, no gaps."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from storage.errors import InvalidCursor
from storage.models import DeviceModel, Fleet, Page, Position
from storage.pagination import encode_cursor
from storage.repository import Store
from tests.storage.factories import access_entry, api_key, event, position

T = TypeVar("T")


async def walk(fetch: Callable[[str | None], Awaitable[Page[T]]], limit: int) -> list[T]:
    """Every item of a listing, checking the page contract on the way."""
    items: list[T] = []
    cursor: str | None = None
    for _ in range(1_000):
        page = await fetch(cursor)
        assert len(page.items) <= limit
        items += page.items
        if page.next_cursor is None:
            return items
        assert len(page.items) == limit  # only a full page may have a next one
        cursor = page.next_cursor
    raise AssertionError("pagination does not end")


@pytest.mark.parametrize("limit", [1, 3])
async def test_fleets(store: Store, limit: int) -> None:
    ids = [(await store.fleets.create(f"f{i}")).id for i in range(7)]
    got = await walk(lambda c: store.fleets.list(cursor=c, limit=limit), limit)
    assert [f.id for f in got] == sorted(ids)


async def test_keys(store: Store, fleet: Fleet) -> None:
    keys = [await store.keys.create(api_key(fleet.id)) for _ in range(7)]
    await store.keys.create(api_key(None))  # an operator key never shows in a fleet's listing
    got = await walk(lambda c: store.keys.list(fleet.id, cursor=c, limit=2), 2)
    assert got == sorted(keys, key=lambda k: k.id)


async def test_vehicles_with_filter(store: Store, fleet: Fleet) -> None:
    made = [
        await store.vehicles.create(
            fleet.id, vin=f"VIN{i}", plate="SAME" if i % 2 else f"P{i}", label=""
        )
        for i in range(9)
    ]
    got = await walk(lambda c: store.vehicles.list(fleet.id, cursor=c, limit=2), 2)
    assert got == sorted(made, key=lambda v: v.id)
    got = await walk(lambda c: store.vehicles.list(fleet.id, cursor=c, limit=2, plate="SAME"), 2)
    assert got == sorted([v for v in made if v.plate == "SAME"], key=lambda v: v.id)


async def test_devices(store: Store, fleet: Fleet) -> None:
    made = [
        await store.devices.create(
            fleet.id, imei=f"3569380356438{i:02d}", model=DeviceModel.GP8000, secret="k"
        )
        for i in range(7)
    ]
    got = await walk(lambda c: store.devices.list(fleet.id, cursor=c, limit=3), 3)
    assert got == sorted(made, key=lambda d: d.id)


async def test_positions_with_ties_on_time(store: Store, fleet: Fleet) -> None:
    # Two boxes on one vehicle report at the same instants: the order is (time_ms, device_id).
    stored = [
        position(fleet.id, dev, "veh_1", t)
        for t in range(1_000, 9_000, 1_000)
        for dev in ("dev_b", "dev_a")
    ]
    stored.append(position(fleet.id, "dev_a", "veh_2", 1_500))  # another vehicle: never listed
    await store.telemetry.store(stored, [])
    expected = sorted(
        (p for p in stored if p.vehicle_id == "veh_1" and 2_000 <= p.time_ms < 7_000),
        key=lambda p: (p.time_ms, p.device_id),
    )
    for limit in (1, 3, 10, 100):

        def fetch(cursor: str | None, limit: int = limit) -> Awaitable[Page[Position]]:
            return store.telemetry.positions(
                fleet.id, "veh_1", from_ms=2_000, to_ms=7_000, cursor=cursor, limit=limit
            )

        assert await walk(fetch, limit) == expected


async def test_events_with_ties(store: Store, fleet: Fleet) -> None:
    stored = [
        event(fleet.id, dev, "veh_1", t, code)
        for t in (1_000, 2_000, 3_000)
        for dev in ("dev_b", "dev_a")
        for code in ("sos", "power_cut")
    ]
    await store.telemetry.store([], stored)
    expected = sorted(stored, key=lambda e: (e.time_ms, e.device_id, e.code))
    assert await walk(lambda c: store.telemetry.events(fleet.id, cursor=c, limit=5), 5) == expected
    sos = [e for e in expected if e.code == "sos"]
    assert (
        await walk(lambda c: store.telemetry.events(fleet.id, code="sos", cursor=c, limit=2), 2)
        == sos
    )


async def test_access_log_with_ties(store: Store, fleet: Fleet) -> None:
    entries = [access_entry(fleet.id, 1_000 * (i % 3)) for i in range(8)]
    for entry in entries:
        await store.access_log.append(entry)
    got = await walk(lambda c: store.access_log.list(fleet.id, cursor=c, limit=3), 3)
    assert got == sorted(entries, key=lambda e: (e.time_ms, e.id))


async def test_exact_multiple_of_limit_has_no_empty_last_page(store: Store, fleet: Fleet) -> None:
    await store.telemetry.store([position(fleet.id, "dev_a", "veh_1", t) for t in (1, 2, 3, 4)], [])
    first = await store.telemetry.positions(fleet.id, "veh_1", from_ms=0, to_ms=10, limit=2)
    second = await store.telemetry.positions(
        fleet.id, "veh_1", from_ms=0, to_ms=10, limit=2, cursor=first.next_cursor
    )
    assert [p.time_ms for p in second.items] == [3, 4]
    assert second.next_cursor is None


async def test_new_rows_between_pages_are_neither_skipped_nor_repeated(
    store: Store, fleet: Fleet
) -> None:
    await store.telemetry.store([position(fleet.id, "dev_a", "veh_1", t) for t in (10, 20, 30)], [])
    first = await store.telemetry.positions(fleet.id, "veh_1", from_ms=0, to_ms=100, limit=2)
    # A buffered record arrives before page 1's end and one after it.
    await store.telemetry.store([position(fleet.id, "dev_a", "veh_1", t) for t in (5, 25)], [])
    rest = await store.telemetry.positions(
        fleet.id, "veh_1", from_ms=0, to_ms=100, limit=10, cursor=first.next_cursor
    )
    assert [p.time_ms for p in first.items] == [10, 20]
    assert [p.time_ms for p in rest.items] == [25, 30]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


BAD_CURSORS = [
    "not a cursor!",
    _b64(b"{not json"),
    _b64(b'["vehicle"]'),
    _b64(b'{"kind": "vehicle"}'),
    encode_cursor("device", ("dev_1",)),  # another listing's cursor
    encode_cursor("position", (True, "dev_1")),  # a JSON true where the time goes
    encode_cursor("position", ("1", "dev_1")),
    "A" * 5_000,
    "curseur-é",
    "",
]


@pytest.mark.parametrize("cursor", BAD_CURSORS)
async def test_foreign_cursors_are_invalid(store: Store, fleet: Fleet, cursor: str) -> None:
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.vehicles.list(fleet.id, cursor=cursor),
        lambda: store.telemetry.positions(fleet.id, "veh_1", from_ms=0, to_ms=1, cursor=cursor),
    ]
    for call in calls:
        with pytest.raises(InvalidCursor):
            await call()
