from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from api.schemas.commands import LockStatePublic
from api.schemas.common import Timestamp
from storage.fields import PUBLIC_POSITION_FIELDS, Kind, PositionField

# The JSON type of each kind of field but PLAIN (served as stored: its own type).
_SERVED_TYPES: dict[Kind, Any] = {
    Kind.EPOCH_MS: Timestamp,
    Kind.WARNING_MASK: list[str],
    Kind.BADGE: str,
}


def public_type(field: PositionField) -> Any:
    """The field's type in the API's JSON."""
    served = field.py_type if field.kind is Kind.PLAIN else _SERVED_TYPES[field.kind]
    return served | None if field.nullable else served


def public_description(field: PositionField) -> str:
    """The field's OpenAPI description (docs/api.md shows the same text)."""
    return f"{field.description} ({field.unit})" if field.unit else field.description


# The served fields of storage.fields, in the API's order, each required and described. Built
# at import; mypy sees a plain BaseModel (nothing in api/ reads these attributes: the routes
# render positions with api.services.formats.position_dict).
if TYPE_CHECKING:
    _PositionFields = BaseModel
else:
    _PositionFields = create_model(
        "_PositionFields",
        **{
            f.public_name: (public_type(f), Field(description=public_description(f)))
            for f in PUBLIC_POSITION_FIELDS
        },
    )


class PositionPublic(_PositionFields):
    """One fix with the vehicle's state at that moment (rendered by api.services.formats)."""


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
