from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from api.audit import Audit
from api.deps import AuditDep, FleetCaller, StoreDep, Viewer
from api.params import (
    DAY_MS,
    Cursor,
    Id,
    Order,
    OrderQuery,
    TimeRange,
    not_acceptable,
    time_range,
)
from api.problems import invalid, problem_responses
from api.schemas.positions import (
    AreaQuery,
    FleetPositionsPublic,
    LastPositionPublic,
    PositionsPublic,
)
from api.services import formats, geo
from api.services.commands import lock_state
from api.services.exports import attachment
from api.services.formats import Format, GeoJsonGeometry
from api.services.paging import WALK_PAGE, position_pages
from api.services.privacy import privacy_view
from api.times import age_s, iso_ms
from storage.models import Page, Position, now_ms
from storage.privacy import FleetPrivacy
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


A = TypeVar("A")
B = TypeVar("B")


async def _both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Both results, their storage calls issued together: they queue on the database's thread
    back to back, one round trip instead of two. An error is raised by position, not by time,
    so the first step's (an unknown vehicle: 404) wins as when they ran one after the other."""
    a, b = await asyncio.gather(first, second, return_exceptions=True)
    if isinstance(a, BaseException):
        raise a
    if isinstance(b, BaseException):
        raise b
    return a, b


# A fix is stale when the box was heard from this much later without a valid fix since: two
# missed reports at the slowest usual interval (60 s), not a second's jitter.
STALE_AFTER_MS = 120_000


async def _last_seen_ms(
    store: Store, fleet_id: str, vehicle_id: str, last: Position | None, now: int
) -> int | None:
    """When the box last sent a record: the last valid fix only moves with valid fixes, so
    the records after it (fixes without GPS) are read from the history. One page of them at
    most (hours of 1 s records): a longer run without a fix is stale either way."""
    if last is None:
        return None
    after = await store.telemetry.positions(
        fleet_id,
        vehicle_id,
        from_ms=last.time_ms + 1,
        # A box's clock may run ahead of ours: its records are still contacts.
        to_ms=now + DAY_MS,
        limit=WALK_PAGE,
    )
    return max([last.received_ms, *(p.received_ms for p in after.items)])


@router.get("/v1/vehicles/{vehicle_id}/position", response_model=LastPositionPublic)
async def get_last_position(
    vehicle_id: Id, caller: Viewer, store: StoreDep, audit: AuditDep, request: Request
) -> dict[str, Any]:
    """The vehicle's last valid fix and its age, the box's last contact (``last_seen_at``,
    any record) and whether the fix is stale, and whether the box is connected now."""
    vehicle = await store.vehicles.get(caller.fleet_id, vehicle_id)
    position = await store.telemetry.last_position(caller.fleet_id, vehicle_id)
    connection = await store.devices.connection(vehicle.device_id) if vehicle.device_id else None
    await audit("read", "position", vehicle_id)
    now = now_ms()
    # Privacy mode (docs/privacy.md): a private last fix is not shown, nor its age.
    view = await privacy_view(store, caller, request, audit, vehicle_id)
    if position is not None and not view.visible(position):
        position = None
    seen_ms = await _last_seen_ms(store, caller.fleet_id, vehicle_id, position, now)
    if connection is not None and connection.online:
        seen_ms = max(seen_ms or 0, connection.since_ms)
    return {
        "vehicle_id": vehicle_id,
        "position": formats.position_dict(position) if position else None,
        "age_s": age_s(position.time_ms, now) if position else None,
        "last_seen_at": iso_ms(seen_ms) if seen_ms is not None else None,
        "stale": bool(
            position and seen_ms is not None and seen_ms - position.received_ms > STALE_AFTER_MS
        ),
        "online": bool(connection and connection.online),
        "lock_state": await lock_state(store, caller.fleet_id, vehicle_id, position),
        "privacy": view.state(vehicle_id, now, now + 1),
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
    order: OrderQuery = Order.ASC,
) -> Response:
    """The vehicle's positions in time order (JSON: newest first with ``order=desc``), as
    JSON pages, GeoJSON, CSV or GPX."""
    fmt = format or formats.negotiate(request.headers.get("accept"))
    if fmt is None:
        raise not_acceptable(list(formats.MEDIA_TYPES.values()))
    if order.newest_first and fmt is not Format.JSON:
        # A track runs forward: GPX readers and a LineString take the points as driven.
        raise invalid(
            ("query", "order"),
            f"exports ({fmt}) are in time order; order=desc is for the JSON pages",
            order.value,
        )
    if fmt is Format.JSON:
        first_limit = limit or DEFAULT_JSON_LIMIT
    else:
        first_limit = min(limit or WALK_PAGE, WALK_PAGE)
    # The first page, the vehicle and the privacy facts read together, the page's read queued
    # first: the two short ones are answered right after it, in the same wake-up of the loop.
    # Queued before it, their answers would wake the loop while the page is still being read,
    # and the loop would then wait for the GIL the reader thread holds between rows (up to the
    # interpreter's 5 ms switch interval). Errors are raised in the order of the checks: an
    # unknown vehicle (404) before a bad cursor.
    first, vehicle, facts = await asyncio.gather(
        store.telemetry.positions(
            caller.fleet_id,
            vehicle_id,
            from_ms=span.from_ms,
            to_ms=span.to_ms,
            cursor=cursor,
            limit=first_limit,
            newest_first=order.newest_first,
        ),
        store.vehicles.get(caller.fleet_id, vehicle_id),
        store.privacy.fleet(caller.fleet_id, vehicle_id),
        return_exceptions=True,
    )
    if isinstance(vehicle, BaseException):
        raise vehicle
    if isinstance(first, BaseException):
        raise first
    if isinstance(facts, BaseException):
        raise facts
    logged = audit(
        "read", "positions", vehicle_id, detail=f"{fmt} {iso_ms(span.from_ms)}/{iso_ms(span.to_ms)}"
    )
    if fmt is Format.JSON:
        # The access-log commit (an fsync) runs while the page is rendered; both are done
        # before anything is answered, so a read that cannot be logged is still not answered.
        _, body = await asyncio.gather(
            logged, _json_page(store, caller, request, audit, vehicle_id, span, first, facts)
        )
        return Response(body, media_type=formats.MEDIA_TYPES[fmt], headers=_VARY)
    await logged
    view = await privacy_view(store, caller, request, audit, vehicle_id, facts=facts)
    pages = position_pages(
        store.telemetry,
        caller.fleet_id,
        vehicle_id,
        from_ms=span.from_ms,
        to_ms=span.to_ms,
        first=first,
        limit=limit,
    )
    pages = view.hide_pages(pages, vehicle_id, span.from_ms, span.to_ms)
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
    # A download names itself after the vehicle and the range, not "positions".
    download = attachment(
        vehicle.plate or vehicle.id, iso_ms(span.from_ms), iso_ms(span.to_ms), extension=fmt.value
    )
    return StreamingResponse(chunks, media_type=media_type, headers={**_VARY, **download})


async def _json_page(
    store: Store,
    caller: FleetCaller,
    request: Request,
    audit: Audit,
    vehicle_id: str,
    span: TimeRange,
    page: Page[Position],
    facts: FleetPrivacy,
) -> bytes:
    """A JSON page of the history, its private fixes left out (serialised by orjson directly:
    no response model validates each fix again).

    Answered whole, not streamed: measured, streaming the parts as they render let the first
    byte out earlier but the last one later (31-35 ms against 27-28 for a day of history), the
    sends and the rendering taking turns on the loop."""
    view = await privacy_view(store, caller, request, audit, vehicle_id, facts=facts)
    shown = view.hide(page.items, vehicle_id, span.from_ms, span.to_ms)
    return formats.dumps(
        {
            "vehicle_id": vehicle_id,
            "from": iso_ms(span.from_ms),
            "to": iso_ms(span.to_ms),
            "privacy": view.state(vehicle_id, span.from_ms, span.to_ms),
            "data": await formats.positions_json(shown),
            "next_cursor": page.next_cursor,
        }
    )


async def _fleet_positions(
    store: Store,
    caller: FleetCaller,
    request: Request,
    audit: Audit,
    bbox: BBox | None,
    polygon: Any,
) -> dict[str, Any]:
    """Last positions of the fleet's vehicles, inside the bbox or the polygon when given."""
    fleet_id = caller.fleet_id
    shape = None
    if polygon is not None:
        shape = polygon
        bbox = geo.bounds(shape)  # the storage query narrows to the polygon's box first
    # The vehicles' plates and labels come with their fixes (one query): only the vehicles
    # the answer names are read, not the whole fleet.
    view, entries = await _both(
        # Of the vehicles that exist: a vehicle deleted since its privacy settings is not named.
        privacy_view(store, caller, request, audit, existing=True),
        store.telemetry.fleet_map(fleet_id, bbox=bbox),
    )
    if shape is not None:
        entries = geo.filter_inside(entries, shape)
    now = now_ms()
    shown = [e for e in entries if view.visible(e.position)]
    # The fixes rendered in one pass (formats.render_positions), not one call each.
    rendered = formats.render_positions([e.position for e in shown])
    data = [
        {
            "vehicle_id": e.vehicle_id,
            "plate": e.plate,
            "label": e.label,
            "position": fix,
            "age_s": age_s(e.position.time_ms, now),
        }
        for e, fix in zip(shown, rendered, strict=True)
    ]
    # Named whatever the area: listing them by area would tell where they are.
    return {"data": data, "private": sorted(view.active_at(now))}


def _map_answer(result: dict[str, Any]) -> Response:
    # Serialised here rather than through the response model: validating every vehicle's
    # fix again costs more than the query (the model still documents the answer).
    return Response(formats.dumps(result), media_type="application/json")


@router.get(
    "/v1/fleet/positions",
    response_model=FleetPositionsPublic,
    responses=problem_responses(400),
)
async def list_fleet_positions(
    request: Request,
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
) -> Response:
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
    result = await _fleet_positions(store, caller, request, audit, box, shape)
    if box is not None and not result["data"]:
        await _refuse_swapped(store, caller.fleet_id, box, ("query", "bbox"))
    await audit("read", "fleet_positions", None, detail=f"{len(result['data'])} vehicles")
    return _map_answer(result)


async def _refuse_swapped(store: Store, fleet_id: str, box: BBox, loc: tuple[str, ...]) -> None:
    """422 when an empty box finds vehicles with latitude and longitude exchanged: the
    likelier reading is a swapped box (48.8,2.2,... for Paris), not an empty area."""
    other = geo.swapped(box)
    if other is not None and await store.telemetry.last_positions(fleet_id, bbox=other):
        raise invalid(
            loc,
            "no vehicle is inside this bbox but some are with lat and lon exchanged"
            + geo.SWAPPED_HINT,
        )


@router.post(
    "/v1/fleet/positions/search",
    response_model=FleetPositionsPublic,
    responses=problem_responses(400, 413, 415),
)
async def search_fleet_positions(
    body: AreaQuery, caller: Viewer, store: StoreDep, audit: AuditDep, request: Request
) -> Response:
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
    result = await _fleet_positions(store, caller, request, audit, box, shape)
    if box is not None and not result["data"]:
        await _refuse_swapped(store, caller.fleet_id, box, ("body", "bbox"))
    await audit("read", "fleet_positions", None, detail=f"{len(result['data'])} vehicles")
    return _map_answer(result)
