"""Map-query geometry: parsing a bbox or a GeoJSON polygon and filtering positions by it.

Parsing raises ValueError with a client-facing message; the route turns it into a 422.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.prepared import prep

from storage.models import Position
from storage.repository import BBox, MapEntry

# A polygon with more vertices than this is not a hand-drawn map area; the cap bounds the CPU
# one request can spend on point-in-polygon tests.
MAX_POLYGON_VERTICES = 10_000
# A polygon longer than this (as JSON text) cannot hold a sane number of vertices.
MAX_POLYGON_CHARS = 500_000


def parse_bbox(values: Iterable[float | str]) -> BBox:
    """``min_lon, min_lat, max_lon, max_lat`` (the GeoJSON bbox order)."""
    parts = list(values)
    if len(parts) != 4:
        raise ValueError("a bbox is 4 numbers: min_lon,min_lat,max_lon,max_lat")
    # bool is an int to float(): [false, 0, 0, 0] is not four numbers.
    if any(isinstance(p, bool) for p in parts):
        raise ValueError("a bbox is 4 numbers: min_lon,min_lat,max_lon,max_lat (not booleans)")
    try:
        min_lon, min_lat, max_lon, max_lat = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError("a bbox is 4 numbers: min_lon,min_lat,max_lon,max_lat") from None
    if not all(math.isfinite(v) for v in (min_lon, min_lat, max_lon, max_lat)):
        raise ValueError("bbox values must be finite numbers")
    if not (-180 <= min_lon <= 180 and -180 <= max_lon <= 180):
        raise ValueError("bbox longitudes must be within -180..180")
    if not (-90 <= min_lat <= 90 and -90 <= max_lat <= 90):
        swapped = all(-90 <= v <= 90 for v in (min_lon, max_lon))
        raise ValueError(
            "bbox latitudes must be within -90..90" + (SWAPPED_HINT if swapped else "")
        )
    if min_lat > max_lat:
        raise ValueError("bbox min_lat is greater than max_lat")
    if min_lon > max_lon:
        raise ValueError(
            "bbox min_lon is greater than max_lon (boxes across the antimeridian are not "
            "supported: send two queries)"
        )
    return (min_lon, min_lat, max_lon, max_lat)


SWAPPED_HINT = (
    "; the order is min_lon,min_lat,max_lon,max_lat (GeoJSON), and this box reads as if "
    "latitude and longitude were swapped"
)


def swapped(bbox: BBox) -> BBox | None:
    """``bbox`` with latitude and longitude exchanged, when that is a valid box too."""
    min_lon, min_lat, max_lon, max_lat = bbox
    if all(-90 <= v <= 90 for v in (min_lon, max_lon)):
        return (min_lat, min_lon, max_lat, max_lon)
    return None


def parse_bbox_text(text: str) -> BBox:
    return parse_bbox(text.split(","))


def parse_polygon_text(text: str) -> Polygon | MultiPolygon:
    if len(text) > MAX_POLYGON_CHARS:
        raise ValueError(f"polygon is longer than {MAX_POLYGON_CHARS} characters")
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"polygon is not JSON: {exc}") from None
    return parse_polygon(value)


def parse_polygon(value: Any) -> Polygon | MultiPolygon:
    """A GeoJSON Polygon or MultiPolygon geometry (a Feature's geometry is accepted too)."""
    if isinstance(value, Mapping) and value.get("type") == "Feature":
        value = value.get("geometry")
    if not isinstance(value, Mapping) or value.get("type") not in ("Polygon", "MultiPolygon"):
        raise ValueError('polygon must be a GeoJSON geometry of type "Polygon" or "MultiPolygon"')
    _check_coordinates(value.get("coordinates"), depth=3 if value["type"] == "Polygon" else 4)
    try:
        geometry = shape(value)
    except (ValueError, TypeError, AttributeError, IndexError, shapely.errors.ShapelyError) as exc:
        raise ValueError(f"polygon coordinates are not valid: {exc}") from None
    if geometry.is_empty:
        raise ValueError("polygon is empty")
    if not geometry.is_valid:
        raise ValueError(f"polygon is not valid: {shapely.is_valid_reason(geometry)}")
    assert isinstance(geometry, Polygon | MultiPolygon)
    return geometry


def _check_coordinates(coordinates: Any, depth: int) -> None:
    """Nested lists of [lon, lat] within range, rings of at least 4 points, vertex cap."""
    count = 0

    def walk(node: Any, level: int) -> None:
        nonlocal count
        if not isinstance(node, list):
            raise ValueError("polygon coordinates must be nested arrays")
        if level == 1:  # a position
            if len(node) < 2 or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in node
            ):
                raise ValueError("a polygon position is [lon, lat] numbers")
            lon, lat = float(node[0]), float(node[1])
            if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                raise ValueError(
                    f"polygon position {node[:2]} is outside lon -180..180, lat -90..90"
                )
            count += 1
            if count > MAX_POLYGON_VERTICES:
                raise ValueError(f"polygon has more than {MAX_POLYGON_VERTICES} vertices")
            return
        if level == 2 and len(node) < 4:
            raise ValueError("a polygon ring needs at least 4 positions (closed)")
        if level > 2 and not node:
            raise ValueError("polygon coordinates must not be empty")
        for child in node:
            walk(child, level - 1)

    walk(coordinates, depth)


def bounds(geometry: Polygon | MultiPolygon) -> BBox:
    min_lon, min_lat, max_lon, max_lat = geometry.bounds
    return (float(min_lon), float(min_lat), float(max_lon), float(max_lat))


def inside_bbox(p: Position, bbox: BBox) -> bool:
    return bbox[0] <= p.lon <= bbox[2] and bbox[1] <= p.lat <= bbox[3]


def filter_inside(entries: Iterable[MapEntry], geometry: Polygon | MultiPolygon) -> list[MapEntry]:
    """The map's entries whose position is inside the polygon or on its boundary."""
    prepared = prep(geometry)
    return [e for e in entries if prepared.covers(shapely.Point(e.position.lon, e.position.lat))]
