"""Remote commands, their audit log, fleet policies, the kill switch and alerts."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    model_validator,
)

from api.schemas.common import Timestamp
from api.times import iso_ms
from api.validation import text_error
from commands import rules
from commands.requests import MAX_BULK_VEHICLES
from protocol.gp8 import RecordFlags
from storage.models import (
    Alert,
    AlertKind,
    AlertState,
    AuditEntry,
    CommandKind,
    CommandPolicy,
    CommandRecord,
    CommandState,
    KillSwitch,
    Severity,
    alert_state,
)


def _printable(value: str) -> str:
    error = text_error(value)
    if error:
        raise ValueError(error)
    return value


Reason = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=rules.REASON_MAX),
    AfterValidator(_printable),
    Field(description="Why: free text written to the audit log with every step"),
]
TheftCaseId = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=rules.THEFT_CASE_ID_MAX,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$",
    ),
    Field(description="The theft case this command belongs to (police or insurer reference)"),
]
TtlS = Annotated[
    int,
    Field(
        ge=0,
        le=rules.MAX_TTL_S,
        description="Seconds the command may wait for the box; 0 = now or never (failed at once "
        f"if the box is offline). Default {rules.DEFAULT_TTL_S}",
    ),
]


# --- request: one body shape per command type (a discriminated union on "type") -----------


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReportIntervalParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: Annotated[
        int,
        Field(
            strict=True,
            ge=rules.REPORT_INTERVAL_MIN_S,
            le=rules.REPORT_INTERVAL_MAX_S,
            description="Seconds between positions while the ignition is on",
        ),
    ]


class _CommandBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttl_s: TtlS = rules.DEFAULT_TTL_S
    reason: Reason = ""
    theft_case_id: TheftCaseId | None = None

    def params_dict(self) -> dict[str, object]:
        params = getattr(self, "params", None)
        return params.model_dump() if isinstance(params, BaseModel) else {}


class _NoParamsBody(_CommandBody):
    params: NoParams = Field(default_factory=NoParams, description="Must be empty")


class LockCommand(_NoParamsBody):
    type: Literal["lock"]


class UnlockCommand(_NoParamsBody):
    type: Literal["unlock"]


class DisableEngineStartCommand(_NoParamsBody):
    """The next engine start is prevented; a running engine is never stopped."""

    type: Literal["disable_engine_start"]


class EnableEngineStartCommand(_NoParamsBody):
    type: Literal["enable_engine_start"]


class LocateCommand(_NoParamsBody):
    """The box sends a fresh position now."""

    type: Literal["locate"]


class RebootCommand(_NoParamsBody):
    type: Literal["reboot"]


class SetReportIntervalCommand(_CommandBody):
    type: Literal["set_report_interval"]
    params: ReportIntervalParams


CommandCreate = Annotated[
    LockCommand
    | UnlockCommand
    | DisableEngineStartCommand
    | EnableEngineStartCommand
    | LocateCommand
    | SetReportIntervalCommand
    | RebootCommand,
    Field(discriminator="type"),
]


# --- bulk: one command type for many vehicles ----------------------------------------------

VehicleId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class BulkCommandCreate(BaseModel):
    """One command type for many vehicles: ``vehicle_ids`` or ``all``, not both."""

    model_config = ConfigDict(extra="forbid")

    type: CommandKind
    params: dict[str, StrictInt] = Field(
        default_factory=dict,
        description="As for a single command of this type (set_report_interval: seconds)",
    )
    ttl_s: TtlS = rules.DEFAULT_TTL_S
    reason: Reason = ""
    theft_case_id: TheftCaseId | None = None
    vehicle_ids: list[VehicleId] | None = Field(
        default=None, min_length=1, max_length=MAX_BULK_VEHICLES
    )
    all: bool = Field(default=False, description="Every vehicle of the fleet")

    @model_validator(mode="after")
    def _one_target(self) -> BulkCommandCreate:
        if (self.vehicle_ids is not None) == self.all:
            raise ValueError('give either "vehicle_ids" or "all": true')
        return self


class BulkRefusal(BaseModel):
    """Why this vehicle got no command: the problem (RFC 9457 members) a single request for
    it would have answered."""

    model_config = ConfigDict(extra="allow")  # a refusal's own members (alert_ids, ...)

    type: str
    title: str
    status: int
    detail: str


class BulkItemPublic(BaseModel):
    vehicle_id: str
    command_id: str | None = Field(description="The vehicle's command; null when refused")
    status: CommandState | None = Field(
        description="The command's status now (pending_approval under four-eyes)"
    )
    replayed: bool = Field(description="An earlier request with this Idempotency-Key made it")
    problem: BulkRefusal | None


class BulkCommandsPublic(BaseModel):
    data: list[BulkItemPublic] = Field(description="One per vehicle, in the order asked")
    created: int
    replayed: int
    refused: int


# --- responses ------------------------------------------------------------------------------


class BoxState(BaseModel):
    doors_locked: bool
    engine_start_inhibited: bool

    @classmethod
    def of_flags(cls, flags: int) -> BoxState:
        return cls(
            doors_locked=bool(flags & RecordFlags.DOORS_LOCKED),
            engine_start_inhibited=bool(flags & RecordFlags.ENGINE_START_INHIBITED),
        )


def _time(ms: int | None) -> str | None:
    return None if ms is None else iso_ms(ms)


class CommandPublic(BaseModel):
    id: str
    vehicle_id: str
    device_id: str
    type: CommandKind
    params: dict[str, int]
    status: CommandState
    seq: int = Field(description="The command's number on the wire, unique for its box")
    ttl_s: int
    created_at: Timestamp
    expires_at: Timestamp
    sent_at: Timestamp | None = Field(description="First written to the box")
    delivered_at: Timestamp | None = Field(description="The box confirmed receipt")
    completed_at: Timestamp | None = Field(description="Reached its final status")
    attempts: int = Field(description="Times written to the box")
    requested_by: str | None = Field(description="Id of the API key that asked")
    reason: str
    theft_case_id: str | None
    idempotency_key: str | None
    approved_by: str | None
    approved_at: Timestamp | None
    cancelled_by: str | None
    failure: str | None = Field(
        description="Why it failed: the box's reason (door_open, busy, not_wired, "
        "hardware_fault, invalid_parameter, unsupported) or gp8's (box_offline, box_refitted)"
    )
    result: BoxState | None = Field(description="Doors and inhibit as the box reported them")

    @classmethod
    def of(cls, c: CommandRecord) -> CommandPublic:
        return cls(
            id=c.id,
            vehicle_id=c.vehicle_id,
            device_id=c.device_id,
            type=c.kind,
            params=rules.params_of(c.kind, c.param),
            status=c.status,
            seq=c.seq,
            ttl_s=c.ttl_s,
            created_at=iso_ms(c.created_ms),
            expires_at=iso_ms(c.expires_ms),
            sent_at=_time(c.sent_ms),
            delivered_at=_time(c.delivered_ms),
            completed_at=_time(c.completed_ms),
            attempts=c.attempts,
            requested_by=c.requested_by,
            reason=c.reason,
            theft_case_id=c.theft_case_id,
            idempotency_key=c.idempotency_key,
            approved_by=c.approved_by,
            approved_at=_time(c.approved_ms),
            cancelled_by=c.cancelled_by,
            failure=c.failure,
            result=None if c.result_state is None else BoxState.of_flags(c.result_state),
        )


class CommandsPublic(BaseModel):
    data: list[CommandPublic]
    next_cursor: str | None


class AuditEntryPublic(BaseModel):
    id: str
    time: Timestamp
    fleet_id: str | None
    action: str = Field(description="command.requested, command.sent, alert.raised, ...")
    actor: str = Field(description="key:<id>, gateway:<id>, box:<imei> or system")
    key_id: str | None = Field(description="The key that acted, or that asked for the command")
    vehicle_id: str | None
    command_id: str | None
    status: str | None = Field(description="The command's status after this step")
    reason: str
    theft_case_id: str | None
    detail: str

    @classmethod
    def of(cls, e: AuditEntry) -> AuditEntryPublic:
        return cls(
            id=e.id,
            time=iso_ms(e.time_ms),
            fleet_id=e.fleet_id,
            action=e.action,
            actor=e.actor,
            key_id=e.key_id,
            vehicle_id=e.vehicle_id,
            command_id=e.command_id,
            status=e.status,
            reason=e.reason,
            theft_case_id=e.theft_case_id,
            detail=e.detail,
        )


class AuditPublic(BaseModel):
    data: list[AuditEntryPublic]
    next_cursor: str | None


# Engine-start commands a fleet may cap itself to per hour: 1 at least (0 would be "never",
# which is what the roles are for), and a bound no honest fleet reaches.
ENGINE_START_CAP_MAX = 100_000


class PolicyUpdate(BaseModel):
    """The whole policy (PUT replaces it); absent fields are off."""

    model_config = ConfigDict(extra="forbid")

    four_eyes: bool = Field(
        default=False,
        description="disable_engine_start and unlock wait for a second admin's approval",
    )
    engine_start_cap_per_hour: int | None = Field(
        default=None,
        ge=1,
        le=ENGINE_START_CAP_MAX,
        description="Engine-start commands (disable and enable) the fleet may request per "
        "rolling hour; beyond it 429 and an alert. null: no cap",
    )


class PolicyPublic(BaseModel):
    fleet_id: str
    four_eyes: bool
    engine_start_cap_per_hour: int | None
    updated_at: Timestamp | None
    updated_by: str | None

    @classmethod
    def of(cls, p: CommandPolicy) -> PolicyPublic:
        return cls(
            fleet_id=p.fleet_id,
            four_eyes=p.four_eyes,
            engine_start_cap_per_hour=p.engine_start_cap_per_hour,
            updated_at=iso_ms(p.updated_ms) if p.updated_ms else None,
            updated_by=p.updated_by,
        )


class KillSwitchUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    engaged: bool
    reason: Reason = ""


class KillSwitchPublic(BaseModel):
    engaged: bool = Field(description="While true, disable_engine_start is refused and held")
    reason: str
    changed_at: Timestamp | None
    changed_by: str | None

    @classmethod
    def of(cls, k: KillSwitch) -> KillSwitchPublic:
        return cls(
            engaged=k.engaged,
            reason=k.reason,
            changed_at=iso_ms(k.changed_ms) if k.changed_ms else None,
            changed_by=k.changed_by,
        )


class AlertClear(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason = ""


class AlertPublic(BaseModel):
    id: str
    kind: AlertKind = Field(description="The same as type (kept for older clients)")
    raised_at: Timestamp
    device_id: str | None
    vehicle_id: str | None
    detail: str
    freezes_commands: bool = Field(description="Commands to the vehicle are refused until cleared")
    open: bool = Field(description="Not closed (open or acknowledged)")
    cleared_at: Timestamp | None = Field(description="When it was closed")
    cleared_by: str | None = Field(description='The key that closed it, or "system"')
    # Incidents of the alert rules (docs/alerts.md, "Alerts").
    type: AlertKind
    severity: Severity
    state: AlertState
    rule_id: str | None
    ref: str | None = Field(description="What it is about besides the vehicle (a fence id...)")
    count: int = Field(description="Records that triggered this incident")
    first_seen_at: Timestamp | None = Field(description="Device time of the first trigger")
    last_seen_at: Timestamp | None = Field(description="Device time of the latest trigger")
    lat: float | None = Field(description="Where the latest trigger was")
    lon: float | None
    speed_kmh: float | None
    updated_at: Timestamp | None
    acked_at: Timestamp | None
    acked_by: str | None
    ack_note: str
    close_reason: str
    theft_case_id: str | None

    @classmethod
    def of(cls, a: Alert) -> AlertPublic:
        return cls(
            id=a.id,
            kind=a.kind,
            raised_at=iso_ms(a.raised_ms),
            device_id=a.device_id,
            vehicle_id=a.vehicle_id,
            detail=a.detail,
            freezes_commands=a.freezes_commands,
            open=a.cleared_ms is None,
            cleared_at=_time(a.cleared_ms),
            cleared_by=a.cleared_by,
            type=a.kind,
            severity=a.severity,
            state=alert_state(a),
            rule_id=a.rule_id,
            ref=a.ref,
            count=a.count,
            first_seen_at=_time(a.first_ms),
            last_seen_at=_time(a.last_ms),
            lat=a.lat,
            lon=a.lon,
            speed_kmh=a.speed_kmh,
            updated_at=_time(a.updated_ms),
            acked_at=_time(a.acked_ms),
            acked_by=a.acked_by,
            ack_note=a.ack_note,
            close_reason=a.close_reason,
            theft_case_id=a.theft_case_id,
        )


class AlertsPublic(BaseModel):
    data: list[AlertPublic]
    next_cursor: str | None


class LockStatePublic(BaseModel):
    """The vehicle's doors and engine-start inhibit: from the last acknowledged command at
    once, then from the box's positions, which confirm (or contradict) it."""

    doors_locked: bool | None = Field(description="null: never reported")
    engine_start_inhibited: bool | None
    source: Literal["command", "position"] | None = Field(
        description="command: the box's answer to a command, not yet seen in a position; "
        "position: its last position"
    )
    confirmed: bool = Field(description="A position taken after the last command shows it")
    as_of: Timestamp | None = Field(description="When the box reported this state")
    command_id: str | None = Field(description="The last command that changed or reported it")
