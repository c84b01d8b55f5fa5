from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.commands import LockStatePublic
from api.schemas.common import Timestamp


class PositionPublic(BaseModel):
    """One fix with the vehicle's state at that moment (rendered by api.services.formats)."""

    time: Timestamp
    lat: float
    lon: float
    altitude_m: int
    speed_kmh: float
    heading_deg: float
    satellites: int
    hdop: float
    fix_valid: bool
    ignition: bool
    doors_locked: bool
    engine_start_inhibited: bool
    external_power: bool
    odometer_m: int
    external_power_mv: int
    battery_mv: int
    gsm_signal: int = Field(description="3GPP CSQ 0..31, 99 unknown")
    warnings: list[str] = Field(
        description="Dashboard warning lights on, lower case: engine, oil_pressure, brake, ..."
    )
    driver_badge: str | None
    received_at: Timestamp
    device_id: str
    buffered: bool = Field(description="The box kept this fix while offline and sent it late")


class PositionsPublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    vehicle_id: str
    from_: Timestamp = Field(alias="from")
    to: Timestamp
    data: list[PositionPublic]
    next_cursor: str | None


class LastPositionPublic(BaseModel):
    vehicle_id: str
    position: PositionPublic | None
    age_s: float | None = Field(description="Seconds since the fix was taken")
    online: bool = Field(description="The vehicle's box is connected now")
    lock_state: LockStatePublic | None = Field(
        default=None, description="Doors and engine-start inhibit (docs/commands.md)"
    )


class FleetPositionPublic(BaseModel):
    vehicle_id: str
    plate: str
    label: str
    position: PositionPublic
    age_s: float


class FleetPositionsPublic(BaseModel):
    data: list[FleetPositionPublic]


class AreaQuery(BaseModel):
    """The map query as a body, for polygons too long for a URL."""

    model_config = ConfigDict(extra="forbid")

    bbox: list[float] | None = Field(
        default=None,
        min_length=4,
        max_length=4,
        description="[min_lon, min_lat, max_lon, max_lat]",
    )
    polygon: dict[str, Any] | None = Field(
        default=None, description="A GeoJSON Polygon or MultiPolygon geometry"
    )


# --- GeoJSON (RFC 7946), for the OpenAPI description of format=geojson ---------------------


class PointGeometry(BaseModel):
    type: Literal["Point"]
    coordinates: list[float] = Field(description="[lon, lat, altitude_m]")


class PointFeature(BaseModel):
    type: Literal["Feature"]
    geometry: PointGeometry
    properties: dict[str, Any]


class PositionsFeatureCollection(BaseModel):
    """format=geojson: one Point feature per position; properties as in the JSON format."""

    type: Literal["FeatureCollection"]
    features: list[PointFeature]


class LineStringGeometry(BaseModel):
    type: Literal["LineString"]
    coordinates: list[list[float]]


class TrackFeature(BaseModel):
    """format=geojson&geometry=linestring: the track as one LineString feature.

    The geometry is null when the range holds fewer than two positions (RFC 7946 §3.1.4).
    """

    type: Literal["Feature"]
    geometry: LineStringGeometry | None
    properties: dict[str, Any]
