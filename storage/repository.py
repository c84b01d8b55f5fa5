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
from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from storage.counters import CounterWindow, Increment
from storage.migrations import SchemaState
from storage.models import (
    AccessLogEntry,
    Alert,
    AlertKind,
    AlertRule,
    AlertState,
    ApiKey,
    AuditEntry,
    CommandKind,
    CommandPolicy,
    CommandRecord,
    CommandState,
    CommandStep,
    DeliveryStatus,
    Device,
    DeviceConnection,
    DeviceModel,
    DeviceProtocol,
    Event,
    Fitting,
    Fleet,
    Geofence,
    GeofenceEvent,
    GeofenceState,
    GuardState,
    KillSwitch,
    LegalHold,
    Page,
    Position,
    StoreResult,
    StreamKind,
    StreamPage,
    TheftCase,
    TheftCaseStatus,
    TrackingPolicy,
    Vehicle,
    VehicleLockState,
    WebhookDelivery,
    WebhookEndpoint,
)
from storage.privacy import Driver, FleetPrivacy, ScheduleChange
from storage.retention import DataKind, ExportJob, FleetRetention, Offboarding, PurgeRun

# (min_lon, min_lat, max_lon, max_lat), the GeoJSON bbox order
BBox = tuple[float, float, float, float]


class MapEntry(NamedTuple):
    """A vehicle on the fleet map: its last position and what names it (`fleet_map`)."""

    vehicle_id: str
    plate: str
    label: str
    position: Position


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

    async def touch(self, key_id: str, at_ms: int, *, every_ms: int) -> None:
        """Set the key's last use to ``at_ms`` unless it was set less than ``every_ms``
        before (a conditional write: of racing processes, one wins, the others change
        nothing)."""
        ...

    async def revoke(self, fleet_id: str | None, key_id: str, at_ms: int) -> ApiKey:
        """Set ``revoked_ms`` (idempotent: a revoked key keeps its first time). NotFound."""
        ...


class VehicleRepo(Protocol):
    """Writes take ``log``, the request's access-log entry, appended (the next link of its
    fleet's chain) in the write's own transaction: both are stored or neither, in one commit
    (MongoDB: one transaction where the deployment has them, else the write, then the entry)."""

    async def create(
        self,
        fleet_id: str,
        *,
        vin: str,
        plate: str,
        label: str,
        log: AccessLogEntry | None = None,
    ) -> Vehicle:
        """Raises Conflict when the fleet already has a vehicle with this VIN. ``log``'s
        ``resource_id`` is set to the new vehicle's id."""
        ...

    async def get(self, fleet_id: str, vehicle_id: str) -> Vehicle: ...
    async def get_many(self, fleet_id: str, vehicle_ids: Collection[str]) -> dict[str, Vehicle]:
        """The fleet's vehicles among ``vehicle_ids``, by id, in one query; ids of no vehicle
        of the fleet (deleted, another fleet's) are left out."""
        ...

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
        log: AccessLogEntry | None = None,
    ) -> Vehicle:
        """Change the given fields (None = unchanged). NotFound, Conflict (VIN)."""
        ...

    async def delete(
        self, fleet_id: str, vehicle_id: str, at_ms: int, *, log: AccessLogEntry | None = None
    ) -> None:
        """Delete the vehicle; a fitted box is unfitted at ``at_ms``. Positions are kept."""
        ...


class DeviceRepo(Protocol):
    """``create``, ``fit`` and ``unfit`` take ``log``, the request's access-log entry, stored
    with the write as VehicleRepo's writes store theirs."""

    async def create(
        self,
        fleet_id: str,
        *,
        imei: str,
        model: DeviceModel,
        secret: str,
        protocol: DeviceProtocol = DeviceProtocol.GP8,
        log: AccessLogEntry | None = None,
    ) -> Device:
        """Raises Conflict when the IMEI is already provisioned (in any fleet). ``log``'s
        ``resource_id`` is set to the new box's id."""
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
        protocol: DeviceProtocol | None = None,
    ) -> Page[Device]: ...

    async def fit(
        self,
        fleet_id: str,
        vehicle_id: str,
        imei: str,
        at_ms: int,
        *,
        log: AccessLogEntry | None = None,
    ) -> Fitting:
        """Fit the box to the vehicle from ``at_ms``, ending any current fitting of either.
        ``log``'s ``detail`` is set to the box's id.

        NotFound when the vehicle or the box is not in this fleet.
        """
        ...

    async def unfit(
        self, fleet_id: str, vehicle_id: str, at_ms: int, *, log: AccessLogEntry | None = None
    ) -> Fitting:
        """End the vehicle's current fitting. NotFound when nothing is fitted. ``log``'s
        ``detail`` is set to the box's id."""
        ...

    # builtins.list: inside this class body "list" names the method above.
    async def fittings(self, device_id: str) -> builtins.list[Fitting]:
        """The box's whole fitting history, oldest first."""
        ...

    async def set_connection(self, connection: DeviceConnection) -> None:
        """Store the box's state unless a newer observation is stored (``version`` greater
        than this one's): the newest observation wins whichever process writes last."""
        ...

    async def set_connections(self, connections: builtins.list[DeviceConnection]) -> None:
        """`set_connection` for many boxes in one write (the gateway's batched state writes):
        each state is stored unless a newer one of its box is, stored or in the batch."""
        ...

    async def connection(self, device_id: str) -> DeviceConnection | None: ...
    async def touch_connections(
        self, gateway_id: str, device_ids: builtins.list[str], seen_ms: int
    ) -> dict[str, str]:
        """Set ``seen_ms`` on the rows of these boxes that ``gateway_id`` still holds online
        (one write for many boxes). Returns, by device id, the other gateway now holding a
        box online (a newer session there took the row over)."""
        ...


class ImportRepo(Protocol):
    """Bulk onboarding (POST /v1/imports, ``gp8 admin import``): a file's vehicles, boxes and
    fittings stored together."""

    async def taken(
        self, fleet_id: str, vins: Collection[str], imeis: Collection[str]
    ) -> tuple[set[str], set[str]]:
        """Of ``vins``, those the fleet has already; of ``imeis``, those provisioned in any
        fleet."""
        ...

    async def provision(
        self,
        fleet_id: str,
        vehicles: Sequence[Vehicle],
        devices: Sequence[Device],
        fittings: Sequence[Fitting],
    ) -> None:
        """Store them all or none (plain secrets, sealed here; each vehicle's ``device_id`` and
        box's ``vehicle_id`` as the fittings say). Conflict when a VIN or IMEI was taken since
        `taken` said otherwise; NotFound for an unknown fleet."""
        ...


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

    async def fleet_map(self, fleet_id: str, *, bbox: BBox | None = None) -> list[MapEntry]:
        """`last_positions` of the fleet's vehicles that exist (a deleted vehicle's is left
        out), each with the vehicle's plate and label, by vehicle id: the map in one query."""
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
        newest_first: bool = False,
    ) -> Page[Position]:
        """The vehicle's positions with from_ms <= time_ms < to_ms, oldest first
        (``newest_first``: the reverse; its cursors are not the other order's)."""
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
        newest_first: bool = False,
    ) -> Page[Event]:
        """Events oldest first (``newest_first``: the reverse), filtered."""
        ...

    async def purge_before(self, fleet_id: str, before_ms: int) -> int:
        """Delete the fleet's positions and events older than ``before_ms`` (retention)."""
        ...


class AccessLogRepo(Protocol):
    async def append(self, entry: AccessLogEntry) -> None:
        """Append ``entry`` as the next link of its fleet's hash chain (its ``seq``,
        ``prev_hash`` and ``hash`` are filled here; storage/audit_chain.py)."""
        ...

    async def chain(
        self, fleet_id: str | None, *, after_seq: int = 0, limit: int = 1000
    ) -> builtins.list[AccessLogEntry]:
        """The fleet's chain (None: the platform's) in ``seq`` order, after ``after_seq``."""
        ...

    async def chain_fleets(self) -> builtins.list[str | None]:
        """The fleets (None: the platform) that have a chain."""
        ...

    async def list(
        self,
        fleet_id: str | None,
        *,
        from_ms: int = 0,
        to_ms: int = 2**62,
        cursor: str | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> Page[AccessLogEntry]:
        """Entries with from_ms <= time_ms < to_ms, oldest first (``newest_first``: the
        reverse)."""
        ...


class IngestStore(Protocol):
    """The part of the store the gateway uses."""

    devices: DeviceRepo
    telemetry: TelemetryRepo


class StreamRepo(Protocol):
    """Every change of a fleet's data in storage order (storage/stream.py). The repositories
    append what they store themselves; `append` is for resources stored elsewhere."""

    async def append(self, items: Sequence[Any]) -> None: ...
    async def after(
        self,
        fleet_id: str,
        cursor: int,
        *,
        kinds: Collection[StreamKind] | None = None,
        vehicle_id: str | None = None,
        limit: int = 1000,
    ) -> StreamPage:
        """Entries after ``cursor`` in cursor order, filtered; CursorExpired when entries after
        ``cursor`` were already pruned."""
        ...

    async def head(self, fleet_id: str) -> int:
        """The fleet's last cursor (0 before its first entry): where "from now" starts."""
        ...

    async def horizon(self, fleet_id: str) -> int:
        """The last cursor pruned: resuming needs a cursor at least this."""
        ...

    async def prune(self, before_ms: int) -> int:
        """Drop entries stored before ``before_ms``; how many."""
        ...


class CounterRepo(Protocol):
    """Sliding-window counters shared by every process (storage/counters.py): the per-key API
    rate limit and the hourly engine-start cap count here (docs/scaling.md)."""

    async def take(
        self, name: str, *, fleet_id: str | None, limit: int, window: CounterWindow, now_ms: int
    ) -> int | None:
        """Count one against ``name`` if fewer than ``limit`` are counted in the window
        ending at ``now_ms``: the count with this one, or None when refused (nothing is
        counted). Atomic across processes."""
        ...

    async def add(
        self, increments: Sequence[Increment], *, window: CounterWindow, now_ms: int
    ) -> dict[str, int]:
        """Add to several counters at once and return each one's total over the window
        (with the increments). Each counter's addition is atomic; the set is not."""
        ...


class Store(IngestStore, Protocol):
    """A whole storage engine."""

    fleets: FleetRepo
    keys: KeyRepo
    vehicles: VehicleRepo
    imports: ImportRepo
    access_log: AccessLogRepo
    # Remote commands (docs/commands.md).
    commands: CommandRepo
    audit: AuditRepo
    policies: PolicyRepo
    alerts: AlertRepo
    # The live stream's log (storage/stream.py).
    stream: StreamRepo
    # Geofences, each vehicle's state per fence, the crossings (docs/alerts.md).
    geofences: GeofenceRepo
    # Webhooks: endpoints, their stream cursors, deliveries (docs/alerts.md).
    webhooks: WebhookRepo
    # Alert rules and badge policies, parked guards, theft cases and legal holds
    # (docs/alerts.md "Alert rules", docs/theft.md).
    alert_rules: AlertRuleRepo
    guards: GuardRepo
    theft_cases: TheftRepo
    # Retention, exports, erasure and offboarding (storage/retention.py, docs/gdpr.md).
    retention: RetentionRepo
    exports: ExportRepo
    erasure: ErasureRepo
    # Privacy mode and the drivers' names (storage/privacy.py, docs/privacy.md).
    privacy: PrivacyRepo
    drivers: DriverRepo
    # Shared counters: rate limits and caps that hold across processes (storage/counters.py).
    counters: CounterRepo
    # What start() found and did to the schema (storage/migrations.py); None before it.
    schema: SchemaState | None

    async def start(self) -> None:
        """Connect and check the schema version: a fresh database is created at the current
        one, an older one is refused (SchemaTooOld) unless the store was made to migrate, a
        newer one always (SchemaTooNew); storage/migrations.py."""
        ...

    async def close(self) -> None: ...
    async def rotate_secrets(self) -> dict[str, int]:
        """Seal every stored secret again with the current key (storage/secrets.py); the
        count re-sealed by table. UnknownSecretsKey when one is under a key not configured."""
        ...

    async def health(self) -> dict[str, object]:
        """The engine's state for GET /health; raises StorageUnavailable when it is down."""
        ...


# --- remote commands (docs/commands.md) -----------------------------------------------------


class CommandRepo(Protocol):
    """Commands and what their answers say about the vehicle.

    Status changes are compare-and-set (`transitions`), so two gateways, or a gateway and the
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

    async def create_many(
        self, items: Sequence[tuple[CommandRecord, AuditEntry]]
    ) -> builtins.list[tuple[CommandRecord, bool]]:
        """`create` for each (command, audit entry) pair, answered in order: one transaction
        for them all where the engine has it (a bulk order, a group of API requests), so
        many commands cost one commit instead of one each."""
        ...

    async def get(self, fleet_id: str, command_id: str) -> CommandRecord:
        """Raises NotFound (also for another fleet's command)."""
        ...

    async def by_seq(self, imei: str, seq: int) -> CommandRecord | None:
        """The command numbered ``seq`` for the box ``imei`` (the gateway's correlation)."""
        ...

    async def by_idempotency_key(self, fleet_id: str, key: str) -> CommandRecord | None: ...
    async def by_idempotency_keys(
        self, fleet_id: str, keys: Collection[str]
    ) -> dict[str, CommandRecord]:
        """The fleet's commands stored under any of ``keys``, by key (a bulk order's replay
        check in a few queries instead of one per vehicle)."""
        ...

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
        newest_first: bool = False,
    ) -> Page[CommandRecord]:
        """Commands created in from_ms <= created_ms < to_ms, oldest first (``newest_first``:
        the reverse), filtered."""
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

    async def transitions(
        self, command_id: str, steps: Sequence[CommandStep]
    ) -> builtins.list[CommandRecord]:
        """Apply each step in order, stopping at the first whose compare-and-set fails; one
        transaction where the engine has it (a box's receipt and its answer, read together).

        A step moves the command to its ``status`` (updated_ms = ``at_ms``, ``changes`` set,
        attempts increased by ``attempts_delta``) only if its status is in ``expected``, and
        appends the step's ``audit`` with it; with ``vehicle_state``, stores that too (as
        `set_vehicle_state`), so a reader who sees the command acknowledged also sees its
        effect. A step that finds the command in another state, or no command, stores neither
        audit nor state (except that an engine without transactions may have stored the
        state, which is the box's truth anyway), and the steps after it are not applied.

        Returns the command after each step that was stored."""
        ...

    async def create_then(
        self, command: CommandRecord, requested: AuditEntry, steps: Sequence[CommandStep]
    ) -> tuple[builtins.list[CommandRecord], bool]:
        """`create`, then `transitions` of the new command, in one transaction where the engine
        has it (a command for a box connected here: stored queued and sent in one commit).
        Returns the command as created and after each step stored, and True; a replay of an
        idempotency key: [the existing command] and False, no step applied."""
        ...

    async def vehicle_state(self, fleet_id: str, vehicle_id: str) -> VehicleLockState | None: ...

    async def set_vehicle_state(self, state: VehicleLockState) -> None:
        """Keep ``state`` unless a newer one (greater updated_ms) is stored already."""
        ...


class AuditRepo(Protocol):
    async def append(self, entry: AuditEntry) -> None:
        """Append ``entry`` to its fleet's hash chain (as `AccessLogRepo.append`)."""
        ...

    async def chain(
        self, fleet_id: str | None, *, after_seq: int = 0, limit: int = 1000
    ) -> builtins.list[AuditEntry]:
        """As `AccessLogRepo.chain`."""
        ...

    async def chain_fleets(self) -> builtins.list[str | None]:
        """As `AccessLogRepo.chain_fleets`."""
        ...

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
        newest_first: bool = False,
    ) -> Page[AuditEntry]:
        """A fleet's entries (or the platform's when ``fleet_id`` is None), oldest first
        (``newest_first``: the reverse)."""
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
        kinds: Collection[AlertKind] | None = None,
        state: AlertState | None = None,
        from_ms: int = 0,
        to_ms: int = 2**62,
        newest_first: bool = False,
    ) -> Page[Alert]:
        """Alerts in the order they were raised (``newest_first``: the reverse), filtered:
        ``open_only`` is "not closed"; ``state`` as `storage.models.alert_state`; from/to on
        ``raised_ms``."""
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

    # Incidents of the alert rules and the parked guard (docs/alerts.md, "Alerts").
    async def trigger(self, alert: Alert) -> tuple[Alert, bool]:
        """One alert per incident: if an alert of ``alert``'s fleet, subject (its vehicle,
        else its box), kind and ref is open, it is updated (``count`` added; last_ms, lat,
        lon, speed_kmh, detail, severity, rule_id and updated_ms taken from ``alert``);
        else ``alert`` is stored. Returns the stored alert and whether it is new; either way
        it goes on the live stream."""
        ...

    async def close_incident(
        self,
        fleet_id: str,
        *,
        vehicle_id: str | None,
        device_id: str | None,
        kind: AlertKind,
        ref: str | None,
        at_ms: int,
        reason: str,
    ) -> Alert | None:
        """Close the incident's open alert (cleared_by "system", ``close_reason``); None when
        none is open."""
        ...

    async def acknowledge(
        self, fleet_id: str, alert_id: str, *, by: str, at_ms: int, note: str
    ) -> Alert:
        """Record who acknowledged the alert, when, with what note (the first
        acknowledgement stays). NotFound."""
        ...

    async def link_theft_case(self, fleet_id: str, alert_id: str, case_id: str) -> Alert:
        """Note the theft case opened from the alert. NotFound."""
        ...


# --- geofences (docs/alerts.md, "Geofences") ------------------------------------------------


class GeofenceRepo(Protocol):
    """A fleet's geofences, each vehicle's hysteresis state per fence, and the crossings.

    The API manages fences; the geofence handler (tracking/geofences.py) reads them, loads a
    vehicle's states once, and saves what changed together with the crossings it committed.
    """

    async def create(self, fence: Geofence) -> Geofence:
        """Store a new fence. NotFound when the fleet does not exist."""
        ...

    async def get(self, fleet_id: str, geofence_id: str) -> Geofence:
        """Raises NotFound (also for another fleet's fence)."""
        ...

    async def list(
        self, fleet_id: str, *, cursor: str | None = None, limit: int = 100
    ) -> Page[Geofence]:
        """Fences in creation order."""
        ...

    async def count(self, fleet_id: str) -> int: ...

    async def replace(self, fence: Geofence) -> Geofence:
        """Store ``fence`` over the fence with its id in its fleet (NotFound when there is
        none). When it lists ``vehicle_ids``, the states of the vehicles it no longer applies to
        are dropped; the other states stay (the next fixes settle them against the new shape).
        """
        ...

    async def delete(self, fleet_id: str, geofence_id: str) -> None:
        """Delete the fence and its states; its crossings stay (history). NotFound."""
        ...

    async def states(self, fleet_id: str, vehicle_id: str) -> builtins.list[GeofenceState]:
        """The vehicle's stored states, one per fence it came near."""
        ...

    async def save(
        self, states: Sequence[GeofenceState], events: Sequence[GeofenceEvent] = ()
    ) -> None:
        """Upsert ``states`` (by vehicle and fence) and add ``events``: all or nothing where
        the engine has transactions, else events first, so that a retry after a failure half
        way derives the crossing again and finds its event stored. An event already stored
        (same fence, vehicle, time and kind) is left as it is: saving twice keeps one copy."""
        ...

    async def events(
        self,
        fleet_id: str,
        *,
        geofence_id: str | None = None,
        vehicle_id: str | None = None,
        from_ms: int = 0,
        to_ms: int = 2**62,
        cursor: str | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> Page[GeofenceEvent]:
        """Crossings with from_ms <= time_ms < to_ms, oldest first (``newest_first``: the
        reverse), filtered."""
        ...

    async def purge_before(self, fleet_id: str, before_ms: int) -> int:
        """Delete the fleet's crossings older than ``before_ms`` (retention); how many."""
        ...


# --- webhooks (docs/alerts.md, "Webhooks") ---------------------------------------------------


class WebhookRepo(Protocol):
    """A fleet's webhook endpoints, the stream cursor each has reached, and its deliveries.

    The API manages endpoints; the delivery service (api/webhooks/) follows each enabled
    endpoint's fleet stream from its cursor, queues deliveries and moves the cursor in one step
    (`enqueue`), then claims due deliveries (`claim`, compare-and-set) and records each
    attempt. Every step is safe with several gp8 processes running the service at once.
    """

    async def create(self, endpoint: WebhookEndpoint) -> WebhookEndpoint:
        """Store a new endpoint. NotFound when the fleet does not exist."""
        ...

    async def get(self, fleet_id: str, webhook_id: str) -> WebhookEndpoint:
        """Raises NotFound (also for another fleet's webhook)."""
        ...

    async def list(
        self, fleet_id: str, *, cursor: str | None = None, limit: int = 100
    ) -> Page[WebhookEndpoint]:
        """Endpoints in creation order."""
        ...

    async def update(
        self,
        fleet_id: str,
        webhook_id: str,
        *,
        at_ms: int,
        url: str | None = None,
        kinds: Sequence[StreamKind] | None = None,
        enabled: bool | None = None,
        disabled_reason: str | None = None,
        cursor: int | None = None,
    ) -> WebhookEndpoint:
        """Change the given fields (None = unchanged; ``disabled_reason`` is stored with
        ``enabled`` False and cleared with True). NotFound."""
        ...

    async def delete(self, fleet_id: str, webhook_id: str) -> None:
        """Delete the endpoint and its deliveries. NotFound."""
        ...

    async def active(self, *, limit: int = 10_000) -> builtins.list[WebhookEndpoint]:
        """Enabled endpoints of every fleet, in id order: the delivery service's work list."""
        ...

    async def enqueue(
        self,
        webhook_id: str,
        *,
        after: int,
        cursor: int,
        deliveries: Sequence[WebhookDelivery],
    ) -> bool:
        """Add ``deliveries`` and move the endpoint's cursor from ``after`` to ``cursor``, if
        its cursor is still ``after`` and it is enabled; False otherwise (another process got
        there first, or the endpoint was disabled or deleted). A delivery for a (webhook,
        cursor) already queued is left as it is. After False, no delivery is kept for an
        endpoint disabled or gone; for one whose cursor another process moved, an engine
        without transactions may keep them: the same entries that process queued too."""
        ...

    async def skip_gap(self, webhook_id: str, *, after: int, cursor: int, at_ms: int) -> bool:
        """Move the cursor from ``after`` to ``cursor`` past pruned entries, recording the gap
        (`StreamGap`) on the endpoint; False when its cursor is no longer ``after``."""
        ...

    async def deliveries(
        self,
        fleet_id: str,
        webhook_id: str,
        *,
        status: DeliveryStatus | None = None,
        cursor: str | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> Page[WebhookDelivery]:
        """The endpoint's deliveries, newest first by stream cursor (``newest_first=False``:
        oldest first), filtered."""
        ...

    async def due(
        self, webhook_id: str, now_ms: int, *, limit: int = 100
    ) -> builtins.list[WebhookDelivery]:
        """Pending deliveries with next_attempt_ms <= now_ms, the longest due first."""
        ...

    async def claim(self, delivery_id: str, *, due_ms: int, until_ms: int) -> bool:
        """Take a due delivery for one attempt: set next_attempt_ms from ``due_ms`` (what
        `due` returned) to ``until_ms``, only if it is unchanged and still pending. The lease
        makes it due again should the attempt never be recorded (its process died)."""
        ...

    async def record(
        self,
        delivery_id: str,
        *,
        at_ms: int,
        status: DeliveryStatus,
        next_attempt_ms: int | None,
        status_code: int | None,
        error: str | None,
    ) -> WebhookDelivery | None:
        """Count one attempt made at ``at_ms`` and its outcome, if the delivery is still
        pending (a final one never changes); None otherwise."""
        ...

    async def prune(self, before_ms: int) -> int:
        """Delete final deliveries last updated before ``before_ms`` (retention); how many."""
        ...


# --- alert rules, the parked guard, theft cases (docs/alerts.md, docs/theft.md) ------------


class AlertRuleRepo(Protocol):
    """A fleet's alert rules and its badge policy."""

    async def list(self, fleet_id: str) -> builtins.list[AlertRule]:
        """All the fleet's rules, in creation order (a fleet has a handful)."""
        ...

    async def get(self, fleet_id: str, rule_id: str) -> AlertRule:
        """Raises NotFound (also for another fleet's rule)."""
        ...

    async def create(self, rule: AlertRule) -> AlertRule: ...
    async def replace(self, rule: AlertRule) -> AlertRule:
        """Store ``rule`` over the rule with its id in its fleet. NotFound."""
        ...

    async def delete(self, fleet_id: str, rule_id: str) -> None:
        """NotFound."""
        ...

    async def ensure_defaults(self, fleet_id: str, rules: Sequence[AlertRule], at_ms: int) -> bool:
        """Store ``rules`` unless the fleet's default rules were created before (even if
        deleted since): True when this call created them. Concurrent calls create them once."""
        ...

    async def policy(self, fleet_id: str) -> TrackingPolicy:
        """The fleet's badge policy; the default (no badge required) when none was set."""
        ...

    async def put_policy(self, policy: TrackingPolicy) -> TrackingPolicy:
        """Store the badge fields of ``policy`` (``defaults_ms`` is kept as stored)."""
        ...


class GuardRepo(Protocol):
    """Each vehicle's parked guard (tracking/guard.py)."""

    async def get(self, fleet_id: str, vehicle_id: str) -> GuardState | None: ...
    async def save(self, state: GuardState, *, expected_revision: int) -> GuardState | None:
        """Store ``state`` with revision ``expected_revision + 1`` if the stored one has
        ``expected_revision`` (0: none stored yet); None when another writer came first."""
        ...

    async def list(self, fleet_id: str) -> builtins.list[GuardState]:
        """The fleet's stored guards, by vehicle id."""
        ...


class TheftRepo(Protocol):
    """Theft cases and the legal holds they put on vehicles' data."""

    async def create(self, case: TheftCase, hold: LegalHold) -> TheftCase:
        """Store the case and its hold together. Conflict when the vehicle has an open case."""
        ...

    async def get(self, fleet_id: str, case_id: str) -> TheftCase:
        """Raises NotFound (also for another fleet's case)."""
        ...

    async def replace(self, case: TheftCase, hold: LegalHold | None = None) -> TheftCase:
        """Store ``case`` over the stored one (and ``hold`` over its hold). NotFound."""
        ...

    async def list(
        self,
        fleet_id: str,
        *,
        vehicle_id: str | None = None,
        status: TheftCaseStatus | None = None,
        cursor: str | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> Page[TheftCase]:
        """Cases in the order they were opened (``newest_first``: the reverse)."""
        ...

    async def open_case(self, fleet_id: str, vehicle_id: str) -> TheftCase | None:
        """The vehicle's open case, if any."""
        ...

    async def holds(self, fleet_id: str, *, at_ms: int) -> builtins.list[LegalHold]:
        """The fleet's holds in force at ``at_ms`` (until_ms None or later)."""
        ...


# --- retention, exports, erasure, offboarding (storage/retention.py, docs/gdpr.md) ---------


class RetentionRepo(Protocol):
    """Each fleet's retention periods, the purge that enforces them, and offboarding."""

    async def get(self, fleet_id: str) -> FleetRetention:
        """The fleet's periods (the defaults when never set) and its last purge. NotFound."""
        ...

    async def put(
        self, fleet_id: str, days: Mapping[DataKind, int], *, at_ms: int, by: str | None
    ) -> FleetRetention:
        """Change the given kinds' periods (the others stay). NotFound."""
        ...

    async def purge(
        self, fleet_id: str, cutoffs: Mapping[DataKind, int], *, at_ms: int
    ) -> dict[str, int]:
        """Delete the fleet's records older than their kind's cut-off (storage/retention.py
        says what each kind covers; exports are `ExportRepo.expire`'s), except those of
        vehicles under a legal hold at ``at_ms``; the count deleted per table."""
        ...

    async def record_run(self, fleet_id: str, run: PurgeRun) -> None:
        """Keep ``run`` as the fleet's last purge (a fleet erased meanwhile: nothing)."""
        ...

    async def start_offboarding(self, offboarding: Offboarding) -> Offboarding:
        """Store it; Conflict when the fleet is offboarding already. NotFound (fleet)."""
        ...

    async def offboarding(self, fleet_id: str) -> Offboarding | None:
        """The fleet's offboarding, also after its erasure (the deletion report)."""
        ...

    async def due_offboardings(self, now_ms: int) -> builtins.list[Offboarding]:
        """Offboardings whose window ended by ``now_ms`` and whose fleet is not erased yet."""
        ...

    async def erase_offboarded(self, fleet_id: str, at_ms: int) -> Offboarding:
        """Erase every record of the fleet (as `FleetRepo.delete`) and keep the counts deleted
        per table on its offboarding, the deletion report. Safe to call again after a failure
        half way. NotFound when the fleet has no offboarding."""
        ...


class ExportRepo(Protocol):
    """Export jobs (the data subject's right of access) and the driver queries they need."""

    async def create(self, job: ExportJob) -> ExportJob:
        """NotFound when the fleet does not exist."""
        ...

    async def get(self, fleet_id: str, export_id: str) -> ExportJob:
        """Raises NotFound (also for another fleet's export)."""
        ...

    async def claim(self, now_ms: int, lease_until_ms: int) -> ExportJob | None:
        """Take the oldest pending job (status running, lease set), compare-and-set: two
        workers never take the same one. None when there is none."""
        ...

    async def renew(self, export_id: str, lease_until_ms: int) -> bool:
        """Extend a running job's lease; False when it is no longer running."""
        ...

    async def finish(self, job: ExportJob) -> bool:
        """Store ``job``'s final status, counts, file and error, if it is still running;
        False otherwise (its lease ran out and it was failed meanwhile)."""
        ...

    async def fail_stale(self, now_ms: int) -> int:
        """Mark failed every running job whose lease ended before ``now_ms`` (its worker's
        process died: an export is not resumed half way, it is asked for again); how many."""
        ...

    async def expire(self, fleet_id: str, before_ms: int) -> builtins.list[ExportJob]:
        """Delete the fleet's jobs created before ``before_ms`` (retention); those deleted, so
        that their files can be removed."""
        ...

    async def driver_positions(
        self,
        fleet_id: str,
        badge: int,
        *,
        from_ms: int,
        to_ms: int,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> Page[Position]:
        """The positions carrying the driver's badge, oldest first (every vehicle)."""
        ...

    async def driver_events(
        self,
        fleet_id: str,
        badge: int,
        *,
        from_ms: int,
        to_ms: int,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> Page[Event]:
        """The events whose position carries the driver's badge, oldest first."""
        ...


class ErasureRepo(Protocol):
    """Erasure and rectification on a data subject's request (docs/gdpr.md)."""

    async def erase_vehicle(self, fleet_id: str, vehicle_id: str, at_ms: int) -> dict[str, int]:
        """Delete the vehicle's positions, events, last position, geofence crossings and
        states, alerts, commands and their audit, guard; the vehicle itself stays. The count per
        table. NotFound; Conflict when the vehicle is under a legal hold at ``at_ms``."""
        ...

    async def erase_driver(self, fleet_id: str, badge: int, at_ms: int) -> dict[str, int]:
        """Delete the positions and events carrying the driver's badge (last positions are
        recomputed), except those of vehicles under a legal hold; the count per table."""
        ...

    async def move_fitting(
        self, fleet_id: str, device_id: str, *, from_ms: int, to_ms: int, vehicle_id: str
    ) -> dict[str, int]:
        """Rectify a wrong fitting: the box's positions and events in [from_ms, to_ms) belong
        to ``vehicle_id``; last positions of the vehicles concerned are recomputed. The count
        moved per table. NotFound (box or vehicle not in the fleet)."""
        ...


class PrivacyRepo(Protocol):
    """Privacy mode's facts: schedule history, privacy-badge toggles, the fleet's privacy badge
    (tracking/privacy.py decides from them; docs/privacy.md)."""

    async def set_schedule(self, fleet_id: str, change: ScheduleChange) -> None:
        """Append a change to the vehicle's schedule history (the same effective time
        replaces). NotFound for an unknown fleet; the caller checks the vehicle."""
        ...

    async def add_toggles(self, fleet_id: str, vehicle_id: str, times_ms: list[int]) -> int:
        """Record presentations of the privacy badge; idempotent. The count new."""
        ...

    async def set_badge(self, fleet_id: str, badge: int | None) -> None:
        """The fleet's privacy badge (a pseudonym); None removes it."""
        ...

    async def badge(self, fleet_id: str) -> int | None: ...

    async def fleet(
        self, fleet_id: str, vehicle_id: str | None = None, *, existing: bool = False
    ) -> FleetPrivacy:
        """Everything privacy mode needs for the fleet (or one vehicle): a few queries, not
        one per position. A deleted vehicle's facts are kept (its history is still read);
        ``existing``: only those of the vehicles that exist (the map names vehicles)."""
        ...


class DriverRepo(Protocol):
    """Badge pseudonyms mapped to drivers' names (GET /v1/drivers)."""

    async def create(self, driver: Driver) -> Driver:
        """Conflict when the fleet has a driver with this badge already."""
        ...

    async def list(self, fleet_id: str) -> builtins.list[Driver]:
        """By name."""
        ...

    async def delete(self, fleet_id: str, driver_id: str) -> None:
        """NotFound when the fleet has no such driver."""
        ...

    async def delete_badge(self, fleet_id: str, badge: int) -> int:
        """Remove the mapping of a badge (a driver's erasure); the count removed."""
        ...
