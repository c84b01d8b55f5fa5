"""Geofence requests and responses (docs/api.md, "Geofences"; docs/alerts.md, "Geofences").

A fence's ``geometry`` is checked here for what GeoJSON itself requires (api/services/
geofences.py: types, [longitude, latitude] in range, closed rings, valid polygons); whether it
is a sane fence with its ``radius_m`` and ``margin_m`` is checked by the service once a change
is merged with the stored fence.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from api.schemas.common import Name, Timestamp
from api.services.geofences import MAX_FENCE_VEHICLES, parse_geometry
from api.times import iso_ms
from storage.models import (
    GEOFENCE_DEFAULT_DWELL_S,
    GEOFENCE_DEFAULT_MARGIN_M,
    Geofence,
    GeofenceEvent,
    GeofenceEventKind,
    GeofenceSchedule,
)
from tracking import MAX_RADIUS_M, MIN_RADIUS_M, schedule_problem

# Hysteresis bounds: beyond a kilometre of margin or an hour of dwell a fence no longer says
# where a vehicle is.
MAX_MARGIN_M = 1000.0
MAX_DWELL_S = 3600
MAX_SPEED_LIMIT_KMH = 300.0

_GEOMETRY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "GeoJSON (RFC 7946) Polygon or MultiPolygon, or a Point with radius_m for a "
    "circle; positions are [longitude, latitude], rings closed (first position = last)",
    "required": ["type", "coordinates"],
    "properties": {
        "type": {"type": "string", "enum": ["Polygon", "MultiPolygon", "Point"]},
        "coordinates": {"type": "array"},
    },
    "examples": [
        {
            "type": "Polygon",
            "coordinates": [
                [[2.35, 48.85], [2.36, 48.85], [2.36, 48.86], [2.35, 48.86], [2.35, 48.85]]
            ],
        },
        {"type": "Point", "coordinates": [2.3522, 48.8566]},
    ],
}


def _geometry(value: object) -> dict[str, object]:
    return parse_geometry(value)


GeometryIn = Annotated[
    dict[str, Any], AfterValidator(_geometry), WithJsonSchema(_GEOMETRY_SCHEMA, mode="validation")
]
GeometryOut = Annotated[dict[str, Any], WithJsonSchema(_GEOMETRY_SCHEMA, mode="serialization")]
VehicleRef = Annotated[str, StringConstraints(min_length=1, max_length=64)]
HHMM = Annotated[
    str,
    StringConstraints(pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"),
    Field(examples=["07:00"]),
]


class Schedule(BaseModel):
    """Allowed hours: on ``days`` (ISO weekdays, 1 = Monday) from ``from`` to ``to``, local time
    in ``timezone``; ``to`` before ``from`` runs past midnight; ``to`` may be 24:00."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        examples=["Europe/Paris"], description="IANA time zone name"
    )
    days: list[Annotated[int, Field(ge=1, le=7)]] = Field(
        default_factory=lambda: [1, 2, 3, 4, 5, 6, 7], min_length=1, max_length=7
    )
    start: HHMM = Field(alias="from")
    end: HHMM = Field(alias="to")

    @field_validator("days")
    @classmethod
    def _unique_days(cls, days: list[int]) -> list[int]:
        return sorted(set(days))

    @model_validator(mode="after")
    def _usable(self) -> Schedule:
        problem = schedule_problem(self.model())
        if problem:
            raise ValueError(problem)
        return self

    def model(self) -> GeofenceSchedule:
        return GeofenceSchedule(self.timezone, tuple(self.days), self.start, self.end)

    @classmethod
    def of(cls, schedule: GeofenceSchedule) -> Schedule:
        return cls.model_construct(
            timezone=schedule.timezone,
            days=list(schedule.days),
            start=schedule.start,
            end=schedule.end,
        )


_Margin = Annotated[float, Field(ge=0, le=MAX_MARGIN_M, allow_inf_nan=False)]
_Dwell = Annotated[int, Field(ge=0, le=MAX_DWELL_S)]
_Radius = Annotated[float, Field(ge=MIN_RADIUS_M, le=MAX_RADIUS_M, allow_inf_nan=False)]
_SpeedLimit = Annotated[float, Field(gt=0, le=MAX_SPEED_LIMIT_KMH, allow_inf_nan=False)]
_VehicleIds = Annotated[
    list[VehicleRef],
    Field(
        min_length=1,
        max_length=MAX_FENCE_VEHICLES,
        description="The vehicles it applies to (each a vehicle of the fleet); absent or null: "
        "every vehicle of the fleet",
    ),
]


class GeofenceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    geometry: GeometryIn
    radius_m: _Radius | None = Field(default=None, description="For a Point: the circle's radius")
    vehicle_ids: _VehicleIds | None = None
    schedule: Schedule | None = None
    margin_m: _Margin = Field(
        default=GEOFENCE_DEFAULT_MARGIN_M,
        description="Hysteresis: inside once this far inside, outside once this far outside",
    )
    dwell_s: _Dwell = Field(
        default=GEOFENCE_DEFAULT_DWELL_S,
        description="Hysteresis: a crossing counts once the new side held this long",
    )
    speed_limit_kmh: _SpeedLimit | None = Field(
        default=None, description="For the overspeed rule inside this fence"
    )


class GeofenceUpdate(BaseModel):
    """Fields to change. Absent: unchanged. ``null`` clears ``vehicle_ids`` (every vehicle),
    ``schedule``, ``speed_limit_kmh`` and ``radius_m``; for the other fields it is unchanged."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    geometry: GeometryIn | None = None
    radius_m: _Radius | None = None
    vehicle_ids: _VehicleIds | None = None
    schedule: Schedule | None = None
    margin_m: _Margin | None = None
    dwell_s: _Dwell | None = None
    speed_limit_kmh: _SpeedLimit | None = None


class GeofencePublic(BaseModel):
    id: str
    name: str
    geometry: GeometryOut
    radius_m: float | None
    vehicle_ids: list[str] | None = Field(description="null: every vehicle of the fleet")
    schedule: Schedule | None
    margin_m: float
    dwell_s: int
    speed_limit_kmh: float | None
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, fence: Geofence) -> GeofencePublic:
        return cls(
            id=fence.id,
            name=fence.name,
            geometry=fence.geometry,
            radius_m=fence.radius_m,
            vehicle_ids=None if fence.vehicle_ids is None else list(fence.vehicle_ids),
            schedule=None if fence.schedule is None else Schedule.of(fence.schedule),
            margin_m=fence.margin_m,
            dwell_s=fence.dwell_s,
            speed_limit_kmh=fence.speed_limit_kmh,
            created_at=iso_ms(fence.created_ms),
            updated_at=iso_ms(fence.updated_ms),
        )


class GeofencesPublic(BaseModel):
    data: list[GeofencePublic]
    next_cursor: str | None


class GeofenceEventPublic(BaseModel):
    id: str
    geofence_id: str
    kind: GeofenceEventKind
    time: Timestamp = Field(description="Device time of the fix that confirmed the crossing")
    vehicle_id: str
    device_id: str
    lat: float
    lon: float

    @classmethod
    def of(cls, event: GeofenceEvent) -> GeofenceEventPublic:
        return cls(
            id=event.id,
            geofence_id=event.geofence_id,
            kind=event.kind,
            time=iso_ms(event.time_ms),
            vehicle_id=event.vehicle_id,
            device_id=event.device_id,
            lat=event.lat,
            lon=event.lon,
        )


class GeofenceEventsPublic(BaseModel):
    data: list[GeofenceEventPublic]
    next_cursor: str | None
