"""The parked guard and theft cases (docs/theft.md; docs/api.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.schemas.commands import CommandPublic
from api.schemas.common import TimeIn, Timestamp
from api.services.formats import event_dict, position_dict
from api.times import age_s, iso_ms
from storage.models import (
    AuditEntry,
    CommandRecord,
    GuardState,
    GuardStatus,
    TheftCase,
    TheftCaseStatus,
    TheftOutcome,
)
from tracking.theft import Timeline

NOTE_MAX = 2000
Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=NOTE_MAX)]


def _time(ms: int | None) -> str | None:
    return None if ms is None else iso_ms(ms)


# --- the parked guard -------------------------------------------------------------------


class GuardUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    armed: bool = Field(
        description="false: disarm (not armed again before the next start); true: arm around "
        "the vehicle's last position"
    )


class GuardPublic(BaseModel):
    vehicle_id: str
    status: GuardStatus
    since: Timestamp | None = Field(description="When it entered this status")
    reason: str
    lat: float | None = Field(description="Armed: where it was parked (the guard's centre)")
    lon: float | None
    parked_since: Timestamp | None = Field(
        description="Disarmed: parked with the ignition off since then; arms after park_minutes"
    )
    held: bool = Field(description="Disarmed by a manager: not armed before the next start")
    alert_id: str | None = Field(description="The open suspected_theft alert while triggered")
    updated_at: Timestamp | None
    updated_by: str | None

    @classmethod
    def of(cls, g: GuardState) -> GuardPublic:
        return cls(
            vehicle_id=g.vehicle_id,
            status=g.status,
            since=_time(g.since_ms) if g.since_ms else None,
            reason=g.reason,
            lat=g.lat,
            lon=g.lon,
            parked_since=_time(g.parked_ms),
            held=g.held,
            alert_id=g.alert_id,
            updated_at=_time(g.updated_ms) if g.updated_ms else None,
            updated_by=g.updated_by,
        )


# --- theft cases ------------------------------------------------------------------------


class TheftCaseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reported_at: TimeIn | None = Field(
        default=None, description="When the theft was reported (default: now)"
    )
    note: Note = ""
    alert_id: str | None = Field(
        default=None,
        max_length=64,
        description="The suspected_theft alert it comes from: the timeline starts at its "
        "first suspicious record",
    )


class TheftFromAlert(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reported_at: TimeIn | None = None
    note: Note = ""


class TheftCaseClose(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: TheftOutcome
    note: Note = ""


class TheftCasePublic(BaseModel):
    id: str
    vehicle_id: str
    device_id: str | None
    status: TheftCaseStatus
    opened_at: Timestamp
    opened_by: str | None
    reported_at: Timestamp
    started_at: Timestamp = Field(
        description="The first suspicious record (the alert's), else reported_at: where the "
        "timeline starts"
    )
    note: str
    alert_id: str | None
    fast_interval_s: int
    previous_interval_s: int | None = Field(description="Restored when the case is closed")
    interval_command_id: str | None
    immobilise_command_id: str | None
    restore_command_id: str | None
    outcome: TheftOutcome | None
    closed_at: Timestamp | None
    closed_by: str | None
    close_note: str
    legal_hold_until: Timestamp | None = Field(
        description="The vehicle's data is kept beyond retention until then (null: while open)"
    )

    @classmethod
    def of(cls, c: TheftCase) -> TheftCasePublic:
        return cls(
            id=c.id,
            vehicle_id=c.vehicle_id,
            device_id=c.device_id,
            status=c.status,
            opened_at=iso_ms(c.opened_ms),
            opened_by=c.opened_by,
            reported_at=iso_ms(c.reported_ms),
            started_at=iso_ms(c.started_ms),
            note=c.note,
            alert_id=c.alert_id,
            fast_interval_s=c.fast_interval_s,
            previous_interval_s=c.previous_interval_s,
            interval_command_id=c.interval_command_id,
            immobilise_command_id=c.immobilise_command_id,
            restore_command_id=c.restore_command_id,
            outcome=c.outcome,
            closed_at=_time(c.closed_ms),
            closed_by=c.closed_by,
            close_note=c.close_note,
            legal_hold_until=_time(c.hold_until_ms),
        )


class TheftCasesPublic(BaseModel):
    data: list[TheftCasePublic]
    next_cursor: str | None


class AuditLinePublic(BaseModel):
    time: Timestamp
    action: str
    actor: str
    command_id: str | None
    status: str | None
    reason: str
    detail: str

    @classmethod
    def of(cls, e: AuditEntry) -> AuditLinePublic:
        return cls(
            time=iso_ms(e.time_ms),
            action=e.action,
            actor=e.actor,
            command_id=e.command_id,
            status=e.status,
            reason=e.reason,
            detail=e.detail,
        )


class BoxStatePublic(BaseModel):
    ignition: bool | None
    external_power: bool | None
    engine_start_inhibited: bool | None
    doors_locked: bool | None
    online: bool


class CurrentPublic(BaseModel):
    position: dict[str, Any] | None = Field(description="The vehicle's last position")
    age_s: float | None = Field(description="How old that position is")
    speed_kmh: float | None
    heading_deg: float | None
    box: BoxStatePublic


class TheftCaseDetail(TheftCasePublic):
    """A case with its timeline: everything since the theft started."""

    current: CurrentPublic
    positions: list[dict[str, Any]] = Field(
        description="Every position since started_at, oldest first (at most `limit`)"
    )
    positions_truncated: bool = Field(description="More positions than shown: use the track")
    events: list[dict[str, Any]]
    commands: list[CommandPublic] = Field(
        description="The commands of the case (report interval, immobilisation), with their "
        "acknowledgement"
    )
    audit: list[AuditLinePublic] = Field(description="Who did what, oldest first")

    @classmethod
    def of_timeline(cls, t: Timeline) -> TheftCaseDetail:
        base = TheftCasePublic.of(t.case).model_dump()
        last = t.last_position
        return cls(
            **base,
            current=CurrentPublic(
                position=position_dict(last) if last is not None else None,
                age_s=age_s(last.time_ms, t.now_ms) if last is not None else None,
                speed_kmh=last.speed_kmh if last is not None else None,
                heading_deg=last.heading_deg if last is not None else None,
                box=BoxStatePublic(
                    ignition=last.ignition if last is not None else None,
                    external_power=last.external_power if last is not None else None,
                    engine_start_inhibited=_inhibited(t),
                    doors_locked=last.doors_locked if last is not None else None,
                    online=t.online,
                ),
            ),
            positions=[position_dict(p) for p in t.positions],
            positions_truncated=t.positions_truncated,
            events=[event_dict(e) for e in t.events],
            commands=[CommandPublic.of(c) for c in t.commands],
            audit=[AuditLinePublic.of(e) for e in t.audit],
        )


def _inhibited(t: Timeline) -> bool | None:
    """From the newest of the last position and the last acknowledged command's report."""
    last, lock = t.last_position, t.lock_state
    if lock is not None and (last is None or lock.updated_ms > last.time_ms):
        return lock.engine_start_inhibited
    return last.engine_start_inhibited if last is not None else None


class ImmobiliseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Note = ""


class ImmobilisePublic(BaseModel):
    case_id: str
    command: CommandPublic

    @classmethod
    def of(cls, case_id: str, command: CommandRecord) -> ImmobilisePublic:
        return cls(case_id=case_id, command=CommandPublic.of(command))


TrackFormat = Literal["geojson", "gpx", "csv"]
