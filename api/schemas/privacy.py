"""Schemas of privacy mode (/v1/vehicles/{id}/privacy, /v1/privacy-badge) and of /v1/drivers."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

_BADGE = Field(
    min_length=1,
    max_length=20,
    pattern=r"^[0-9]+$",
    description="The badge number as the box reports it (decimal digits, as a string)",
)


class PrivateWindow(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    days: list[int] = Field(
        min_length=1, max_length=7, description="ISO weekdays: 1 (Monday) .. 7 (Sunday)"
    )
    from_: str = Field(alias="from", description='Local time "HH:MM" the window starts')
    to: str = Field(
        description='Local time "HH:MM" it ends; before "from": the next day ("24:00": midnight)'
    )


class PrivacySchedulePublic(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tz: str = Field(max_length=64, description="IANA time zone, e.g. Europe/Paris")
    private: list[PrivateWindow] = Field(min_length=1, max_length=20)


class PrivacyPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schedule: PrivacySchedulePublic | None = Field(
        description="The weekly private hours from now on; null removes the schedule "
        "(positions stored meanwhile keep the schedule they were stored under)"
    )


class PrivacyPublic(BaseModel):
    vehicle_id: str
    schedule: PrivacySchedulePublic | None = Field(description="The schedule in effect now")
    effective_from: datetime | None = Field(description="When the schedule took effect")
    private_now: bool = Field(description="The vehicle's fixes taken now are private")
    privacy: str = Field(
        description='"off", "active" (some fixes are private) or "overridden_by_theft_case"'
    )
    toggles: int = Field(description="Presentations of the privacy badge recorded")


class PrivacyBadgePut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    badge: str | None = Field(
        default=None,
        min_length=1,
        max_length=20,
        pattern=r"^[0-9]+$",
        description="The fleet's privacy badge; null removes it",
    )


class PrivacyBadgePublic(BaseModel):
    badge: str | None = Field(description="The privacy badge's pseudonym; null: none set")


class DriverCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    badge: str = _BADGE
    name: str = Field(min_length=1, max_length=200)


class DriverPublic(BaseModel):
    id: str
    badge: str = Field(description="The badge's pseudonym: what positions carry as driver_badge")
    name: str
    created_at: datetime


class DriversPublic(BaseModel):
    data: list[DriverPublic]
    count: int
