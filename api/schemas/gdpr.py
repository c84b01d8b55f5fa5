"""Schemas of retention, exports, erasure and offboarding (docs/gdpr.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from api.schemas.commands import Reason
from api.schemas.common import TimeIn, Timestamp
from api.times import iso_ms
from storage.retention import (
    MAX_RETENTION_DAYS,
    MIN_RETENTION_DAYS,
    ExportJob,
    ExportStatus,
    FleetRetention,
    Offboarding,
)

Days = Annotated[int, Field(ge=MIN_RETENTION_DAYS, le=MAX_RETENTION_DAYS)]
# A badge as the API shows it (api/services/formats.py: digits of the stored integer).
Badge = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,19}$")]
RequiredReason = Annotated[Reason, StringConstraints(min_length=1)]


class RetentionDays(BaseModel):
    """Days each kind of record is kept (docs/gdpr.md, "Retention")."""

    model_config = ConfigDict(extra="forbid")

    positions: Days | None = Field(None, description="Positions, last positions, crossings")
    events: Days | None = None
    alerts: Days | None = Field(None, description="Closed alerts and closed theft cases")
    commands: Days | None = Field(None, description="Final commands")
    access_log: Days | None = Field(None, description="The access log and the command audit")
    exports: Days | None = Field(None, description="Export jobs and their files")


class PurgeRunPublic(BaseModel):
    at: Timestamp
    deleted: dict[str, int] = Field(description="Records deleted, per table")


class RetentionPublic(BaseModel):
    fleet_id: str
    days: dict[str, int]
    updated_at: Timestamp | None
    updated_by: str | None
    last_purge: PurgeRunPublic | None

    @classmethod
    def of(cls, r: FleetRetention) -> RetentionPublic:
        run = r.last_run
        return cls(
            fleet_id=r.fleet_id,
            days={str(kind): days for kind, days in r.days.items()},
            updated_at=None if r.updated_ms is None else iso_ms(r.updated_ms),
            updated_by=r.updated_by,
            last_purge=None
            if run is None
            else PurgeRunPublic(at=iso_ms(run.at_ms), deleted=dict(run.deleted)),
        )


class ExportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    vehicle_id: str | None = Field(None, min_length=1, max_length=64)
    driver_badge: Badge | None = None
    from_: TimeIn = Field(alias="from")
    to: TimeIn

    @model_validator(mode="after")
    def _one_subject(self) -> ExportCreate:
        if (self.vehicle_id is None) == (self.driver_badge is None):
            raise ValueError("give exactly one of vehicle_id and driver_badge")
        if self.to <= self.from_:
            raise ValueError("to must be after from")
        return self


class ExportPublic(BaseModel):
    id: str
    status: ExportStatus
    vehicle_id: str | None
    driver_badge: str | None
    from_: Timestamp = Field(alias="from")
    to: Timestamp
    created_at: Timestamp
    updated_at: Timestamp
    counts: dict[str, int] | None = Field(description="Records exported per kind, once done")
    size_bytes: int | None
    error: str | None
    download: str | None = Field(description="Where the zip is, once done")

    model_config = ConfigDict(populate_by_name=True)

    @classmethod
    def of(cls, job: ExportJob) -> ExportPublic:
        done = job.status is ExportStatus.DONE
        return cls(
            id=job.id,
            status=job.status,
            vehicle_id=job.vehicle_id,
            driver_badge=None if job.driver_badge is None else str(job.driver_badge),
            **{"from": iso_ms(job.from_ms)},
            to=iso_ms(job.to_ms),
            created_at=iso_ms(job.created_ms),
            updated_at=iso_ms(job.updated_ms or job.created_ms),
            counts=dict(job.counts) if done else None,
            size_bytes=job.size_bytes,
            error=job.error,
            download=f"/v1/exports/{job.id}/download" if done else None,
        )


class EraseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: RequiredReason


class DriverEraseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    driver_badge: Badge
    reason: RequiredReason


class FittingCorrection(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    device_id: str = Field(min_length=1, max_length=64, description="The box whose records move")
    from_: TimeIn = Field(alias="from")
    to: TimeIn
    reason: RequiredReason

    @model_validator(mode="after")
    def _range(self) -> FittingCorrection:
        if self.to <= self.from_:
            raise ValueError("to must be after from")
        return self


class ErasureResult(BaseModel):
    counts: dict[str, int] = Field(description="Records erased (or moved) per table")


class OffboardingPublic(BaseModel):
    fleet_id: str
    fleet_name: str
    started_at: Timestamp
    ends_at: Timestamp = Field(description="When every record of the fleet is erased")
    started_by: str | None
    erased_at: Timestamp | None
    deleted: dict[str, int] = Field(description="The deletion report: records deleted per table")

    @classmethod
    def of(cls, o: Offboarding) -> OffboardingPublic:
        return cls(
            fleet_id=o.fleet_id,
            fleet_name=o.fleet_name,
            started_at=iso_ms(o.started_ms),
            ends_at=iso_ms(o.ends_ms),
            started_by=o.started_by,
            erased_at=None if o.erased_ms is None else iso_ms(o.erased_ms),
            deleted=dict(o.deleted),
        )
