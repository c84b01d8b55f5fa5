"""Fence shapes in metres: a local projection, the hysteresis zones, the size rules. Pure.

Why a local projection: margins and radii are metres, GeoJSON is degrees. Each fence gets its
own equirectangular frame centred on its bounding box: ``x = (lon - lon0) * cos(lat0) * k``,
``y = (lat - lat0) * k`` with ``k`` the metres of a degree of latitude on the mean Earth sphere.
The map is affine in (lon, lat), so straight polygon edges stay straight and whether a point is
inside a polygon is exactly what it is on the [lon, lat] plane (RFC 7946 draws edges that way).
Only distances are approximate: east-west scale drifts from the frame's by ``tan(lat0) * dlat``,
about 0.15 % at the edges of a 10 km fence at 60° N and about 7 % at the edges of the largest
fence allowed (`MAX_FENCE_SPAN_M`) that far north — a 25 m margin measured as 23 to 27 m there.
The sphere itself is within 0.6 % of the WGS 84 ellipsoid. No pyproj: nothing here needs better.

Hysteresis zones (tracking/geofence_logic.py): a position at least ``margin_m`` inside the fence
is INSIDE, at least ``margin_m`` outside it is OUTSIDE, in between is neither. For a polygon
these are two prepared polygons in the fence's frame, the fence shrunk and grown by the margin
(`shapely.buffer`; round joins approximate the true distance to within 0.5 % of the margin);
for a circle, the distance to the centre against radius ± margin.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import numpy as np
import shapely
from shapely.geometry import shape

from storage.models import FenceSide, Geofence

# Mean Earth radius (IUGG), and so the metres of one degree of latitude.
EARTH_RADIUS_M = 6_371_008.8
M_PER_DEG = EARTH_RADIUS_M * math.pi / 180

# Sane sizes. The smallest: a parking space is 12 m²; below 100 m² (or a 10 m radius) a fence is
# smaller than GPS error and would only ever flap. The largest: 500 km across keeps the local
# projection's error small (above) and rejects continent-sized drawings and swapped coordinates.
MIN_FENCE_AREA_M2 = 100.0
MIN_RADIUS_M = 10.0
MAX_FENCE_SPAN_M = 500_000.0
MAX_RADIUS_M = MAX_FENCE_SPAN_M / 2
# Near the poles cos(lat) vanishes and a local frame degenerates; no fleet drives there.
MAX_FENCE_LATITUDE = 85.0

BBox = tuple[float, float, float, float]  # min_lon, min_lat, max_lon, max_lat


@dataclass(frozen=True, slots=True)
class LocalFrame:
    """An equirectangular frame around (lon0, lat0), in metres."""

    lon0: float
    lat0: float
    kx: float  # metres per degree of longitude at lat0
    ky: float  # metres per degree of latitude

    @classmethod
    def around(cls, lon0: float, lat0: float) -> LocalFrame:
        return cls(lon0, lat0, M_PER_DEG * math.cos(math.radians(lat0)), M_PER_DEG)

    def xy(self, lon: float, lat: float) -> tuple[float, float]:
        return (lon - self.lon0) * self.kx, (lat - self.lat0) * self.ky

    def lonlat(self, x: float, y: float) -> tuple[float, float]:
        return self.lon0 + x / self.kx, self.lat0 + y / self.ky

    def project(self, geometry: Any) -> Any:
        """A shapely geometry in [lon, lat] to this frame."""
        origin = np.array([self.lon0, self.lat0])
        scale = np.array([self.kx, self.ky])
        return shapely.transform(geometry, lambda coords: (coords - origin) * scale)


@dataclass(frozen=True, slots=True, eq=False)
class FenceShape:
    """A fence's hysteresis zones in its local frame (prepared: tested many times)."""

    frame: LocalFrame
    margin_m: float
    bounds: BBox  # of everything not OUTSIDE, in degrees: what the spatial index holds
    inner: Any = None  # polygon: at least margin_m inside
    outer: Any = None  # polygon: less than margin_m outside (the fence grown by the margin)
    radius_m: float | None = None  # a circle around the frame's origin

    def classify(self, lon: float, lat: float) -> FenceSide | None:
        """INSIDE or OUTSIDE beyond the margin, None in the band between."""
        x, y = self.frame.xy(lon, lat)
        if self.radius_m is not None:
            d = math.hypot(x, y)
            if d <= self.radius_m - self.margin_m:
                return FenceSide.INSIDE
            if d >= self.radius_m + self.margin_m:
                return FenceSide.OUTSIDE
            return None
        if shapely.contains_xy(self.inner, x, y):
            return FenceSide.INSIDE
        if shapely.intersects_xy(self.outer, x, y):
            return None
        return FenceSide.OUTSIDE


def lonlat_geometry(geometry: Mapping[str, object]) -> Any:
    """The shapely geometry of a stored (already validated) GeoJSON fence geometry."""
    return shape(geometry)


def circle_center(geometry: Mapping[str, object]) -> tuple[float, float]:
    coordinates = cast(list[float], geometry["coordinates"])
    return float(coordinates[0]), float(coordinates[1])


def compile_shape(
    geometry: Mapping[str, object], radius_m: float | None, margin_m: float
) -> FenceShape:
    """The zones of a validated fence geometry (`fence_problem` says whether it is one)."""
    if geometry.get("type") == "Point":
        if radius_m is None:
            raise ValueError("a Point fence needs radius_m")
        lon0, lat0 = circle_center(geometry)
        frame = LocalFrame.around(lon0, lat0)
        reach = radius_m + margin_m
        min_lon, min_lat = frame.lonlat(-reach, -reach)
        max_lon, max_lat = frame.lonlat(reach, reach)
        return FenceShape(frame, margin_m, (min_lon, min_lat, max_lon, max_lat), radius_m=radius_m)
    polygon = lonlat_geometry(geometry)
    min_lon, min_lat, max_lon, max_lat = polygon.bounds
    frame = LocalFrame.around((min_lon + max_lon) / 2, (min_lat + max_lat) / 2)
    metric = frame.project(polygon)
    if margin_m > 0:
        inner = shapely.buffer(metric, -margin_m)
        outer = shapely.buffer(metric, margin_m)
    else:
        inner = outer = metric
    shapely.prepare(inner)
    shapely.prepare(outer)
    x0, y0, x1, y1 = outer.bounds
    lo_lon, lo_lat = frame.lonlat(x0, y0)
    hi_lon, hi_lat = frame.lonlat(x1, y1)
    return FenceShape(frame, margin_m, (lo_lon, lo_lat, hi_lon, hi_lat), inner=inner, outer=outer)


def fence_shape(fence: Geofence) -> FenceShape:
    return compile_shape(fence.geometry, fence.radius_m, fence.margin_m)


class FenceProblem(NamedTuple):
    """Why a fence is not sane: the field to change (``geometry``, ``radius_m`` or
    ``margin_m``) and a message for whoever drew it."""

    field: str
    message: str


def fence_problem(
    geometry: Mapping[str, object], radius_m: float | None, margin_m: float
) -> FenceProblem | None:
    """Why a structurally valid fence geometry is not a sane fence, or None.

    ``geometry`` is GeoJSON whose positions are known to be [lon, lat] in range and whose
    polygons are valid (the API checks those first, with its own messages).
    """
    polar = FenceProblem(
        "geometry", f"fences beyond latitude ±{MAX_FENCE_LATITUDE:g}° are not supported"
    )
    if geometry.get("type") == "Point":
        _, lat = circle_center(geometry)
        if abs(lat) > MAX_FENCE_LATITUDE:
            return polar
        if radius_m is None:
            return FenceProblem("radius_m", "a Point fence is a circle: it needs radius_m (metres)")
        if not MIN_RADIUS_M <= radius_m <= MAX_RADIUS_M:
            return FenceProblem(
                "radius_m", f"radius_m must be within {MIN_RADIUS_M:g}..{MAX_RADIUS_M:g} metres"
            )
        if margin_m >= radius_m:
            return FenceProblem(
                "margin_m",
                f"margin_m ({margin_m:g} m) must be smaller than radius_m ({radius_m:g} m): a "
                "vehicle counts as inside only once margin_m inside the fence",
            )
        # The circle's north and south edges must stay clear of the poles too.
        if abs(lat) + (radius_m + margin_m) / M_PER_DEG > MAX_FENCE_LATITUDE:
            return polar
        return None
    if radius_m is not None:
        return FenceProblem(
            "radius_m", "radius_m is only for a Point fence (a circle); a polygon has its outline"
        )
    polygon = lonlat_geometry(geometry)
    min_lon, min_lat, max_lon, max_lat = polygon.bounds
    if max(abs(min_lat), abs(max_lat)) > MAX_FENCE_LATITUDE:
        return polar
    frame = LocalFrame.around((min_lon + max_lon) / 2, (min_lat + max_lat) / 2)
    span = max((max_lon - min_lon) * frame.kx, (max_lat - min_lat) * frame.ky)
    if span > MAX_FENCE_SPAN_M:
        hint = (
            " (a fence across the antimeridian is not supported: split it in two)"
            if max_lon - min_lon > 180
            else ""
        )
        return FenceProblem(
            "geometry",
            f"the fence is {span / 1000:,.0f} km across; at most "
            f"{MAX_FENCE_SPAN_M / 1000:,.0f} km is allowed{hint}",
        )
    metric = frame.project(polygon)
    if metric.area < MIN_FENCE_AREA_M2:
        return FenceProblem(
            "geometry",
            f"the fence covers {metric.area:,.1f} m²; at least {MIN_FENCE_AREA_M2:g} m² is "
            "needed (a smaller area is within GPS error)",
        )
    if margin_m > 0 and shapely.buffer(metric, -margin_m).is_empty:
        return FenceProblem(
            "margin_m",
            f"margin_m ({margin_m:g} m) is too large for this fence: no point is that far "
            "inside it, so a vehicle could never count as inside",
        )
    return None
