from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.schemas.common import KeyName, TimeIn, Timestamp
from api.times import iso_ms
from storage.models import ApiKey


class FleetRole(StrEnum):
    """Roles a fleet key can have (operator keys are made by gp8 admin / --bootstrap-key)."""

    VIEWER = "viewer"
    MANAGER = "manager"
    ADMIN = "admin"


# An address as people type it: one @, no spaces, a dot in the domain. Deliverability is not
# gp8's to check; this catches a name typed in the wrong field.
OwnerEmail = Annotated[
    str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: FleetRole
    name: KeyName = Field(min_length=1, description="The person the key belongs to")
    email: OwnerEmail = Field(description="Their e-mail address")
    expires_at: TimeIn | None = Field(
        default=None,
        description="When the key stops working (ISO-8601 with a time zone); default: in "
        "90 days (GP8_API__KEY_TTL_DAYS)",
    )


class KeyPublic(BaseModel):
    id: str
    fleet_id: str | None
    role: str
    name: str = Field(description="The person the key belongs to")
    email: str = Field(description="Their e-mail address; empty for keys made before owners")
    prefix: str = Field(description="The key's first characters, to tell keys apart")
    created_at: Timestamp
    expires_at: Timestamp | None
    revoked_at: Timestamp | None
    last_used_at: Timestamp | None = Field(
        description="When the key last authenticated a request (to the minute); null: never"
    )

    @classmethod
    def of(cls, key: ApiKey) -> KeyPublic:
        return cls(
            id=key.id,
            fleet_id=key.fleet_id,
            role=key.role.value,
            name=key.name,
            email=key.email,
            prefix=key.prefix,
            created_at=iso_ms(key.created_ms),
            expires_at=iso_ms(key.expires_ms) if key.expires_ms is not None else None,
            revoked_at=iso_ms(key.revoked_ms) if key.revoked_ms is not None else None,
            last_used_at=iso_ms(key.last_used_ms) if key.last_used_ms is not None else None,
        )


class KeyCreated(KeyPublic):
    key: str = Field(description="The secret: shown in this response only, stored as a hash")


class KeysPublic(BaseModel):
    data: list[KeyPublic]
    next_cursor: str | None
