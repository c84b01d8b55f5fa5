"""In-memory fakes behind gateway.ports (DeviceDirectory, TelemetrySink): only what the gateway
calls, with switches to make storage slow, unavailable or broken."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from storage.errors import StorageUnavailable
from storage.models import (
    Device,
    DeviceConnection,
    DeviceModel,
    DeviceStatus,
    Event,
    Fitting,
    Position,
    StoreResult,
    new_id,
    now_ms,
)


class FakeDevices:
    def __init__(self) -> None:
        self.by_imei: dict[str, Device] = {}
        self.history: dict[str, list[Fitting]] = {}
        self.connections: dict[str, DeviceConnection] = {}
        self.connection_log: list[DeviceConnection] = []
        self.batches: list[int] = []  # states per set_connections call
        self.unavailable = False

    def add(
        self,
        imei: str,
        secret: str,
        *,
        fleet_id: str = "flt_a",
        model: DeviceModel = DeviceModel.GP8000,
        status: DeviceStatus = DeviceStatus.ACTIVE,
    ) -> Device:
        device = Device(
            id=new_id("dev"),
            fleet_id=fleet_id,
            imei=imei,
            model=model,
            secret=secret,
            created_ms=now_ms(),
            status=status,
        )
        self.by_imei[imei] = device
        return device

    def fit(self, device: Device, vehicle_id: str, from_ms: int, to_ms: int | None = None) -> None:
        self.history.setdefault(device.id, []).append(
            Fitting(device.fleet_id, device.id, vehicle_id, from_ms, to_ms)
        )

    def _check(self) -> None:
        if self.unavailable:
            raise StorageUnavailable("fake devices down")

    async def get_by_imei(self, imei: str) -> Device | None:
        self._check()
        return self.by_imei.get(imei)

    async def fittings(self, device_id: str) -> list[Fitting]:
        self._check()
        return list(self.history.get(device_id, []))

    async def set_connection(self, connection: DeviceConnection) -> None:
        self._check()
        self.connections[connection.device_id] = connection
        self.connection_log.append(connection)

    async def set_connections(self, connections: list[DeviceConnection]) -> None:
        self._check()
        self.batches.append(len(connections))
        for connection in connections:
            stored = self.connections.get(connection.device_id)
            if stored is None or connection.version >= stored.version:
                self.connections[connection.device_id] = connection
            self.connection_log.append(connection)


class FakeTelemetry:
    """Idempotent like the real engines: (device_id, time_ms) for positions,
    (device_id, time_ms, code) for events; keeps the last valid position per vehicle/box."""

    def __init__(self) -> None:
        self.positions: dict[tuple[str, int], Position] = {}
        self.events: dict[tuple[str, int, str], Event] = {}
        self.last: dict[str, Position] = {}
        self.calls: list[tuple[int, int]] = []  # (positions, events) per successful store
        self.unavailable = False
        self.poison_device: str | None = None  # a batch with this device raises ValueError
        self.gate: asyncio.Event | None = None  # when set, store waits for it to open
        self.entered = asyncio.Event()  # set when a store call is waiting at the gate

    async def store(self, positions: Sequence[Position], events: Sequence[Event]) -> StoreResult:
        if self.gate is not None:
            self.entered.set()
            await self.gate.wait()
        if self.unavailable:
            raise StorageUnavailable("fake telemetry down")
        if self.poison_device is not None and any(
            p.device_id == self.poison_device for p in positions
        ):
            raise ValueError("poison record")
        await asyncio.sleep(0)  # a real store yields to the loop while it commits
        inserted = duplicate = 0
        resent: set[tuple[str, int]] = set()
        resent_events: set[tuple[str, int, str]] = set()
        for p in positions:
            key = (p.device_id, p.time_ms)
            if key in self.positions:
                duplicate += 1
                resent.add(key)
                continue
            self.positions[key] = p
            inserted += 1
            if p.fix_valid:
                owner = p.vehicle_id or p.device_id
                last = self.last.get(owner)
                if last is None or p.time_ms > last.time_ms:
                    self.last[owner] = p
        ev_inserted = ev_duplicate = 0
        for e in events:
            ekey = (e.device_id, e.time_ms, e.code)
            if ekey in self.events:
                ev_duplicate += 1
                resent_events.add(ekey)
            else:
                self.events[ekey] = e
                ev_inserted += 1
        self.calls.append((len(positions), len(events)))
        return StoreResult(
            inserted,
            duplicate,
            ev_inserted,
            ev_duplicate,
            frozenset(resent),
            frozenset(resent_events),
        )

    async def last_position(self, fleet_id: str, vehicle_id: str) -> Position | None:
        last = self.last.get(vehicle_id)
        return last if last is not None and last.fleet_id == fleet_id else None


@dataclass
class FakeStore:
    devices: FakeDevices = field(default_factory=FakeDevices)
    telemetry: FakeTelemetry = field(default_factory=FakeTelemetry)
