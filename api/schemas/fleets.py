from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from api.schemas.common import Name, Timestamp
from api.times import iso_ms
from storage.models import Fleet


class FleetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name


class FleetPublic(BaseModel):
    id: str
    name: str
    created_at: Timestamp

    @classmethod
    def of(cls, fleet: Fleet) -> FleetPublic:
        return cls(id=fleet.id, name=fleet.name, created_at=iso_ms(fleet.created_ms))


class FleetsPublic(BaseModel):
    data: list[FleetPublic]
    next_cursor: str | None
