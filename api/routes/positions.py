from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from api.deps import AuditDep, StoreDep, Viewer
from api.params import DAY_MS, Cursor, Id, TimeRange, time_range
from api.problems import ApiProblem, invalid, problem_responses
from api.schemas.positions import (
    AreaQuery,
    FleetPositionsPublic,
    LastPositionPublic,
    PositionsPublic,
)
from api.services import formats, geo
from api.services.commands import lock_state
from api.services.formats import Format, GeoJsonGeometry
from api.services.paging import WALK_PAGE, all_vehicles, position_pages
from api.times import iso_ms
from storage.models import Position, now_ms
from storage.repository import BBox, Store

router = APIRouter(tags=["positions"], responses=problem_responses(401, 403, 404, 422, 429, 503))

# A JSON page holds at most this many positions (about 5 MB): the cap.
MAX_JSON_LIMIT = 10_000
DEFAULT_JSON_LIMIT = 1000

_EXPORT_CONTENT: dict[str, Any] = {
    "application/geo+json": {
        "schema": {
            "anyOf": [
                {"$ref": "#/components/schemas/PositionsFeatureCollection"},
                {"$ref": "#/components/schemas/TrackFeature"},
            ]
        }
    },
    "text/csv": {"schema": {"type": "string"}},
    "application/gpx+xml": {"schema": {"type": "string"}},
}


# The format depends on Accept: shared caches must key on it.
_VARY = {"Vary": "Accept"}


def _age_s(p: Position, now: int) -> float:
    return round((now - p.time_ms) / 1000, 3)


@router.get("/v1/vehicles/{vehicle_id}/position", response_model=LastPositionPublic)
async def get_last_position(
    vehicle_id: Id, caller: Viewer, store: StoreDep, audit: AuditDep
) -> dict[str, Any]:
    """The vehicle's last known position, its age, and whether its box is connected now."""
    vehicle = await store.vehicles.get(caller.fleet_id, vehicle_id)
    position = await store.telemetry.last_position(caller.fleet_id, vehicle_id)
    connection = await store.devices.connection(vehicle.device_id) if vehicle.device_id else None
    await audit("read", "position", vehicle_id)
    return {
        "vehicle_id": vehicle_id,
        "position": formats.position_dict(position) if position else None,
        "age_s": _age_s(position, now_ms()) if position else None,
        "online": bool(connection and connection.online),
        "lock_state": await lock_state(store, caller.fleet_id, vehicle_id, position),
    }


@router.get(
    "/v1/vehicles/{vehicle_id}/positions",
    response_model=PositionsPublic,
    responses={200: {"content": _EXPORT_CONTENT}, **problem_responses(400, 406)},
)
async def list_positions(
    request: Request,
    vehicle_id: Id,
    caller: Viewer,
    store: StoreDep,
    audit: AuditDep,
    span: Annotated[TimeRange, Depends(time_range(DAY_MS))],
    cursor: Cursor = None,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_JSON_LIMIT,
            description="JSON: positions per page (default 1000). Other formats: the most "
            "positions to return (default: all in the range)",
        ),
    ] = None,
    format: Annotated[Format | None, Query(description="Overrides the Accept header")] = None,
    geometry: Annotated[
        GeoJsonGeometry, Query(description="GeoJSON only: a Point per fix or one LineString")
    ] = GeoJsonGeometry.POINTS,
) -> Response:
    """The vehicle's positions in time order, as JSON pages, GeoJSON, CSV or GPX."""
    fmt = format or formats.negotiate(request.headers.get("accept"))
    if fmt is None:
        raise ApiProblem(
            406,
            "this resource is served as application/json, application/geo+json, text/csv "
            "or application/gpx+xml",
        )
    vehicle = await store.vehicles.get(caller.fleet_id, vehicle_id)
    if fmt is Format.JSON:
        first_limit = limit or DEFAULT_JSON_LIMIT
    else:
        first_limit = min(limit or WALK_PAGE, WALK_PAGE)
    first = await store.telemetry.positions(
        caller.fleet_id,
        vehicle_id,
        from_ms=span.from_ms,
        to_ms=span.to_ms,
        cursor=cursor,
        limit=first_limit,
    )
    await audit(
        "read", "positions", vehicle_id, detail=f"{fmt} {iso_ms(span.from_ms)}/{iso_ms(span.to_ms)}"
    )
    if fmt is Format.JSON:
        body = {
            "vehicle_id": vehicle_id,
            "from": iso_ms(span.from_ms),
            "to": iso_ms(span.to_ms),
            "data": [formats.position_dict(p) for p in first.items],
            "next_cursor": first.next_cursor,
        }
        return Response(formats.dumps(body), media_type=formats.MEDIA_TYPES[fmt], headers=_VARY)
    pages = position_pages(
        store.telemetry,
        caller.fleet_id,
        vehicle_id,
        from_ms=span.from_ms,
        to_ms=span.to_ms,
        first=first,
        limit=limit,
    )
    if fmt is Format.GEOJSON and geometry is GeoJsonGeometry.LINESTRING:
        properties = {
            "vehicle_id": vehicle_id,
            "from": iso_ms(span.from_ms),
            "to": iso_ms(span.to_ms),
        }
        chunks = formats.geojson_linestring(pages, properties)
    elif fmt is Format.GEOJSON:
        chunks = formats.geojson_points(pages)
    elif fmt is Format.CSV:
        chunks = formats.csv_rows(pages)
    else:
        name = " ".join(part for part in (vehicle.plate, vehicle.label) if part) or vehicle.id
        chunks = formats.gpx_track(pages, name)
    media_type = formats.MEDIA_TYPES[fmt]
    if fmt is Format.CSV:
        media_type += "; charset=utf-8; header=present"
    return StreamingResponse(chunks, media_type=media_type, headers=_VARY)


async def _fleet_positions(
    store: Store, fleet_id: str, bbox: BBox | None, polygon: Any
) -> dict[str, Any]:
    """Last positions of the fleet's vehicles, inside the bbox or the polygon when given."""
    shape = None
    if polygon is not None:
        shape = polygon
        bbox = geo.bounds(shape)  # the storage query narrows to the polygon's box first
    positions = await store.telemetry.last_positions(fleet_id, bbox=bbox)
    if shape is not None:
        positions = geo.filter_inside(positions, shape)
    vehicles = await all_vehicles(store.vehicles, fleet_id)
    now = now_ms()
    data = []
    for p in positions:
        vehicle = vehicles.get(p.vehicle_id) if p.vehicle_id else None
        if vehicle is None:  # an unfitted box, or a deleted vehicle
            continue
        data.append(
            {
                "vehicle_id": vehicle.id,
                "plate": vehicle.plate,
                "label": vehicle.label,
                "position": formats.position_dict(p),
                "age_s": _age_s(p, now),
            }
        )
    return {"data": data}


@router.get(
    "/v1/fleet/positions",
    response_model=FleetPositionsPublic,
    responses=problem_responses(400),
)
async def list_fleet_positions(
    caller: Viewer,
    store: StoreDep,
    audit: AuditDep,
    bbox: Annotated[
        str | None,
        Query(
            max_length=200,
            description="min_lon,min_lat,max_lon,max_lat",
            examples=["2.25,48.81,2.42,48.90"],
        ),
    ] = None,
    polygon: Annotated[
        str | None,
        Query(
            max_length=geo.MAX_POLYGON_CHARS,
            description="A GeoJSON Polygon or MultiPolygon geometry, as JSON",
        ),
    ] = None,
) -> dict[str, Any]:
    """The last position of every vehicle of the fleet, optionally inside a bbox or polygon."""
    if bbox is not None and polygon is not None:
        raise invalid(("query", "polygon"), "give bbox or polygon, not both")
    try:
        box = geo.parse_bbox_text(bbox) if bbox is not None else None
    except ValueError as exc:
        raise invalid(("query", "bbox"), str(exc)) from None
    try:
        shape = geo.parse_polygon_text(polygon) if polygon is not None else None
    except ValueError as exc:
        raise invalid(("query", "polygon"), str(exc)) from None
    result = await _fleet_positions(store, caller.fleet_id, box, shape)
    await audit("read", "fleet_positions", None, detail=f"{len(result['data'])} vehicles")
    return result


@router.post(
    "/v1/fleet/positions/search",
    response_model=FleetPositionsPublic,
    responses=problem_responses(400, 413, 415),
)
async def search_fleet_positions(
    body: AreaQuery, caller: Viewer, store: StoreDep, audit: AuditDep
) -> dict[str, Any]:
    """The map query with the area in the body: for polygons too long for a URL."""
    if body.bbox is not None and body.polygon is not None:
        raise invalid(("body", "polygon"), "give bbox or polygon, not both")
    try:
        box = geo.parse_bbox(body.bbox) if body.bbox is not None else None
    except ValueError as exc:
        raise invalid(("body", "bbox"), str(exc)) from None
    try:
        shape = geo.parse_polygon(body.polygon) if body.polygon is not None else None
    except ValueError as exc:
        raise invalid(("body", "polygon"), str(exc)) from None
    result = await _fleet_positions(store, caller.fleet_id, box, shape)
    await audit("read", "fleet_positions", None, detail=f"{len(result['data'])} vehicles")
    return result
