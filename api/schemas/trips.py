from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import Timestamp


def _privacy() -> Any:
    return Field(
        default="off",
        description='Privacy mode over the range (docs/privacy.md): "off", "active" (private '
        'time left out), "revealed" (an admin with a Gp8-Reason) or "overridden_by_theft_case"',
    )


class TripEnd(BaseModel):
    time: Timestamp
    lat: float | None = Field(description="Null when no valid fix was available")
    lon: float | None


class TripPublic(BaseModel):
    start: TripEnd
    end: TripEnd
    distance_m: int = Field(description="From the odometer")
    duration_s: float
    max_speed_kmh: float
    avg_speed_kmh: float = Field(description="distance / duration")
    complete: bool = Field(
        description="False when the trip began before `from` or was still going at `to`"
    )


class TripsPublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    vehicle_id: str
    from_: Timestamp = Field(alias="from")
    to: Timestamp
    privacy: str = _privacy()
    data: list[TripPublic]
    total_distance_m: int


class DayMileage(BaseModel):
    date: str = Field(json_schema_extra={"format": "date"}, examples=["2024-05-01"])
    distance_m: int


class MileagePublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    vehicle_id: str
    from_: Timestamp = Field(alias="from")
    to: Timestamp
    privacy: str = _privacy()
    days: list[DayMileage]
    total_distance_m: int
