from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, create_model

from api.schemas.commands import LockStatePublic
from api.schemas.common import Timestamp
from storage.fields import PUBLIC_POSITION_FIELDS, Kind, PositionField

# The JSON type of each kind of field but PLAIN (served as stored: its own type).
_SERVED_TYPES: dict[Kind, Any] = {
    Kind.EPOCH_MS: Timestamp,
    Kind.WARNING_MASK: list[str],
    Kind.BADGE: str,
    Kind.OBJECT: dict[str, int | str],
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
    last_seen_at: Timestamp | None = Field(
        default=None,
        description="The box's last contact, any record (a fix without GPS too), or its "
        "connection's start when later",
    )
    stale: bool = Field(
        default=False,
        description="The box was heard from more than 120 s after this fix without a valid "
        "one since (a tunnel, a garage): the position is older than the contact",
    )
    online: bool = Field(description="The vehicle's box is connected now")
    lock_state: LockStatePublic | None = Field(
        default=None, description="Doors and engine-start inhibit (docs/commands.md)"
    )
    privacy: str = Field(
        default="off",
        description='Privacy mode now (docs/privacy.md): "off", "active" (the fix is hidden), '
        '"revealed" (an admin with a Gp8-Reason) or "overridden_by_theft_case"',
    )


class FleetPositionPublic(BaseModel):
    vehicle_id: str
    plate: str
    label: str
    position: PositionPublic
    age_s: float


class FleetPositionsPublic(BaseModel):
    data: list[FleetPositionPublic]
    private: list[str] = Field(
        default_factory=list,
        description="Vehicles in privacy mode now (docs/privacy.md), whatever the area asked "
        "(naming them by area would tell where they are): their last fix is not shown",
    )


class AreaQuery(BaseModel):
    """The map query as a body, for polygons too long for a URL."""

    model_config = ConfigDict(extra="forbid")

    # Strict: a boolean is not a coordinate ([false, 0, 0, 0] would read as zeros).
    bbox: list[Annotated[float, Strict()]] | None = Field(
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
