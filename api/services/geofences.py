"""Geofence validation and changes: what the routes of api/routes/geofences.py call.

Two levels of checks, each message saying what to fix:

- `parse_geometry` (pydantic, on the body): GeoJSON as RFC 7946 has it — a Polygon,
  MultiPolygon or Point; positions [longitude, latitude] in range (a position out of range that
  would be in range swapped is called swapped); rings of at least four positions, closed; valid
  polygons (no self-intersection: shapely's `is_valid_reason` is in the message);
- `check_fence` (once a change is merged with the stored fence): a sane fence with its radius
  and margin (tracking.fence_problem: not degenerate, not continent-sized, inside reachable).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import shapely
from shapely.geometry import shape

from api.problems import ApiProblem, invalid
from storage.errors import NotFound
from storage.models import Geofence, new_id
from storage.repository import Store
from tracking import fence_problem

if TYPE_CHECKING:
    from api.schemas.geofences import GeofenceCreate, GeofenceUpdate

# A fence is drawn by hand or imported from a map: 10,000 vertices is a detailed country
# outline; the cap bounds the CPU of validating and testing one fence.
MAX_FENCE_VERTICES = 10_000
# Vehicles listed in one fence (more: apply it to the whole fleet).
MAX_FENCE_VEHICLES = 1000
# Fences per fleet: the geofence handler holds all of a fleet's fences in memory.
MAX_GEOFENCES_PER_FLEET = 10_000

_TYPES = ("Polygon", "MultiPolygon", "Point")
_REASON = re.compile(r"(.+?)\s*\[(\S+) (\S+)\]")
_ORDER = "GeoJSON positions are [longitude, latitude]"


def parse_geometry(value: object) -> dict[str, object]:
    """The fence geometry as stored: ``{"type", "coordinates"}``, positions [lon, lat] as floats
    (an altitude is dropped). A GeoJSON Feature stands for its geometry. ValueError otherwise."""
    if isinstance(value, Mapping) and value.get("type") == "Feature":
        value = value.get("geometry")
    if not isinstance(value, Mapping) or value.get("type") not in _TYPES:
        raise ValueError(
            'geometry must be a GeoJSON geometry of type "Polygon", "MultiPolygon" or "Point" '
            "(a circle, with radius_m)"
        )
    kind = value["type"]
    coordinates = value.get("coordinates")
    counter = [0]
    if kind == "Point":
        return {"type": kind, "coordinates": _position(coordinates, "the point", counter)}
    if kind == "Polygon":
        normalized: list[Any] = _polygon(coordinates, "", counter)
    else:
        if not isinstance(coordinates, list) or not coordinates:
            raise ValueError("a MultiPolygon's coordinates are a non-empty array of polygons")
        normalized = [_polygon(p, f"polygon {i}, ", counter) for i, p in enumerate(coordinates)]
    geometry = {"type": kind, "coordinates": normalized}
    polygon = shape(geometry)
    if polygon.is_empty:
        raise ValueError("the polygon is empty")
    if not polygon.is_valid:
        raise ValueError(
            f"the polygon is not valid: {_reason(shapely.is_valid_reason(polygon))}; edges must "
            "not cross, rings must not touch themselves, holes must lie inside their polygon"
        )
    return geometry


def _reason(reason: str) -> str:
    """GEOS says "Self-intersection[2.355 48.855]": the place, in the order positions have."""
    found = _REASON.fullmatch(reason)
    if found is None:
        return reason
    what, lon, lat = found.groups()
    return f"{what} at [{lon}, {lat}] ([longitude, latitude])"


def _polygon(rings: object, where: str, counter: list[int]) -> list[list[list[float]]]:
    if not isinstance(rings, list) or not rings:
        raise ValueError(f"{where}a polygon's coordinates are a non-empty array of rings")
    out = []
    for r, ring in enumerate(rings):
        at = f"{where}ring {r}"
        if not isinstance(ring, list) or len(ring) < 4:
            raise ValueError(
                f"{at}: a ring needs at least 4 positions, the last equal to the first"
            )
        points = [_position(p, f"{at}, position {i}", counter) for i, p in enumerate(ring)]
        if points[0] != points[-1]:
            raise ValueError(
                f"{at} is not closed: its last position {points[-1]} must equal its first "
                f"{points[0]}"
            )
        out.append(points)
    return out


def _position(node: object, where: str, counter: list[int]) -> list[float]:
    counter[0] += 1
    if counter[0] > MAX_FENCE_VERTICES:
        raise ValueError(f"the geometry has more than {MAX_FENCE_VERTICES:,} positions")
    if (
        not isinstance(node, list)
        or not 2 <= len(node) <= 3
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in node)
    ):
        raise ValueError(f"{where}: {_ORDER}, two numbers (a third, the altitude, is ignored)")
    lon, lat = float(node[0]), float(node[1])
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise ValueError(f"{where}: coordinates must be finite numbers")
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        swapped = -180 <= lat <= 180 and -90 <= lon <= 90
        hint = f"; these look swapped: [{lat:g}, {lon:g}] would be in range" if swapped else ""
        raise ValueError(
            f"{where}: [{lon:g}, {lat:g}] is out of range: {_ORDER}, longitude -180..180 and "
            f"latitude -90..90{hint}"
        )
    return [lon, lat]


def check_fence(fence: Geofence) -> None:
    """422 when ``fence`` is not a sane fence (located at the field to change)."""
    problem = fence_problem(fence.geometry, fence.radius_m, fence.margin_m)
    if problem is not None:
        raise invalid(("body", problem.field), problem.message)


async def check_vehicles(
    store: Store, fleet_id: str, vehicle_ids: Sequence[str]
) -> tuple[str, ...]:
    """The listed vehicles, each once; 422 naming the first that is not a vehicle of the fleet
    (another fleet's vehicle is not named differently from one that does not exist)."""
    unique = tuple(dict.fromkeys(vehicle_ids))
    for vehicle_id in unique:
        try:
            await store.vehicles.get(fleet_id, vehicle_id)
        except NotFound:
            raise invalid(
                ("body", "vehicle_ids", vehicle_ids.index(vehicle_id)),
                f"no vehicle {vehicle_id} in this fleet",
            ) from None
    return unique


async def check_room(store: Store, fleet_id: str) -> None:
    if await store.geofences.count(fleet_id) >= MAX_GEOFENCES_PER_FLEET:
        raise ApiProblem(
            409,
            f"the fleet has {MAX_GEOFENCES_PER_FLEET:,} geofences, the most it may have",
            type_="urn:gp8:problem:geofence-limit",
        )


async def new_fence(store: Store, fleet_id: str, body: GeofenceCreate, now_ms: int) -> Geofence:
    """The fence ``body`` describes, checked (not stored yet)."""
    fence = Geofence(
        id=new_id("gfn"),
        fleet_id=fleet_id,
        name=body.name,
        geometry=body.geometry,
        created_ms=now_ms,
        updated_ms=now_ms,
        radius_m=body.radius_m,
        vehicle_ids=None,
        schedule=None if body.schedule is None else body.schedule.model(),
        margin_m=body.margin_m,
        dwell_s=body.dwell_s,
        speed_limit_kmh=body.speed_limit_kmh,
    )
    check_fence(fence)
    if body.vehicle_ids is not None:
        vehicle_ids = await check_vehicles(store, fleet_id, body.vehicle_ids)
        fence = dataclasses.replace(fence, vehicle_ids=vehicle_ids)
    return fence


async def changed_fence(
    store: Store, fence: Geofence, body: GeofenceUpdate, now_ms: int
) -> Geofence:
    """``fence`` with ``body``'s changes (GeofenceUpdate says which nulls clear), checked."""
    given = body.model_fields_set
    # Strictly later than before, even on a clock behind: the geofence handler recompiles a
    # fence when its updated_ms changes.
    changes: dict[str, Any] = {"updated_ms": max(now_ms, fence.updated_ms + 1)}
    for name in ("name", "geometry", "margin_m", "dwell_s"):
        if getattr(body, name) is not None:
            changes[name] = getattr(body, name)
    if "radius_m" in given:
        changes["radius_m"] = body.radius_m
    elif body.geometry is not None and body.geometry["type"] != "Point":
        changes["radius_m"] = None  # a polygon now: the old circle's radius means nothing
    if "speed_limit_kmh" in given:
        changes["speed_limit_kmh"] = body.speed_limit_kmh
    if "schedule" in given:
        changes["schedule"] = None if body.schedule is None else body.schedule.model()
    if "vehicle_ids" in given:
        changes["vehicle_ids"] = (
            None
            if body.vehicle_ids is None
            else await check_vehicles(store, fence.fleet_id, body.vehicle_ids)
        )
    updated = dataclasses.replace(fence, **changes)
    check_fence(updated)
    return updated
