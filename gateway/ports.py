"""The parts of the store the gateway calls, as small Protocols.

Both engines' `storage.repository.IngestStore` satisfies `GatewayStore`; tests put an in-memory
fake behind exactly these methods and nothing more. Members are read-only properties so that a
store whose ``devices`` is a concrete repository class still matches (a settable Protocol
attribute would have to match its type exactly).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from storage.models import Device, DeviceConnection, Event, Fitting, Position, StoreResult


class TelemetrySink(Protocol):
    async def store(
        self, positions: Sequence[Position], events: Sequence[Event]
    ) -> StoreResult: ...
    async def last_position(self, fleet_id: str, vehicle_id: str) -> Position | None: ...


class DeviceDirectory(Protocol):
    async def get_by_imei(self, imei: str) -> Device | None: ...
    async def fittings(self, device_id: str) -> list[Fitting]: ...
    async def set_connection(self, connection: DeviceConnection) -> None: ...
    async def set_connections(self, connections: list[DeviceConnection]) -> None: ...


class ConnectionLedger(Protocol):
    """The connection rows every gateway process writes: how one process sees the boxes
    another holds (gateway/registry.py, docs/scaling.md)."""

    async def connection(self, device_id: str) -> DeviceConnection | None: ...
    async def touch_connections(
        self, gateway_id: str, device_ids: list[str], seen_ms: int
    ) -> dict[str, str]: ...


class GatewayStore(Protocol):
    @property
    def devices(self) -> DeviceDirectory: ...
    @property
    def telemetry(self) -> TelemetrySink: ...
