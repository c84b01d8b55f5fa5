"""Small spherical-earth helpers for the simulator: distances, bearings, local offsets.

A sphere of the IUGG mean radius is within 0.5 % of the ellipsoid, far better than the
odometer of any real box; the API and the storage use the same formula.
"""

from __future__ import annotations

import math
from typing import NamedTuple

EARTH_RADIUS_M = 6_371_008.8


class LatLon(NamedTuple):
    lat: float
    lon: float


def haversine_m(a: LatLon, b: LatLon) -> float:
    """Great-circle distance between two points, in metres."""
    lat1, lat2 = math.radians(a.lat), math.radians(b.lat)
    dlat = lat2 - lat1
    dlon = math.radians(b.lon - a.lon)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def bearing_deg(a: LatLon, b: LatLon) -> float:
    """Initial course from ``a`` to ``b``, degrees clockwise from true north, in [0, 360)."""
    lat1, lat2 = math.radians(a.lat), math.radians(b.lat)
    dlon = math.radians(b.lon - a.lon)
    x = math.sin(dlon) * math.cos(lat2)
    y = math.cos(lat1) * math.sin(lat2) - math.sin(lat1) * math.cos(lat2) * math.cos(dlon)
    return math.degrees(math.atan2(x, y)) % 360.0


def offset(origin: LatLon, east_m: float, north_m: float) -> LatLon:
    """The point ``east_m``/``north_m`` metres from ``origin`` (local flat-earth projection,
    exact enough within a few tens of kilometres)."""
    lat = origin.lat + math.degrees(north_m / EARTH_RADIUS_M)
    lon = origin.lon + math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(origin.lat))))
    return LatLon(lat, lon)


def interpolate(a: LatLon, b: LatLon, fraction: float) -> LatLon:
    """The point at ``fraction`` (0..1) of the way from ``a`` to ``b``; linear in degrees, which
    for legs of a few hundred metres is indistinguishable from the great circle."""
    return LatLon(a.lat + (b.lat - a.lat) * fraction, a.lon + (b.lon - a.lon) * fraction)


def turn_angle_deg(heading_in: float, heading_out: float) -> float:
    """How much a vehicle turns between two headings: 0 straight on, 180 a U-turn."""
    diff = abs(heading_out - heading_in) % 360.0
    return 360.0 - diff if diff > 180.0 else diff


def local_hour(time_ms: int, lon: float) -> float:
    """Local mean solar time at longitude ``lon`` in hours [0, 24): what "night" means for a
    vehicle there, without a time-zone database."""
    return ((time_ms / 3_600_000) + lon / 15.0) % 24.0
