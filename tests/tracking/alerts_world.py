"""A fleet on a real SQLite store, with hand-made fixes and batches, for the alert rules, the
parked guard and the theft case tests."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from processing import DeviceBatch, Signal
from storage.models import Alert, AlertKind, DeviceModel, Event, Position
from storage.repository import Store
from storage.sqlite import SqliteStore

T0 = 1_714_564_800_000  # 2024-05-01T12:00:00Z
HOME = (48.8566, 2.3522)  # lat, lon
M_PER_DEG_LAT = 111_320.0


def north_of(lat: float, lon: float, metres: float) -> tuple[float, float]:
    return lat + metres / M_PER_DEG_LAT, lon


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    dlat = (a[0] - b[0]) * M_PER_DEG_LAT
    dlon = (a[1] - b[1]) * M_PER_DEG_LAT * math.cos(math.radians(a[0]))
    return math.hypot(dlat, dlon)


@dataclass
class World:
    store: Store
    fleet_id: str
    vehicle_id: str
    device_id: str
    imei: str

    def fix(self, t: int, at: tuple[float, float] = HOME, **over: Any) -> Position:
        fields: dict[str, Any] = {
            "fleet_id": self.fleet_id,
            "device_id": self.device_id,
            "vehicle_id": self.vehicle_id,
            "time_ms": t,
            "received_ms": t + 500,
            "lat": at[0],
            "lon": at[1],
            "altitude_m": 35,
            "speed_kmh": 0.0,
            "heading_deg": 0.0,
            "satellites": 9,
            "hdop": 0.9,
            "fix_valid": True,
            "ignition": False,
            "doors_locked": True,
            "engine_start_inhibited": False,
            "external_power": True,
            "odometer_m": 1000,
            "external_power_mv": 12_500,
            "battery_mv": 4_100,
            "gsm_signal": 20,
            "warnings": 0,
            "driver_badge": None,
        }
        fields.update(over)
        return Position(**fields)

    def event(self, t: int, code: str, **over: Any) -> Event:
        p = self.fix(t, **over)
        return Event(self.fleet_id, self.device_id, self.vehicle_id, t, t + 500, code, 0, p)

    def batch(
        self,
        positions: Sequence[Position] = (),
        events: Sequence[Event] = (),
        *,
        live: bool = True,
        signals: Sequence[Signal] = (),
    ) -> DeviceBatch:
        valid = [p for p in positions if p.fix_valid]
        newest = max(valid, key=lambda p: p.time_ms) if valid and live else None
        return DeviceBatch(
            self.fleet_id,
            self.device_id,
            tuple(positions),
            tuple(events),
            newest,
            tuple(signals),
        )

    async def store_records(
        self, positions: Sequence[Position] = (), events: Sequence[Event] = ()
    ) -> None:
        await self.store.telemetry.store(positions, events)

    async def alerts(self, kind: AlertKind | None = None) -> list[Alert]:
        kinds = None if kind is None else [kind]
        return (await self.store.alerts.list(self.fleet_id, kinds=kinds)).items


async def make_world(store: Store, name: str = "alpha", imei: str = "490154203237518") -> World:
    fleet = await store.fleets.create(name)
    vehicle = await store.vehicles.create(fleet.id, vin=f"VIN{name}", plate="AB-1", label="van")
    device = await store.devices.create(fleet.id, imei=imei, model=DeviceModel.GP8000, secret="s")
    await store.devices.fit(fleet.id, vehicle.id, imei, 0)
    return World(store, fleet.id, vehicle.id, device.id, imei)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = SqliteStore(tmp_path / "gp8.sqlite3")
    await s.start()
    yield s
    await s.close()


@pytest.fixture
async def world(store: Store) -> World:
    return await make_world(store)
