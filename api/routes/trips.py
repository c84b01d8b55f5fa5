from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from api.deps import AuditDep, StoreDep, Viewer
from api.params import DAY_MS, Id, TimeRange, time_range
from api.problems import problem_responses
from api.schemas.trips import MileagePublic, TripsPublic
from api.services.exports import (
    CSV_CONTENT,
    ListFormat,
    attachment,
    csv_download,
    list_format,
    single,
)
from api.services.paging import position_pages
from api.services.privacy import privacy_view
from api.services.trips import MileageCounter, Place, TripBuilder
from api.times import iso_ms

router = APIRouter(
    prefix="/v1/vehicles/{vehicle_id}",
    tags=["trips"],
    responses=problem_responses(401, 403, 404, 422, 429, 503),
)


def _place(place: Place) -> dict[str, Any]:
    return {"time": iso_ms(place.time_ms), "lat": place.lat, "lon": place.lon}


# The CSV export's columns: a trip per row, its places flattened.
TRIP_CSV_COLUMNS = (
    "start_time",
    "start_lat",
    "start_lon",
    "end_time",
    "end_lat",
    "end_lon",
    "distance_m",
    "duration_s",
    "max_speed_kmh",
    "avg_speed_kmh",
    "complete",
)


def _trip_row(trip: dict[str, Any]) -> dict[str, Any]:
    row = {k: v for k, v in trip.items() if k not in ("start", "end")}
    for end in ("start", "end"):
        place = trip[end] or {}
        row.update({f"{end}_{name}": place.get(name) for name in ("time", "lat", "lon")})
    return row


@router.get("/trips", response_model=TripsPublic, responses={200: {"content": CSV_CONTENT}})
async def list_trips(
    request: Request,
    vehicle_id: Id,
    caller: Viewer,
    store: StoreDep,
    audit: AuditDep,
    span: Annotated[TimeRange, Depends(time_range(DAY_MS))],
    format: Annotated[
        ListFormat | None, Query(description="json or csv (a trip per row); overrides Accept")
    ] = None,
) -> Any:
    """Trips (ignition on → off) in the range, with places, distance, duration and speeds.
    Privacy mode (docs/privacy.md): private time is left out, cutting the trips at its edges."""
    fmt = list_format(format, request.headers.get("accept"))
    vehicle = await store.vehicles.get(caller.fleet_id, vehicle_id)
    # Before any position is read: an admin's reveal is logged first (api/services/privacy.py).
    view = await privacy_view(store, caller, request, audit, vehicle_id, resource="trips")
    builder = TripBuilder(view.spans(vehicle_id, span.from_ms, span.to_ms))
    async for page in position_pages(
        store.telemetry, caller.fleet_id, vehicle_id, from_ms=span.from_ms, to_ms=span.to_ms
    ):
        builder.feed(page)
    trips = builder.finish()
    await audit("read", "trips", vehicle_id, detail=f"{iso_ms(span.from_ms)}/{iso_ms(span.to_ms)}")
    rows: list[dict[str, Any]] = [
        {
            "start": _place(t.start),
            "end": _place(t.end),
            "distance_m": t.distance_m,
            "duration_s": t.duration_s,
            "max_speed_kmh": t.max_speed_kmh,
            "avg_speed_kmh": round(t.avg_speed_kmh, 1),
            "complete": t.complete,
        }
        for t in trips
    ]
    body = {
        "vehicle_id": vehicle_id,
        "from": iso_ms(span.from_ms),
        "to": iso_ms(span.to_ms),
        "privacy": view.state(vehicle_id, span.from_ms, span.to_ms),
        "data": rows,
        "total_distance_m": sum(t.distance_m for t in trips),
    }
    if fmt is ListFormat.JSON:
        return body
    name = attachment(
        "trips",
        vehicle.plate or vehicle.id,
        iso_ms(span.from_ms),
        iso_ms(span.to_ms),
        extension="csv",
    )
    return csv_download(TRIP_CSV_COLUMNS, single(_trip_row(t) for t in rows), name)


@router.get("/mileage", response_model=MileagePublic)
async def get_mileage(
    request: Request,
    vehicle_id: Id,
    caller: Viewer,
    store: StoreDep,
    audit: AuditDep,
    span: Annotated[TimeRange, Depends(time_range(7 * DAY_MS))],
) -> dict[str, Any]:
    """Distance driven per UTC day, from the odometer (default: the last 7 days); without
    the distance driven in private time (docs/privacy.md)."""
    await store.vehicles.get(caller.fleet_id, vehicle_id)
    view = await privacy_view(store, caller, request, audit, vehicle_id, resource="trips")
    counter = MileageCounter(view.spans(vehicle_id, span.from_ms, span.to_ms))
    async for page in position_pages(
        store.telemetry, caller.fleet_id, vehicle_id, from_ms=span.from_ms, to_ms=span.to_ms
    ):
        counter.feed(page)
    days = counter.days(span.from_ms, span.to_ms)
    await audit(
        "read", "mileage", vehicle_id, detail=f"{iso_ms(span.from_ms)}/{iso_ms(span.to_ms)}"
    )
    return {
        "vehicle_id": vehicle_id,
        "from": iso_ms(span.from_ms),
        "to": iso_ms(span.to_ms),
        "privacy": view.state(vehicle_id, span.from_ms, span.to_ms),
        "days": [{"date": day.isoformat(), "distance_m": distance} for day, distance in days],
        "total_distance_m": sum(distance for _, distance in days),
    }
