from __future__ import annotations

from pydantic import BaseModel

from api.schemas.common import Timestamp
from api.times import iso_ms
from storage.models import AccessLogEntry


class AccessLogEntryPublic(BaseModel):
    id: str
    time: Timestamp
    key_id: str | None
    fleet_id: str | None
    action: str
    resource: str
    resource_id: str | None
    detail: str

    @classmethod
    def of(cls, entry: AccessLogEntry) -> AccessLogEntryPublic:
        return cls(
            id=entry.id,
            time=iso_ms(entry.time_ms),
            key_id=entry.key_id,
            fleet_id=entry.fleet_id,
            action=entry.action,
            resource=entry.resource,
            resource_id=entry.resource_id,
            detail=entry.detail,
        )


class AccessLogPublic(BaseModel):
    data: list[AccessLogEntryPublic]
    next_cursor: str | None
