"""Fences, fixes and an in-memory geofence repository for the tracking tests."""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Sequence
from typing import Any

from processing import DeviceBatch
from storage.errors import NotFound
from storage.models import Geofence, GeofenceEvent, GeofenceState, Page, Position, new_id
from tracking import LocalFrame

FLEET = "flt_test"
VEHICLE = "veh_test"
DEVICE = "dev_test"
T0 = 1_714_564_800_000  # 2024-05-01T12:00:00Z
# The test fences are drawn in metres in a frame around central Paris.
ORIGIN = LocalFrame.around(2.35, 48.85)
HALF_SIDE_M = 500.0  # the square fence is 1 km across: its east edge is at x = 500 m


def ring(points_m: Sequence[tuple[float, float]]) -> list[list[float]]:
    closed = [*points_m, points_m[0]]
    return [list(ORIGIN.lonlat(x, y)) for x, y in closed]


def square_geometry(half_side_m: float = HALF_SIDE_M) -> dict[str, object]:
    h = half_side_m
    return {"type": "Polygon", "coordinates": [ring([(-h, -h), (h, -h), (h, h), (-h, h)])]}


def square_fence(fleet_id: str = FLEET, **overrides: Any) -> Geofence:
    fields: dict[str, Any] = {
        "id": new_id("gfn"),
        "fleet_id": fleet_id,
        "name": "depot",
        "geometry": square_geometry(),
        "created_ms": 1_000,
        "updated_ms": 1_000,
    }
    fields.update(overrides)
    return Geofence(**fields)


def circle_fence(radius_m: float = 300.0, **overrides: Any) -> Geofence:
    lon, lat = ORIGIN.lonlat(0, 0)
    geometry = {"type": "Point", "coordinates": [lon, lat]}
    return square_fence(geometry=geometry, radius_m=radius_m, **overrides)


def east_of_border(d_m: float, y_m: float = 0.0) -> tuple[float, float]:
    """(lon, lat) ``d_m`` metres east of the square's east edge (negative: inside)."""
    return ORIGIN.lonlat(HALF_SIDE_M + d_m, y_m)


def fix(
    time_ms: int,
    lonlat: tuple[float, float],
    *,
    vehicle_id: str | None = VEHICLE,
    device_id: str = DEVICE,
    fleet_id: str = FLEET,
) -> Position:
    lon, lat = lonlat
    return Position(
        fleet_id=fleet_id,
        device_id=device_id,
        vehicle_id=vehicle_id,
        time_ms=time_ms,
        received_ms=time_ms + 500,
        lat=lat,
        lon=lon,
        altitude_m=35,
        speed_kmh=20.0,
        heading_deg=90.0,
        satellites=9,
        hdop=0.9,
        fix_valid=True,
        ignition=True,
        doors_locked=False,
        engine_start_inhibited=False,
        external_power=True,
        odometer_m=100_000,
        external_power_mv=12_600,
        battery_mv=4_100,
        gsm_signal=20,
        warnings=0,
    )


def batch(position: Position, *, live: bool = True) -> DeviceBatch:
    """A device batch holding one fix, live (newest so far) or a late replay."""
    return DeviceBatch(
        fleet_id=position.fleet_id,
        device_id=position.device_id,
        positions=(position,),
        events=(),
        live=position if live else None,
    )


class FakeGeofenceRepo:
    """`storage.repository.GeofenceRepo` in memory, with a switch to make saves fail."""

    def __init__(self, fences: Sequence[Geofence] = ()) -> None:
        self.fences: dict[str, Geofence] = {f.id: f for f in fences}
        self.stored: dict[tuple[str, str], GeofenceState] = {}
        self.crossings: list[GeofenceEvent] = []
        self.fail_saves = 0
        self.saves = 0
        self.state_loads = 0
        self.lists = 0

    async def create(self, fence: Geofence) -> Geofence:
        self.fences[fence.id] = fence
        return fence

    async def get(self, fleet_id: str, geofence_id: str) -> Geofence:
        found = self.fences.get(geofence_id)
        if found is None or found.fleet_id != fleet_id:
            raise NotFound(geofence_id)
        return found

    async def list(
        self, fleet_id: str, *, cursor: str | None = None, limit: int = 100
    ) -> Page[Geofence]:
        self.lists += 1
        mine = sorted((f for f in self.fences.values() if f.fleet_id == fleet_id), key=_id)
        start = 0 if cursor is None else int(cursor)
        items = mine[start : start + limit]
        more = start + limit < len(mine)
        return Page(items=items, next_cursor=str(start + limit) if more else None)

    async def count(self, fleet_id: str) -> int:
        return sum(f.fleet_id == fleet_id for f in self.fences.values())

    async def replace(self, fence: Geofence) -> Geofence:
        await self.get(fence.fleet_id, fence.id)
        self.fences[fence.id] = fence
        return fence

    async def delete(self, fleet_id: str, geofence_id: str) -> None:
        await self.get(fleet_id, geofence_id)
        del self.fences[geofence_id]
        self.stored = {k: s for k, s in self.stored.items() if k[1] != geofence_id}

    async def states(self, fleet_id: str, vehicle_id: str) -> builtins.list[GeofenceState]:
        self.state_loads += 1
        return [s for (v, _), s in self.stored.items() if v == vehicle_id]

    async def save(
        self, states: Sequence[GeofenceState], events: Sequence[GeofenceEvent] = ()
    ) -> None:
        self.saves += 1
        if self.fail_saves:
            self.fail_saves -= 1
            raise ConnectionError("storage down")
        keys = {(e.geofence_id, e.vehicle_id, e.time_ms, e.kind) for e in self.crossings}
        for e in events:
            if (e.geofence_id, e.vehicle_id, e.time_ms, e.kind) not in keys:
                self.crossings.append(e)
        for s in states:
            self.stored[(s.vehicle_id, s.geofence_id)] = s

    async def events(self, fleet_id: str, **filters: Any) -> Page[GeofenceEvent]:
        return Page(items=[e for e in self.crossings if e.fleet_id == fleet_id], next_cursor=None)

    async def purge_before(self, fleet_id: str, before_ms: int) -> int:
        return 0


def _id(fence: Geofence) -> str:
    return fence.id


def kinds(events: Sequence[GeofenceEvent]) -> list[str]:
    return [e.kind.value for e in events]


def replace_fence(fence: Geofence, **changes: Any) -> Geofence:
    return dataclasses.replace(fence, **changes)
