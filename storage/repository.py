"""The repository interface both engines implement (MongoDB and SQLite).

One `Store` made of small per-resource repositories, so each caller depends only on the part it
uses (the gateway on `IngestStore`, each API router on its resource's repository) and tests can
put an in-memory fake behind exactly that part.

Conventions shared by every method:
* every fleet-scoped read and write takes ``fleet_id`` first; a record of another fleet is
  `NotFound`, exactly like a record that does not exist;
* listings return `Page`: ``limit`` items at most, ``next_cursor`` opaque, None at the end;
* errors are `storage.errors` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from storage.models import (
    AccessLogEntry,
    ApiKey,
    Device,
    DeviceConnection,
    DeviceModel,
    Event,
    Fitting,
    Fleet,
    Page,
    Position,
    StoreResult,
    Vehicle,
)

# (min_lon, min_lat, max_lon, max_lat), the GeoJSON bbox order
BBox = tuple[float, float, float, float]


class FleetRepo(Protocol):
    async def create(self, name: str) -> Fleet: ...
    async def get(self, fleet_id: str) -> Fleet:
        """Raises NotFound."""
        ...

    async def list(self, *, cursor: str | None = None, limit: int = 100) -> Page[Fleet]: ...

    async def delete(self, fleet_id: str) -> None:
        """Erase the fleet and every record of it (GDPR erasure). Raises NotFound."""
        ...


class KeyRepo(Protocol):
    async def create(self, key: ApiKey) -> ApiKey:
        """Raises Conflict if a key with the same id or hash exists."""
        ...

    async def get_by_hash(self, key_hash: str) -> ApiKey | None: ...
    async def get(self, fleet_id: str | None, key_id: str) -> ApiKey:
        """Raises NotFound (also for a key of another fleet)."""
        ...

    async def list(
        self, fleet_id: str | None, *, cursor: str | None = None, limit: int = 100
    ) -> Page[ApiKey]:
        """Keys of one fleet, or the operator keys when ``fleet_id`` is None."""
        ...

    async def revoke(self, fleet_id: str | None, key_id: str, at_ms: int) -> ApiKey:
        """Set ``revoked_ms`` (idempotent: a revoked key keeps its first time). NotFound."""
        ...


class VehicleRepo(Protocol):
    async def create(self, fleet_id: str, *, vin: str, plate: str, label: str) -> Vehicle:
        """Raises Conflict when the fleet already has a vehicle with this VIN."""
        ...

    async def get(self, fleet_id: str, vehicle_id: str) -> Vehicle: ...
    async def list(
        self,
        fleet_id: str,
        *,
        cursor: str | None = None,
        limit: int = 100,
        vin: str | None = None,
        plate: str | None = None,
        fitted: bool | None = None,
    ) -> Page[Vehicle]:
        """Vehicles in creation order; filters are exact matches."""
        ...

    async def update(
        self,
        fleet_id: str,
        vehicle_id: str,
        *,
        vin: str | None = None,
        plate: str | None = None,
        label: str | None = None,
    ) -> Vehicle:
        """Change the given fields (None = unchanged). NotFound, Conflict (VIN)."""
        ...

    async def delete(self, fleet_id: str, vehicle_id: str, at_ms: int) -> None:
        """Delete the vehicle; a fitted box is unfitted at ``at_ms``. Positions are kept."""
        ...


class DeviceRepo(Protocol):
    async def create(
        self, fleet_id: str, *, imei: str, model: DeviceModel, secret: str
    ) -> Device:
        """Raises Conflict when the IMEI is already provisioned (in any fleet)."""
        ...

    async def get(self, fleet_id: str, device_id: str) -> Device: ...
    async def get_by_imei(self, imei: str) -> Device | None:
        """Across all fleets: the gateway's lookup at LOGIN."""
        ...

    async def list(
        self,
        fleet_id: str,
        *,
        cursor: str | None = None,
        limit: int = 100,
        imei: str | None = None,
        model: DeviceModel | None = None,
        fitted: bool | None = None,
    ) -> Page[Device]: ...

    async def fit(self, fleet_id: str, vehicle_id: str, imei: str, at_ms: int) -> Fitting:
        """Fit the box to the vehicle from ``at_ms``, ending any current fitting of either.

        NotFound when the vehicle or the box is not in this fleet.
        """
        ...

    async def unfit(self, fleet_id: str, vehicle_id: str, at_ms: int) -> Fitting:
        """End the vehicle's current fitting. NotFound when nothing is fitted."""
        ...

    async def fittings(self, device_id: str) -> list[Fitting]:
        """The box's whole fitting history, oldest first."""
        ...

    async def set_connection(self, connection: DeviceConnection) -> None: ...
    async def connection(self, device_id: str) -> DeviceConnection | None: ...


class TelemetryRepo(Protocol):
    async def store(self, positions: Sequence[Position], events: Sequence[Event]) -> StoreResult:
        """Store a batch durably (majority write concern / committed transaction) and return.

        Idempotent: a position already stored for (device_id, time_ms), or an event for
        (device_id, time_ms, code), is counted as a duplicate and left as it is. The last
        position of each vehicle (or of each unfitted box) only moves forward in time, and only
        valid fixes move it: a late or out-of-order record never replaces a newer one.
        """
        ...

    async def last_position(self, fleet_id: str, vehicle_id: str) -> Position | None: ...
    async def last_positions(self, fleet_id: str, *, bbox: BBox | None = None) -> list[Position]:
        """The last position of every vehicle of the fleet (inside ``bbox`` when given)."""
        ...

    async def positions(
        self,
        fleet_id: str,
        vehicle_id: str,
        *,
        from_ms: int,
        to_ms: int,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> Page[Position]:
        """The vehicle's positions with from_ms <= time_ms < to_ms, oldest first."""
        ...

    async def events(
        self,
        fleet_id: str,
        *,
        vehicle_id: str | None = None,
        code: str | None = None,
        from_ms: int = 0,
        to_ms: int = 2**62,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> Page[Event]:
        """Events oldest first, filtered."""
        ...

    async def purge_before(self, fleet_id: str, before_ms: int) -> int:
        """Delete the fleet's positions and events older than ``before_ms`` (retention)."""
        ...


class AccessLogRepo(Protocol):
    async def append(self, entry: AccessLogEntry) -> None: ...
    async def list(
        self,
        fleet_id: str | None,
        *,
        from_ms: int = 0,
        to_ms: int = 2**62,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> Page[AccessLogEntry]: ...


class IngestStore(Protocol):
    """The part of the store the gateway uses."""

    devices: DeviceRepo
    telemetry: TelemetryRepo


class Store(IngestStore, Protocol):
    """A whole storage engine."""

    fleets: FleetRepo
    keys: KeyRepo
    vehicles: VehicleRepo
    access_log: AccessLogRepo

    async def start(self) -> None:
        """Connect and create what the queries need (tables, collections, indexes)."""
        ...

    async def close(self) -> None: ...
    async def health(self) -> dict[str, object]:
        """The engine's state for GET /health; raises StorageUnavailable when it is down."""
        ...
