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

import builtins
from collections.abc import Collection, Sequence
from typing import Protocol

from storage.models import (
    AccessLogEntry,
    Alert,
    AlertKind,
    ApiKey,
    AuditEntry,
    CommandChanges,
    CommandKind,
    CommandPolicy,
    CommandRecord,
    CommandState,
    Device,
    DeviceConnection,
    DeviceModel,
    Event,
    Fitting,
    Fleet,
    KillSwitch,
    Page,
    Position,
    StoreResult,
    Vehicle,
    VehicleLockState,
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
    async def create(self, fleet_id: str, *, imei: str, model: DeviceModel, secret: str) -> Device:
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

    # builtins.list: inside this class body "list" names the method above.
    async def fittings(self, device_id: str) -> builtins.list[Fitting]:
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
    # Remote commands (docs/commands.md).
    commands: CommandRepo
    audit: AuditRepo
    policies: PolicyRepo
    alerts: AlertRepo

    async def start(self) -> None:
        """Connect and create what the queries need (tables, collections, indexes)."""
        ...

    async def close(self) -> None: ...
    async def health(self) -> dict[str, object]:
        """The engine's state for GET /health; raises StorageUnavailable when it is down."""
        ...


# --- remote commands (docs/commands.md) -----------------------------------------------------


class CommandRepo(Protocol):
    """Commands and what their answers say about the vehicle.

    Status changes are compare-and-set (`transition`), so two gateways, or a gateway and the
    API, can never both deliver, answer or cancel the same command.
    """

    async def create(
        self, command: CommandRecord, requested: AuditEntry
    ) -> tuple[CommandRecord, bool]:
        """Store ``command`` with the next command number of its box (``command.seq`` is
        ignored) together with the audit entry of the request; returns it and True.

        When the fleet already used ``command.idempotency_key``: the existing command and
        False, nothing stored. Conflict when a request with that key is being stored right now.
        """
        ...

    async def get(self, fleet_id: str, command_id: str) -> CommandRecord:
        """Raises NotFound (also for another fleet's command)."""
        ...

    async def by_seq(self, imei: str, seq: int) -> CommandRecord | None:
        """The command numbered ``seq`` for the box ``imei`` (the gateway's correlation)."""
        ...

    async def by_idempotency_key(self, fleet_id: str, key: str) -> CommandRecord | None: ...

    async def list(
        self,
        fleet_id: str,
        *,
        vehicle_id: str | None = None,
        status: CommandState | None = None,
        kind: CommandKind | None = None,
        from_ms: int = 0,
        to_ms: int = 2**62,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[CommandRecord]:
        """Commands created in from_ms <= created_ms < to_ms, oldest first, filtered."""
        ...

    async def count_since(
        self, fleet_id: str, kinds: Collection[CommandKind], since_ms: int
    ) -> int:
        """Commands of these kinds the fleet created at or after ``since_ms`` (hourly caps)."""
        ...

    async def pending_for_box(self, imei: str, now_ms: int) -> builtins.list[CommandRecord]:
        """The box's queued and sent commands that have not expired, in command-number order."""
        ...

    async def in_status(
        self,
        status: CommandState,
        *,
        updated_from_ms: int = 0,
        updated_to_ms: int = 2**62,
        limit: int = 1000,
    ) -> builtins.list[CommandRecord]:
        """Commands in ``status`` whose last transition is in [from, to), oldest first."""
        ...

    async def expiring(self, now_ms: int, *, limit: int = 1000) -> builtins.list[CommandRecord]:
        """Live commands (pending approval, queued, sent) with expires_ms <= now_ms."""
        ...

    async def transition(
        self,
        command_id: str,
        *,
        expected: Collection[CommandState],
        status: CommandState,
        at_ms: int,
        changes: CommandChanges | None = None,
        attempts_delta: int = 0,
        audit: AuditEntry | None = None,
        vehicle_state: VehicleLockState | None = None,
    ) -> CommandRecord | None:
        """Move the command to ``status`` (updated_ms = at_ms, ``changes`` set, attempts
        increased) only if its status is in ``expected``, and append ``audit`` with it; with
        ``vehicle_state``, store it too (as `set_vehicle_state`), so a reader who sees the
        command acknowledged also sees its effect.

        Returns the updated command, or None when it was not in an expected state or does not
        exist (then neither audit nor state is written, except that an engine without
        transactions may have stored the state, which is the box's truth anyway).
        """
        ...

    async def vehicle_state(self, fleet_id: str, vehicle_id: str) -> VehicleLockState | None: ...

    async def set_vehicle_state(self, state: VehicleLockState) -> None:
        """Keep ``state`` unless a newer one (greater updated_ms) is stored already."""
        ...


class AuditRepo(Protocol):
    async def append(self, entry: AuditEntry) -> None: ...
    async def list(
        self,
        fleet_id: str | None,
        *,
        vehicle_id: str | None = None,
        command_id: str | None = None,
        from_ms: int = 0,
        to_ms: int = 2**62,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> Page[AuditEntry]:
        """A fleet's entries (or the platform's when ``fleet_id`` is None), oldest first."""
        ...


class PolicyRepo(Protocol):
    async def get(self, fleet_id: str) -> CommandPolicy:
        """The fleet's policy; the default (everything off) when none was set."""
        ...

    async def put(self, policy: CommandPolicy) -> CommandPolicy: ...
    async def kill_switch(self) -> KillSwitch: ...
    async def set_kill_switch(self, switch: KillSwitch) -> KillSwitch: ...


class AlertRepo(Protocol):
    async def raise_alert(self, alert: Alert) -> Alert: ...
    async def get(self, fleet_id: str, alert_id: str) -> Alert:
        """Raises NotFound (also for another fleet's alert)."""
        ...

    async def list(
        self,
        fleet_id: str,
        *,
        vehicle_id: str | None = None,
        open_only: bool = False,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[Alert]:
        """Alerts in the order they were raised."""
        ...

    async def open_alerts(
        self,
        *,
        device_id: str | None = None,
        vehicle_id: str | None = None,
        kind: AlertKind | None = None,
    ) -> builtins.list[Alert]:
        """Alerts not cleared yet about this box or this vehicle (either matches)."""
        ...

    async def clear(self, fleet_id: str, alert_id: str, *, by: str, at_ms: int) -> Alert:
        """Clear the alert (idempotent: a cleared alert keeps its first clearing). NotFound."""
        ...
