from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import Timestamp


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
    days: list[DayMileage]
    total_distance_m: int
