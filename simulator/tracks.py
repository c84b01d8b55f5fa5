"""Reading a recorded track to replay: GPX 1.0/1.1 or GeoJSON, into `TrackPoint`s.

GPX: every ``trkpt`` of every track segment in document order (``rtept`` when there is no
track), with its ``time`` when present. GeoJSON: the coordinates of LineString and
MultiLineString geometries, of Features holding one, and of every Feature of a
FeatureCollection, in order; a FeatureCollection of Points is read as one line, with each
point's ``time`` property (ISO 8601 or epoch milliseconds) when present.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from typing import Any

from simulator.trajectory import TrackPoint

# A track file is read whole into memory; a day of 1 s fixes in GPX is about 10 MB.
MAX_TRACK_BYTES = 64 * 1024 * 1024


class TrackError(ValueError):
    """The file is not a track we can replay."""


def load_track(path: Path) -> list[TrackPoint]:
    """The points of the GPX (.gpx) or GeoJSON (.geojson/.json) file at ``path``."""
    try:
        size = path.stat().st_size
        if size > MAX_TRACK_BYTES:
            raise TrackError(f"{path}: {size} bytes is more than {MAX_TRACK_BYTES}")
        data = path.read_bytes()
    except OSError as exc:
        raise TrackError(f"{path}: {exc.strerror or exc}") from exc
    suffix = path.suffix.lower()
    if suffix == ".gpx" or data.lstrip()[:1] == b"<":
        points = parse_gpx(data)
    else:
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise TrackError(f"{path}: not JSON: {exc}") from exc
        points = parse_geojson(document)
    if len(points) < 2:
        raise TrackError(f"{path}: a track needs at least two points, found {len(points)}")
    return points


def _parse_time(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            return None  # a time without a zone cannot be placed; ignore it
        return int(moment.timestamp() * 1000)
    return None


def _point(lat: object, lon: object, time_ms: int | None) -> TrackPoint:
    try:
        la, lo = float(lat), float(lon)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise TrackError(f"bad coordinates {lat!r}, {lon!r}") from exc
    if not (-90 <= la <= 90 and -180 <= lo <= 180):
        raise TrackError(f"coordinates out of range: {la}, {lo}")
    return TrackPoint(la, lo, time_ms)


def parse_gpx(data: bytes) -> list[TrackPoint]:
    try:
        # The user's own file; expat does not fetch external entities.
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise TrackError(f"not GPX: {exc}") from exc

    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]

    points: list[TrackPoint] = []
    for kind in ("trkpt", "rtept"):
        for element in root.iter():
            if local(element.tag) != kind:
                continue
            time_ms = None
            for child in element:
                if local(child.tag) == "time" and child.text:
                    time_ms = _parse_time(child.text)
            points.append(_point(element.get("lat"), element.get("lon"), time_ms))
        if points:
            break
    return points


def parse_geojson(document: Any) -> list[TrackPoint]:
    points: list[TrackPoint] = []

    def line(coordinates: Any) -> None:
        if not isinstance(coordinates, list):
            raise TrackError("LineString coordinates must be a list")
        for position in coordinates:
            if not isinstance(position, list) or len(position) < 2:
                raise TrackError(f"bad position {position!r}")
            points.append(_point(position[1], position[0], None))  # GeoJSON is lon, lat

    def geometry(geom: Any, properties: Any) -> None:
        if not isinstance(geom, dict):
            return
        kind = geom.get("type")
        if kind == "LineString":
            line(geom.get("coordinates"))
        elif kind == "MultiLineString":
            for part in geom.get("coordinates") or []:
                line(part)
        elif kind == "Point":
            position = geom.get("coordinates")
            if not isinstance(position, list) or len(position) < 2:
                raise TrackError(f"bad position {position!r}")
            time_ms = _parse_time(properties.get("time")) if isinstance(properties, dict) else None
            points.append(_point(position[1], position[0], time_ms))
        elif kind == "GeometryCollection":
            for part in geom.get("geometries") or []:
                geometry(part, None)

    if not isinstance(document, dict):
        raise TrackError("GeoJSON must be an object")
    kind = document.get("type")
    if kind == "FeatureCollection":
        for feature in document.get("features") or []:
            if isinstance(feature, dict):
                geometry(feature.get("geometry"), feature.get("properties"))
    elif kind == "Feature":
        geometry(document.get("geometry"), document.get("properties"))
    else:
        geometry(document, None)
    return points
