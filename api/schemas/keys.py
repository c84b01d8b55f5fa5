from __future__ import annotations

from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api.schemas.common import KeyName, Timestamp
from api.times import iso_ms
from storage.models import ApiKey


class FleetRole(StrEnum):
    """Roles a fleet key can have (operator keys are made by gp8 admin / --bootstrap-key)."""

    VIEWER = "viewer"
    MANAGER = "manager"
    ADMIN = "admin"


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: FleetRole
    name: KeyName = ""
    expires_at: AwareDatetime | None = Field(
        default=None, description="When the key stops working (ISO-8601 with a time zone)"
    )


class KeyPublic(BaseModel):
    id: str
    fleet_id: str | None
    role: str
    name: str
    prefix: str = Field(description="The key's first characters, to tell keys apart")
    created_at: Timestamp
    expires_at: Timestamp | None
    revoked_at: Timestamp | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyPublic:
        return cls(
            id=key.id,
            fleet_id=key.fleet_id,
            role=key.role.value,
            name=key.name,
            prefix=key.prefix,
            created_at=iso_ms(key.created_ms),
            expires_at=iso_ms(key.expires_ms) if key.expires_ms is not None else None,
            revoked_at=iso_ms(key.revoked_ms) if key.revoked_ms is not None else None,
        )


class KeyCreated(KeyPublic):
    key: str = Field(description="The secret: shown in this response only, stored as a hash")


class KeysPublic(BaseModel):
    data: list[KeyPublic]
    next_cursor: str | None
